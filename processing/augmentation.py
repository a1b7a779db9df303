"""Augmented crops of photos: each crop is cut at a random scale (the photo downscaled by a factor drawn
log-uniformly in a range, then a random window) and turned by one of the 8 flips and 90-degree rotations (the
dihedral group of the square). Crop `i` of seed `s` depends on `(s, i)` alone. Imports nothing of ours."""

import math

import numpy as np
from PIL import Image

# the 8 symmetries of a square: k % 4 quarter turns, mirrored first when k >= 4
DIHEDRAL_TRANSFORMS = 8


def dihedral(image: Image.Image, k: int) -> Image.Image:
    """Symmetry `k` (0..7) of the square's dihedral group applied to `image`: a left-right mirror when `k >= 4`,
    then `k % 4` quarter turns counterclockwise. `k = 0` returns the image itself."""
    if not 0 <= k < DIHEDRAL_TRANSFORMS:
        raise ValueError(f"k must be in [0, {DIHEDRAL_TRANSFORMS}), got {k}")
    if k >= 4:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    turns = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
    return image.transpose(turns[k % 4 - 1]) if k % 4 else image


def random_view(image: Image.Image, size: int, rng: np.random.Generator,
                downscale_range: tuple[float, float]) -> Image.Image:
    """A `size` x `size` crop of `image` downscaled by a factor drawn log-uniformly in `downscale_range` (at most the
    factor that still fits a whole crop), at a uniform random position, resized with an antialiased bicubic filter."""
    low, high = downscale_range
    high = min(high, image.width / size, image.height / size)
    if high < low:
        raise ValueError(f"a {image.width}x{image.height} image cannot give a {size}x{size} crop at downscale {low}")
    factor = math.exp(rng.uniform(math.log(low), math.log(high)))
    window = size * factor
    left, top = rng.uniform(0, image.width - window), rng.uniform(0, image.height - window)
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + window, top + window))


def augmented_crop(images: list[Image.Image], size: int, seed: int, index: int,
                   downscale_range: tuple[float, float] = (1.0, 4.0), min_std: float = 0.02,
                   attempts: int = 20) -> tuple[Image.Image, int]:
    """Crop `index` of `seed`: `(crop, source image index)`. The photo is drawn uniformly from `images`, the crop by
    `random_view` and then one of the 8 dihedral symmetries. Flat crops (pixel standard deviation below `min_std`)
    are drawn again, up to `attempts` times."""
    rng = np.random.default_rng([seed, index])
    for _ in range(attempts):
        source = int(rng.integers(len(images)))
        crop = dihedral(random_view(images[source], size, rng, downscale_range), int(rng.integers(8)))
        if np.asarray(crop, dtype=np.float32).std() / 255 >= min_std:
            break
    return crop, source


__all__ = ["DIHEDRAL_TRANSFORMS", "augmented_crop", "dihedral", "random_view"]
