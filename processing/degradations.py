"""Degradations of the LM4LV tasks (the paper's settings where it gives them; the README's "Tasks and
degradations" states every choice), on batch tensors `(B, 3, H, W)` in [0, 1] and on PIL images.

Determinism: the degraded version of sample `i` depends only on `(seed, i, task)`: every sample draws its random
parameters and noise from its own generator, seeded from that triple, so batch composition, worker count and order
do not matter. Within a sample everything is vectorised torch code.

Choices the paper leaves open (documented here and in the README):

- denoise: additive Gaussian noise, sigma ~ U[0, 50/255] on [0, 1] images, independent per pixel and channel, then
  clipped. `sigma=` fixes it (e.g. 25/255 for fixed-sigma evaluation).
- deblur: isotropic Gaussian blur, window size ~ uniform {1, 3, 5, 7} (1 = no blur). The paper gives no sigma; we use
  the sigma OpenCV derives from the window size, `0.3 * ((k - 1) / 2 - 1) + 0.8` (k=3: 0.8, 5: 1.1, 7: 1.4).
  Borders are reflected.
- pepper: salt-and-pepper noise, fraction of corrupted pixels ~ U[0, 0.1]; a corrupted pixel is set to black or
  white (equal odds) in all three channels.
- derain: synthetic rain streaks, amount ~ U[0, 20], read as streaks per 1,000 pixels (a 224x224 image at amount 20
  gets about 1,000 streaks). Streak seeds fall at random positions and are smeared by a line kernel of length
  `streak_length` (default 10% of the image side, at least 3 pixels) at a random angle within +-30 degrees of
  vertical (one angle per image, as in a photo of rain); each drop has a brightness ~ U[0.4, 1] (near and far
  drops), scaled by `intensity` (0.8), added and clipped.
- mask: the image is tiled into `mask_size` x `mask_size` (4x4) blocks and exactly `round(mask_ratio * blocks)`
  (10%) of them, chosen at random, are set to zero.
- rotate: rotation by 90 degrees counter-clockwise (`angle=` 90, 180 or 270); lossless. Square images only for
  tensors, so a batch keeps its shape.
- flip: horizontal (left-right) flip; lossless.
- identity: the image itself ("repeat the image").
"""

import hashlib
import math

import numpy as np
import torch
from PIL import Image

TASKS = ("identity", "denoise", "deblur", "pepper", "derain", "mask", "rotate", "flip")
SPATIAL_TASKS = ("rotate", "flip")

# The default ranges and settings above, shared by the per-sample functions here and the batched ones
# (`batched_degradations`)
NOISE_SIGMA_RANGE = (0.0, 50 / 255)
BLUR_WINDOWS = (1, 3, 5, 7)
PEPPER_AMOUNT_RANGE = (0.0, 0.1)
RAIN_AMOUNT_RANGE = (0.0, 20.0)
RAIN_ANGLE_RANGE = (-30.0, 30.0)
RAIN_INTENSITY = 0.8
MASK_RATIO, MASK_SIZE = 0.1, 4


