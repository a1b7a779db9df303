r"""Procedural training images: a seeded dead-leaves generator.

A dead-leaves image is a stack of opaque shapes ("leaves") seen from above: each pixel shows the front-most leaf that
covers it. With leaf radii drawn from a density proportional to r^-3 the images have the scale invariance and the
occlusion edges of natural photos, which makes them a good prior for restoration networks trained on nothing else
(Achddou, Gousseau, Ladjal, "Synthetic images as a regularity prior for image restoration neural networks", SSVM
2021; and VibrantLeaves, arXiv 2504.10201, which adds textures and depth of field). This module follows that recipe,
small and vectorised:

- disks and rotated rectangles, radius density r^-3 between `min_radius` and `max_radius`, centres uniform;
- colours from a palette (e.g. pixels of the training photos) for a fraction of the leaves, uniform RGB for the rest;
- on leaves of radius >= `texture_min_radius`: a 1/f colour-noise texture or a linear colour gradient;
- rendered at `supersampling` x the size and box-downscaled (anti-aliased edges); a Gaussian blur (depth of field) on
  a fraction of the images; quantised to 8 bits.

Image `i` of seed `s` depends on `(s, i)` alone, so any subset of a dataset is generated identically in any order.
Imports nothing of ours.
"""

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class DeadLeavesConfig:
    """The generator's settings; lengths are in pixels of the output image.

    Args:
        image_size: Side of the square output images.
        min_radius, max_radius: Range of the leaf radii (density proportional to r^-3).
        leaves_per_pixel: Leaves drawn per image, front to back, per pixel of the output (enough to cover the image
            at the default radii; pixels no leaf covers show the colour of one more, back-most leaf).
        rectangle_fraction: Share of rectangles among the leaves (the rest are disks).
        palette_fraction: Share of the leaves coloured from the palette (the rest uniform in RGB).
        texture_min_radius: Leaves at least this large get a texture: 1/f noise or a gradient, half and half.
        texture_strength: Largest standard deviation of a leaf's noise texture (in [0, 1] units).
        spectral_exponents: Range of the exponent a of the textures' amplitude spectrum 1/f^a.
        blur_fraction: Share of the images blurred as a whole (depth of field).
        blur_sigmas: Range of that blur's standard deviation.
        supersampling: Rendering scale before the box downscale.
    """

    image_size: int = 32
    min_radius: float = 1.0
    max_radius: float = 32.0
    leaves_per_pixel: float = 0.5
    rectangle_fraction: float = 0.5
    palette_fraction: float = 0.5
    texture_min_radius: float = 3.0
    texture_strength: float = 0.12
    spectral_exponents: tuple[float, float] = (0.8, 1.6)
    blur_fraction: float = 0.3
    blur_sigmas: tuple[float, float] = (0.3, 1.5)
    supersampling: int = 2

    def __post_init__(self):
        if not 0 < self.min_radius <= self.max_radius:
            raise ValueError(f"need 0 < min_radius <= max_radius, got {self.min_radius} and {self.max_radius}")
        if self.image_size < 1 or self.num_leaves < 1 or self.supersampling < 1:
            raise ValueError("image_size, leaves_per_pixel and supersampling must be positive")
        fractions = (self.rectangle_fraction, self.palette_fraction, self.blur_fraction)
        if not all(0 <= fraction <= 1 for fraction in fractions):
            raise ValueError(f"fractions must lie in [0, 1], got {fractions}")

    @property
    def num_leaves(self) -> int:
        """Leaves drawn per image."""
        return round(self.leaves_per_pixel * self.image_size**2)


def power_law_radii(rng: np.random.Generator, count: int, low: float, high: float) -> np.ndarray:
    """`count` radii with density proportional to r^-3 on [low, high] (inverse of its distribution function)."""
    u = rng.random(count)
    return (low**-2 - u * (low**-2 - high**-2)) ** -0.5


def noise_textures(rng: np.random.Generator, count: int, side: int, exponents: tuple[float, float]) -> np.ndarray:
    """`(count, 3, side, side)` colour-noise fields with amplitude spectrum 1/f^a (a drawn in `exponents`), each
    channel of zero mean and unit standard deviation."""
    frequency = np.hypot(*np.meshgrid(np.fft.fftfreq(side), np.fft.rfftfreq(side), indexing="ij"))
    frequency[0, 0] = np.inf  # no constant term
    exponent = rng.uniform(*exponents, size=(count, 1, 1, 1))
    spectrum = np.fft.rfft2(rng.standard_normal((count, 3, side, side))) / frequency**exponent
    fields = np.fft.irfft2(spectrum, s=(side, side))
    return fields / fields.std(axis=(2, 3), keepdims=True)


def front_leaf(inside_pixels: np.ndarray, leaf_of_pixel: np.ndarray, num_pixels: int, background: int) -> np.ndarray:
    """For every pixel, the index of the front-most (lowest-index) leaf covering it, or `background`."""
    owner = np.full(num_pixels, background, dtype=np.int64)
    np.minimum.at(owner, inside_pixels, leaf_of_pixel)
    return owner


