"""The degradations of `degradations` on a whole batch at once, on the batch's device (an accelerator), with one
generator for the batch: the same distributions (ranges, blur windows and sigmas, rain kernels, exact mask counts)
and the same lossless spatial tasks, with no per-sample Python loop, no host round trip and no data-dependent shape,
so a GPU training step never waits for its data.

The lossless tasks (rotate, flip, identity) are the per-sample functions themselves, which take a batch too. The
random numbers differ from the per-sample path's (which seeds one CPU generator per sample from
`(seed, index, task)`): a batch here is decided by its generator's seed alone. `tests/test_batched_degradations.py`
checks that both paths draw from the same distributions.
"""

import math

import torch

from .degradations import (
    BLUR_WINDOWS,
    DEGRADATIONS,
    MASK_RATIO,
    MASK_SIZE,
    NOISE_SIGMA_RANGE,
    PEPPER_AMOUNT_RANGE,
    RAIN_AMOUNT_RANGE,
    RAIN_ANGLE_RANGE,
    RAIN_INTENSITY,
    TASKS,
    default_streak_length,
    gaussian_kernel_sigma,
)


def per_sample_uniform(images: torch.Tensor, generator: torch.Generator, value_range) -> torch.Tensor:
    """One value per sample, uniform in `value_range`, shaped `(B, 1, 1, 1)` to broadcast over its image."""
    low, high = value_range
    draws = torch.rand(images.shape[0], 1, 1, 1, generator=generator, device=images.device)
    return low + (high - low) * draws


def per_sample_maps(images: torch.Tensor, generator: torch.Generator, count: int = 1) -> list[torch.Tensor]:
    """`count` uniform `(B, 1, H, W)` maps: one value per pixel, shared by its three channels."""
    shape = (images.shape[0], 1, *images.shape[2:])
    return [torch.rand(shape, generator=generator, device=images.device) for _ in range(count)]