def sample_seed(seed: int, index: int, task: str) -> int:
    """A 63-bit seed that depends only on `(seed, index, task)`."""
    digest = hashlib.sha256(f"{seed}:{index}:{task}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_seed(seed: int, epoch: int) -> int:
    """The degradation seed of training epoch `epoch`: `seed` itself in epoch 0 (so a fixed evaluation set and the
    first epoch agree with `degrade(..., seed=seed)`), a fresh seed derived from `(seed, epoch)` in every later one."""
    return seed if epoch == 0 else sample_seed(seed, epoch, "epoch")


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _per_sample(value, images: torch.Tensor) -> torch.Tensor:
    """A parameter as a float64 `(B, 1, 1, 1)` tensor: one value per sample (a number is every sample's). The
    transforms compute with parameters in float64 and round to float32 where they meet the pixels."""
    values = torch.as_tensor(value, dtype=torch.float64, device=images.device)
    return values.reshape(-1, 1, 1, 1).expand(images.shape[0], 1, 1, 1)


# ---------------------------------------------------------------- the transforms, given their drawn parameters
# One implementation of each degradation, on a batch `(B, 3, H, W)` with per-sample parameters: the per-sample
# functions below and `batched_degradations` differ only in how they draw the parameters and the random maps.


def noise_transform(images, sigma, noise):
    """`images + sigma * noise`, clipped to [0, 1] (`sigma` per sample, `noise` of the images' shape)."""
    return (images + _per_sample(sigma, images).float() * noise).clamp(0, 1)


def gaussian_kernel_sigma(kernel_size):
    """The sigma OpenCV's `getGaussianKernel` uses for a window size when none is given (a number, or a tensor of
    window sizes)."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def grouped_filter(images: torch.Tensor, kernels: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Filter each sample's channels with its own odd `(k, k)` kernel (`kernels`: `(B, k, k)`), keeping the size:
    borders reflected (`"reflect"`) or zero (`"constant"`)."""
    batch, channels, height, width = images.shape
    pad = kernels.shape[-1] // 2
    weight = kernels.repeat_interleave(channels, 0)[:, None]
    flat = images.reshape(1, batch * channels, height, width)
    if padding_mode == "constant":
        return torch.nn.functional.conv2d(flat, weight, padding=pad, groups=batch * channels).view_as(images)
    padded = torch.nn.functional.pad(flat, (pad,) * 4, mode=padding_mode)
    return torch.nn.functional.conv2d(padded, weight, groups=batch * channels).view_as(images)


def blur_transform(images, kernel_size, windows: tuple[int, ...], sigma=None):
    """Gaussian blur, reflected borders: sample `i` with window `kernel_size[i]` (odd, one of `windows`, which the
    host knows, so nothing here reads the device) and std `sigma[i]` (default: `gaussian_kernel_sigma` of the
    window). Each window is one grouped convolution of the whole batch; every sample keeps its own window's result."""
    kernel_size = torch.as_tensor(kernel_size, device=images.device).reshape(-1).expand(images.shape[0])
    sigma = gaussian_kernel_sigma(kernel_size.double()) if sigma is None else _per_sample(sigma, images).flatten()
    blurred = images.clone()  # window 1: the image itself
    for window in sorted(set(windows) - {1}):
        offsets = torch.arange(window, dtype=torch.float32, device=images.device) - (window - 1) / 2
        weights = torch.exp(-(offsets**2) / (2 * sigma[:, None] ** 2).float())
        weights = weights / weights.sum(-1, keepdim=True)
        filtered = grouped_filter(images, weights[:, :, None] * weights[:, None, :], "reflect").clamp(0, 1)
        blurred = torch.where((kernel_size == window)[:, None, None, None], filtered, blurred)
    return blurred


def pepper_transform(images, amount, corrupted, salt):
    """Pixels whose `corrupted` draw (`(B, 1, H, W)`, uniform) is below `amount` become 0 or 1 in all channels, by
    their `salt` draw."""
    value = (salt < 0.5).to(images.dtype)
    return torch.where(corrupted < _per_sample(amount, images).float(), value, images)


def line_kernels(length: int, angles_degrees) -> torch.Tensor:
    """`(B, size, size)` normalised kernels of lines through the centre, one per angle from vertical."""
    size = length if length % 2 else length + 1
    centre = (size - 1) / 2
    theta = torch.deg2rad(torch.as_tensor(angles_degrees, dtype=torch.float64).reshape(-1, 1))
    steps = torch.linspace(-centre, centre, 4 * size, device=theta.device)
    rows = (centre + steps * torch.cos(theta).float()).round().long().clamp(0, size - 1)
    cols = (centre + steps * torch.sin(theta).float()).round().long().clamp(0, size - 1)
    kernels = torch.zeros(theta.shape[0], size * size, device=theta.device)
    kernels.scatter_(1, rows * size + cols, 1.0)
    return (kernels / kernels.sum(-1, keepdim=True)).view(-1, size, size)


def rain_transform(images, amount, angle, falls, brightness, streak_length=None, intensity=RAIN_INTENSITY):
    """Rain streaks: a drop wherever the `falls` draw (`(B, 1, H, W)`, uniform) is below `amount / 1000`, of
    brightness `0.4 + 0.6 * brightness`, smeared by a line kernel of `streak_length` at `angle` degrees from vertical
    (per sample), scaled by `intensity`, added and clipped."""
    length = streak_length or default_streak_length(*images.shape[2:])
    seeds = (falls < (_per_sample(amount, images) / 1000).float()) * (0.4 + 0.6 * brightness)
    kernels = line_kernels(length, _per_sample(angle, images).flatten().to(images.device))
    streaks = (grouped_filter(seeds, kernels, "constant") * kernels.shape[-1]).clamp(0, 1)
    return (images + intensity * streaks).clamp(0, 1)


def mask_transform(images, kept_blocks, mask_size=MASK_SIZE):
    """Zero the blocks of a `mask_size` grid where `kept_blocks` (`(B, rows * cols)`, 0 or 1) is 0."""
    height, width = images.shape[2:]
    rows, cols = math.ceil(height / mask_size), math.ceil(width / mask_size)
    keep = kept_blocks.view(-1, 1, rows, cols).repeat_interleave(mask_size, 2).repeat_interleave(mask_size, 3)
    return images * keep[..., :height, :width]


def block_grid(image, mask_size: int) -> tuple[int, int]:
    """`(rows, cols)` of the `mask_size` block grid over an image (partial blocks at the edges count)."""
    height, width = image.shape[-2:]
    return math.ceil(height / mask_size), math.ceil(width / mask_size)


# ---------------------------------------------------------------- per sample: each draws from its own generator


def add_gaussian_noise(image, generator, sigma=None, sigma_range=NOISE_SIGMA_RANGE):
    """Gaussian noise with std `sigma` (drawn from `sigma_range` when None), clipped to [0, 1]."""
    sigma = _uniform(generator, *sigma_range) if sigma is None else sigma
    return noise_transform(image[None], sigma, torch.randn(image.shape, generator=generator)[None])[0]


def gaussian_blur(image, generator, kernel_size=None, kernel_sizes=BLUR_WINDOWS, sigma=None):
    """Gaussian blur with window `kernel_size` (drawn from `kernel_sizes` when None) and std `sigma` (OpenCV's for
    the window when None), reflected borders."""
    if kernel_size is None:
        kernel_size = kernel_sizes[torch.randint(len(kernel_sizes), (), generator=generator).item()]
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"Blur window size must be odd and positive, got {kernel_size}")
    return blur_transform(image[None], kernel_size, (kernel_size,), sigma)[0]