def leaf_coverage(centres: np.ndarray, radii: np.ndarray, rectangles: np.ndarray, angles: np.ndarray,
                  aspects: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """`(pixels, leaves)`: the flat index of every canvas pixel inside each leaf, and that leaf's index. Each leaf's
    bounding box is enumerated at once (ragged, with `np.repeat`) and its pixel centres tested against the shape."""
    reach = np.where(rectangles, radii * np.hypot(1, aspects), radii)
    low = np.clip(np.floor(centres - reach[:, None]), 0, side).astype(np.int64)
    high = np.clip(np.ceil(centres + reach[:, None]), 0, side).astype(np.int64)
    widths, heights = high[:, 0] - low[:, 0], high[:, 1] - low[:, 1]
    counts = widths * heights
    leaves = np.repeat(np.arange(len(radii)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    x = low[leaves, 0] + offset % np.maximum(widths[leaves], 1)
    y = low[leaves, 1] + offset // np.maximum(widths[leaves], 1)
    dx, dy = x + 0.5 - centres[leaves, 0], y + 0.5 - centres[leaves, 1]
    cos, sin = np.cos(angles[leaves]), np.sin(angles[leaves])
    along, across = np.abs(dx * cos + dy * sin), np.abs(dy * cos - dx * sin)
    r = radii[leaves]
    inside = np.where(rectangles[leaves], (along <= r) & (across <= r * aspects[leaves]), dx * dx + dy * dy <= r * r)
    return (y * side + x)[inside], leaves[inside]


def leaf_colours(rng: np.random.Generator, count: int, palette: np.ndarray | None, fraction: float) -> np.ndarray:
    """`(count, 3)` colours in [0, 1]: from `palette` (`(N, 3)` in [0, 1]) with probability `fraction`, else
    uniform."""
    colours = rng.random((count, 3))
    if palette is not None and len(palette):
        from_palette = rng.random(count) < fraction
        colours[from_palette] = palette[rng.integers(0, len(palette), int(from_palette.sum()))]
    return colours


def dead_leaves_image(config: DeadLeavesConfig, seed: int, index: int, palette: np.ndarray | None = None) -> np.ndarray:
    """Image `index` of `seed`: `(image_size, image_size, 3)` uint8."""
    rng = np.random.default_rng([seed, index])
    scale, count = config.supersampling, config.num_leaves
    side = config.image_size * scale
    radii = power_law_radii(rng, count + 1, config.min_radius * scale, config.max_radius * scale)
    centres = rng.uniform(0, side, size=(count + 1, 2))
    rectangles = rng.random(count + 1) < config.rectangle_fraction
    angles, aspects = rng.uniform(0, np.pi, count + 1), rng.uniform(0.3, 1.0, count + 1)
    colours = leaf_colours(rng, count + 1, palette, config.palette_fraction)
    pixels, leaves = leaf_coverage(centres[:count], radii[:count], rectangles[:count], angles[:count],
                                   aspects[:count], side)
    owner = front_leaf(pixels, leaves, side * side, background=count)
    canvas = colours[owner]  # (side * side, 3)
    textured = radii[owner] >= config.texture_min_radius * scale
    noisy = textured & (owner % 2 == 0)  # the leaves' draws are independent of their index: half and half
    textures = noise_textures(rng, 4, side, config.spectral_exponents).reshape(4, 3, -1)
    strength = rng.uniform(0, config.texture_strength, count + 1)
    texture_of = rng.integers(0, 4, count + 1)
    where = np.flatnonzero(noisy)
    canvas[where] += strength[owner[where], None] * textures[texture_of[owner[where]], :, where]
    where = np.flatnonzero(textured & ~noisy)
    far_colours = leaf_colours(rng, count + 1, palette, config.palette_fraction)
    y, x = np.divmod(where, side)
    k = owner[where]
    position = ((x + 0.5 - centres[k, 0]) * np.cos(angles[k]) + (y + 0.5 - centres[k, 1]) * np.sin(angles[k]))
    mix = np.clip(position / (2 * radii[k]) + 0.5, 0, 1)[:, None]
    canvas[where] = colours[k] * (1 - mix) + far_colours[k] * mix
    image = canvas.reshape(config.image_size, scale, config.image_size, scale, 3).mean(axis=(1, 3))
    if rng.random() < config.blur_fraction:
        image = gaussian_filter(image, sigma=(*[rng.uniform(*config.blur_sigmas)] * 2, 0), mode="reflect")
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def dead_leaves_dataset(num_images: int, config: DeadLeavesConfig = DeadLeavesConfig(), seed: int = 0,
                        palette: np.ndarray | None = None):
    r"""
    `num_images` dead-leaves images as a `datasets.Dataset` (columns `image`, PIL RGB, and `source`), made with
    `datasets.Dataset.from_generator`, so the `datasets` cache keeps them for later calls with the same arguments.

    Args:
        num_images (`int`): How many images (image `i` depends on `(seed, i)` alone).
        config (`DeadLeavesConfig`): The generator's settings.
        seed (`int`): The seed of the whole set.
        palette (`np.ndarray` of shape `(N, 3)` in [0, 1], *optional*): Colours to draw leaves from.
    """
    import datasets

    if num_images < 1:
        raise ValueError(f"num_images must be positive, got {num_images}")
    features = datasets.Features({"image": datasets.Image(), "source": datasets.Value("string")})
    return datasets.Dataset.from_generator(
        generate_dead_leaves, features=features,
        gen_kwargs={"config": config, "seed": seed, "count": num_images, "palette": palette},
    )


def generate_dead_leaves(config: DeadLeavesConfig, seed: int, count: int, palette: np.ndarray | None):
    """The rows of `dead_leaves_dataset` (its generator)."""
    for index in range(count):
        yield {"image": Image.fromarray(dead_leaves_image(config, seed, index, palette)),
               "source": f"dead-leaves seed {seed} #{index}"}


__all__ = ["DeadLeavesConfig", "dead_leaves_dataset", "dead_leaves_image"]