def grouped_filter(images: torch.Tensor, kernels: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Filter each sample's channels with its own odd `(k, k)` kernel (`kernels`: `(B, k, k)`), keeping the size."""
    batch, channels, height, width = images.shape
    pad = kernels.shape[-1] // 2
    weight = kernels.repeat_interleave(channels, 0)[:, None]
    padded = torch.nn.functional.pad(images.reshape(1, batch * channels, height, width), (pad,) * 4, mode=padding_mode)
    return torch.nn.functional.conv2d(padded, weight, groups=batch * channels).view_as(images)


def add_gaussian_noise(images, generator, sigma=None, sigma_range=NOISE_SIGMA_RANGE):
    """Gaussian noise, one std per sample (drawn from `sigma_range` when `sigma` is None), clipped to [0, 1]."""
    sigma = per_sample_uniform(images, generator, sigma_range) if sigma is None else sigma
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    return (images + sigma * noise).clamp(0, 1)


def gaussian_blur(images, generator, kernel_size=None, kernel_sizes=BLUR_WINDOWS):
    """Gaussian blur, one window per sample from `kernel_sizes` (OpenCV's sigma for it), reflected borders: every
    window is centred in the largest one, whose reflected border holds the smaller windows' borders too."""
    windows = [kernel_size] if kernel_size else list(kernel_sizes)
    drawn = torch.randint(len(windows), (images.shape[0],), generator=generator, device=images.device)
    chosen = torch.zeros_like(drawn)
    for index, window in enumerate(windows):  # no host-to-device copy of the windows
        chosen = torch.where(drawn == index, window, chosen)
    radius = max(windows) // 2
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    sigma = gaussian_kernel_sigma(chosen)[:, None]
    weights = torch.exp(-(offsets**2) / (2 * sigma**2)) * (offsets.abs() <= chosen[:, None] // 2)
    weights = weights / weights.sum(-1, keepdim=True)
    return grouped_filter(images, weights[:, :, None] * weights[:, None, :], "reflect").clamp(0, 1)


def salt_and_pepper(images, generator, amount=None, amount_range=PEPPER_AMOUNT_RANGE):
    """Set a fraction of the pixels (one fraction per sample; all channels) to 0 or 1 with equal odds."""
    amount = per_sample_uniform(images, generator, amount_range) if amount is None else amount
    corrupted, salt = per_sample_maps(images, generator, 2)
    return torch.where(corrupted < amount, (salt < 0.5).to(images.dtype), images)


def line_kernels(length: int, angles_degrees: torch.Tensor) -> torch.Tensor:
    """`(B, size, size)` normalised kernels of lines through the centre, one per angle from vertical
    (`degradations.line_kernel` for a batch of angles)."""
    size = length if length % 2 else length + 1
    centre = (size - 1) / 2
    steps = torch.linspace(-centre, centre, 4 * size, device=angles_degrees.device)
    theta = torch.deg2rad(angles_degrees)[:, None]
    rows = (centre + steps * torch.cos(theta)).round().long().clamp(0, size - 1)
    cols = (centre + steps * torch.sin(theta)).round().long().clamp(0, size - 1)
    kernels = torch.zeros(angles_degrees.shape[0], size * size, device=angles_degrees.device)
    kernels.scatter_(1, rows * size + cols, 1.0)
    return (kernels / kernels.sum(-1, keepdim=True)).view(-1, size, size)


def add_rain(images, generator, amount=None, amount_range=RAIN_AMOUNT_RANGE, streak_length=None,
             angle_range=RAIN_ANGLE_RANGE, intensity=RAIN_INTENSITY):
    """Rain streaks: per sample, an amount (streaks per 1,000 pixels) and one angle, drops of random brightness."""
    amount = per_sample_uniform(images, generator, amount_range) if amount is None else amount
    length = streak_length or default_streak_length(*images.shape[2:])
    angles = per_sample_uniform(images, generator, angle_range).flatten()
    falls, brightness = per_sample_maps(images, generator, 2)
    seeds = (falls < amount / 1000) * (0.4 + 0.6 * brightness)
    kernels = line_kernels(length, angles)
    streaks = (grouped_filter(seeds, kernels, "constant") * kernels.shape[-1]).clamp(0, 1)
    return (images + intensity * streaks).clamp(0, 1)


def block_mask(images, generator, mask_ratio=MASK_RATIO, mask_size=MASK_SIZE):
    """Zero exactly `round(mask_ratio * blocks)` random blocks of a `mask_size` grid in each sample."""
    batch, _, height, width = images.shape
    rows, cols = math.ceil(height / mask_size), math.ceil(width / mask_size)
    count = round(mask_ratio * rows * cols)
    order = torch.rand(batch, rows * cols, generator=generator, device=images.device).argsort(-1)
    keep = torch.ones(batch, rows * cols, device=images.device).scatter_(1, order[:, :count], 0.0)
    keep = keep.view(batch, 1, rows, cols).repeat_interleave(mask_size, 2).repeat_interleave(mask_size, 3)
    return images * keep[..., :height, :width]


# the lossless tasks are the per-sample functions, which take a batch too
BATCHED_DEGRADATIONS = DEGRADATIONS | {
    "denoise": add_gaussian_noise,
    "deblur": gaussian_blur,
    "pepper": salt_and_pepper,
    "derain": add_rain,
    "mask": block_mask,
}
assert tuple(BATCHED_DEGRADATIONS) == TASKS


def degrade_batch(images: torch.Tensor, task_ids: torch.LongTensor, tasks, generator: torch.Generator,
                  params: dict | None = None) -> torch.Tensor:
    r"""
    Degrade `images` `(B, 3, H, W)` in [0, 1] on their device, sample `i` for task `tasks[task_ids[i]]`.

    Every task of `tasks` is applied to the whole batch and each sample keeps its own task's result: a few cheap
    filters more, but no data-dependent shape and no host round trip. `params` holds fixed parameters per task,
    as `PairedTransform.params`.
    """
    params = params or {}
    degraded = images
    for index, task in enumerate(tasks):
        chosen = (task_ids == index)[:, None, None, None]
        degraded = torch.where(chosen, BATCHED_DEGRADATIONS[task](images, generator, **params.get(task, {})), degraded)
    return degraded


__all__ = ["BATCHED_DEGRADATIONS", "degrade_batch"]