def salt_and_pepper(image, generator, amount=None, amount_range=PEPPER_AMOUNT_RANGE):
    """Set a fraction `amount` of the pixels (all channels) to 0 or 1 with equal odds."""
    amount = _uniform(generator, *amount_range) if amount is None else amount
    corrupted, salt = (torch.rand((1, 1, *image.shape[1:]), generator=generator) for _ in range(2))
    return pepper_transform(image[None], amount, corrupted, salt)[0]


def default_streak_length(height: int, width: int) -> int:
    """Rain streaks are 10% of the image side long, at least 3 pixels."""
    return max(3, round(0.1 * min(height, width)))


def add_rain(image, generator, amount=None, amount_range=RAIN_AMOUNT_RANGE, streak_length=None,
             angle_range=RAIN_ANGLE_RANGE, intensity=RAIN_INTENSITY):
    """Rain streaks: `amount` streaks per 1,000 pixels, smeared by a line kernel at one random angle per image."""
    amount = _uniform(generator, *amount_range) if amount is None else amount
    angle = _uniform(generator, *angle_range)
    falls, brightness = (torch.rand((1, 1, *image.shape[1:]), generator=generator) for _ in range(2))
    return rain_transform(image[None], amount, angle, falls, brightness, streak_length, intensity)[0]


def block_mask(image, generator, mask_ratio=MASK_RATIO, mask_size=MASK_SIZE):
    """Zero exactly `round(mask_ratio * blocks)` random blocks of a `mask_size` grid."""
    rows, cols = block_grid(image, mask_size)
    kept_blocks = torch.ones(1, rows * cols)
    kept_blocks[0, torch.randperm(rows * cols, generator=generator)[: round(mask_ratio * rows * cols)]] = 0
    return mask_transform(image[None], kept_blocks, mask_size)[0]


def rotate(image, generator=None, angle=90):
    """Counter-clockwise rotation by a multiple of 90 degrees (lossless), of one image or of a batch."""
    if angle % 90:
        raise ValueError(f"rotate supports multiples of 90 degrees, got {angle}")
    return torch.rot90(image, k=(angle // 90) % 4, dims=(-2, -1))


def horizontal_flip(image, generator=None):
    """Left-right flip (lossless), of one image or of a batch."""
    return torch.flip(image, dims=(-1,))


def identity(image, generator=None):
    """The image itself (a copy), or the batch itself."""
    return image.clone()


DEGRADATIONS = {
    "identity": identity,
    "denoise": add_gaussian_noise,
    "deblur": gaussian_blur,
    "pepper": salt_and_pepper,
    "derain": add_rain,
    "mask": block_mask,
    "rotate": rotate,
    "flip": horizontal_flip,
}

# Fixed strengths for pictures and fixed-strength evaluation (the paper's ranges: the "high" level is their maximum)
STRENGTH_LEVELS = {
    "identity": {"low": {}, "mid": {}, "high": {}},
    "denoise": {"low": {"sigma": 10 / 255}, "mid": {"sigma": 25 / 255}, "high": {"sigma": 50 / 255}},
    "deblur": {"low": {"kernel_size": 3}, "mid": {"kernel_size": 5}, "high": {"kernel_size": 7}},
    "pepper": {"low": {"amount": 0.02}, "mid": {"amount": 0.05}, "high": {"amount": 0.1}},
    "derain": {"low": {"amount": 5.0}, "mid": {"amount": 10.0}, "high": {"amount": 20.0}},
    "mask": {"low": {"mask_ratio": 0.05}, "mid": {"mask_ratio": 0.1}, "high": {"mask_ratio": 0.2}},
    "rotate": {"low": {"angle": 90}, "mid": {"angle": 180}, "high": {"angle": 270}},
    "flip": {"low": {}, "mid": {}, "high": {}},
}


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """`(3, H, W)` float tensor in [0, 1] from a PIL RGB image."""
    if image.mode != "RGB":
        raise ValueError(f"Degradations expect RGB images, got mode {image.mode!r}")
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """PIL RGB image from a `(3, H, W)` tensor in [0, 1] (clamped, rounded)."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


# (task, parameter) -> its valid range [low, high] (None: unbounded); larger ones are also bounded by the image size
PARAMETER_RANGES = {
    ("denoise", "sigma"): (0.0, 1.0),
    ("deblur", "kernel_size"): (1, None),
    ("deblur", "sigma"): (1e-6, None),
    ("pepper", "amount"): (0.0, 1.0),
    ("derain", "amount"): (0.0, 1000.0),
    ("mask", "mask_ratio"): (0.0, 1.0),
    ("mask", "mask_size"): (1, None),
}


def check_parameters(task: str, params: dict, image_side: int):
    """Raise a `ValueError` naming the task and parameter when a degradation parameter is out of its range."""
    for name, value in params.items():
        low, high = PARAMETER_RANGES.get((task, name), (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"{task}: {name} must be {bounds}, got {value}")
    if task == "deblur" and params.get("kernel_size", 1) // 2 >= image_side:
        raise ValueError(f"deblur: kernel_size {params['kernel_size']} is too large for images of side {image_side} "
                         f"(at most {2 * image_side - 1})")
    if task == "mask" and params.get("mask_size", 1) > image_side:
        raise ValueError(f"mask: mask_size {params['mask_size']} is larger than the image side {image_side}")


def degrade(images, task: str, indices=None, seed: int = 0, **params):
    r"""
    Degrade images for `task`.

    Args:
        images: A float tensor `(B, 3, H, W)` in [0, 1], one `(3, H, W)` image, a PIL RGB image or a list of them.
        task (`str`): One of `TASKS`.
        indices (`list[int]`, *optional*): Dataset index of each sample (defaults to 0..B-1); with `seed` and
            `task` it alone decides the randomness of that sample.
        seed (`int`): Global seed.
        params: Task parameters (see each function: `sigma`, `kernel_size`, `amount`, `mask_ratio`, `angle`, ...);
            by default each is drawn from the paper's range.

    Returns:
        The degraded images, of the same kind as `images`.
    """
    if task not in DEGRADATIONS:
        raise ValueError(f"Unknown task {task!r}; choose from {list(TASKS)}")
    function = DEGRADATIONS[task]
    if isinstance(images, Image.Image):
        return tensor_to_pil(degrade(pil_to_tensor(images)[None], task, indices, seed, **params)[0])
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("degrade got an empty list of images: pass at least one image")
        degraded = degrade(torch.stack([pil_to_tensor(image) for image in images]), task, indices, seed, **params)
        return [tensor_to_pil(image) for image in degraded]
    if images.dim() == 3:
        return degrade(images[None], task, indices, seed, **params)[0]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"Expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"degrade got no pixels (images of shape {tuple(images.shape)}): pass at least one image")
    if not images.is_floating_point():
        raise ValueError(f"degrade takes float images in [0, 1], got {images.dtype} (for uint8, divide by 255 first)")
    if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise ValueError("degrade takes float images in [0, 1] (finite); got values outside that range")
    check_parameters(task, params, min(images.shape[2:]))
    if task == "rotate" and images.shape[2] != images.shape[3] and params.get("angle", 90) % 180:
        raise ValueError(f"rotate by 90/270 degrees needs square images, got {tuple(images.shape[2:])}")
    indices = range(images.shape[0]) if indices is None else indices
    if len(indices) != images.shape[0]:
        raise ValueError(f"Got {len(indices)} indices for {images.shape[0]} images")
    images = images.float().cpu()
    outputs = []
    for image, index in zip(images, indices):
        generator = torch.Generator().manual_seed(sample_seed(seed, int(index), task))
        outputs.append(function(image, generator, **params))
    return torch.stack(outputs)


__all__ = [
    "TASKS", "SPATIAL_TASKS", "DEGRADATIONS", "degrade", "sample_seed", "epoch_seed", "STRENGTH_LEVELS",
    "pil_to_tensor", "tensor_to_pil",
]
