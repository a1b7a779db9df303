"""The degradations of `degradations` on a whole batch at once, on the batch's device (an accelerator), with one
generator for the batch: the same distributions (ranges, blur windows and sigmas, rain kernels, exact mask counts)
and the same lossless spatial tasks, with no per-sample Python loop, no host round trip and no data-dependent shape,
so a GPU training step never waits for its data.

Each lossy degradation is `degradations`' own transform (`noise_transform`, `blur_transform`, ...) given its drawn
parameters: the two paths differ only in how they draw them. The lossless tasks (rotate, flip, identity) are the
per-sample functions themselves, which take a batch too. The random numbers differ from the per-sample path's (which
seeds one CPU generator per sample from `(seed, index, task)`): a batch here is decided by its generator's seed
alone. `tests/test_batched_degradations.py` checks that both paths draw from the same distributions and give equal
images for equal drawn parameters.
"""

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
    block_grid,
    blur_transform,
    check_parameters,
    mask_transform,
    noise_transform,
    pepper_transform,
    rain_transform,
)


def per_sample_uniform(images: torch.Tensor, generator: torch.Generator, value_range) -> torch.Tensor:
    """One value per sample, uniform in `value_range` (computed in float64, as the per-sample path does), shaped
    `(B, 1, 1, 1)` to broadcast over its image."""
    low, high = value_range
    draws = torch.rand(images.shape[0], 1, 1, 1, generator=generator, device=images.device).double()
    return low + (high - low) * draws


def per_sample_maps(images: torch.Tensor, generator: torch.Generator, count: int = 1) -> list[torch.Tensor]:
    """`count` uniform `(B, 1, H, W)` maps: one value per pixel, shared by its three channels."""
    shape = (images.shape[0], 1, *images.shape[2:])
    return [torch.rand(shape, generator=generator, device=images.device) for _ in range(count)]


def add_gaussian_noise(images, generator, sigma=None, sigma_range=NOISE_SIGMA_RANGE):
    """Gaussian noise, one std per sample (drawn from `sigma_range` when `sigma` is None), clipped to [0, 1]."""
    sigma = per_sample_uniform(images, generator, sigma_range) if sigma is None else sigma
    return noise_transform(images, sigma, torch.randn(images.shape, generator=generator, device=images.device))


def gaussian_blur(images, generator, kernel_size=None, kernel_sizes=BLUR_WINDOWS, sigma=None):
    """Gaussian blur, one window per sample from `kernel_sizes` (or `kernel_size` for all) and std `sigma` (OpenCV's
    for the window when None), reflected borders."""
    windows = (kernel_size,) if kernel_size else tuple(kernel_sizes)
    drawn = torch.randint(len(windows), (images.shape[0],), generator=generator, device=images.device)
    chosen = torch.zeros_like(drawn)
    for index, window in enumerate(windows):  # no host-to-device copy of the windows
        chosen = torch.where(drawn == index, window, chosen)
    return blur_transform(images, chosen, windows, sigma)


def salt_and_pepper(images, generator, amount=None, amount_range=PEPPER_AMOUNT_RANGE):
    """Set a fraction of the pixels (one fraction per sample; all channels) to 0 or 1 with equal odds."""
    amount = per_sample_uniform(images, generator, amount_range) if amount is None else amount
    return pepper_transform(images, amount, *per_sample_maps(images, generator, 2))


def add_rain(images, generator, amount=None, amount_range=RAIN_AMOUNT_RANGE, streak_length=None,
             angle_range=RAIN_ANGLE_RANGE, intensity=RAIN_INTENSITY):
    """Rain streaks: per sample, an amount (streaks per 1,000 pixels) and one angle, drops of random brightness."""
    amount = per_sample_uniform(images, generator, amount_range) if amount is None else amount
    angle = per_sample_uniform(images, generator, angle_range)
    falls, brightness = per_sample_maps(images, generator, 2)
    return rain_transform(images, amount, angle, falls, brightness, streak_length, intensity)


def block_mask(images, generator, mask_ratio=MASK_RATIO, mask_size=MASK_SIZE):
    """Zero exactly `round(mask_ratio * blocks)` random blocks of a `mask_size` grid in each sample."""
    rows, cols = block_grid(images, mask_size)
    order = torch.rand(images.shape[0], rows * cols, generator=generator, device=images.device).argsort(-1)
    kept_blocks = torch.ones(images.shape[0], rows * cols, device=images.device)
    kept_blocks.scatter_(1, order[:, : round(mask_ratio * rows * cols)], 0.0)
    return mask_transform(images, kept_blocks, mask_size)


# the lossless tasks are the per-sample functions, which take a batch too; every task in `degradations.TASKS` order
BATCHED_DEGRADATIONS = DEGRADATIONS | {
    "denoise": add_gaussian_noise,
    "deblur": gaussian_blur,
    "pepper": salt_and_pepper,
    "derain": add_rain,
    "mask": block_mask,
}


def degrade_batch(images: torch.Tensor, task_ids: torch.LongTensor, tasks, generator: torch.Generator,
                  params: dict | None = None) -> torch.Tensor:
    r"""
    Degrade `images` `(B, 3, H, W)` in [0, 1] on their device, sample `i` for task `tasks[task_ids[i]]`.

    Every task of `tasks` is applied to the whole batch and each sample keeps its own task's result: a few cheap
    filters more, but no data-dependent shape and no host round trip. `params` holds fixed parameters per task,
    as `PairedTransform.params`, checked as the per-sample path checks them (`check_parameters`).
    """
    params = params or {}
    for task in tasks:
        check_parameters(task, params.get(task, {}), min(images.shape[2:]))
    degraded = images
    for index, task in enumerate(tasks):
        chosen = (task_ids == index)[:, None, None, None]
        degraded = torch.where(chosen, BATCHED_DEGRADATIONS[task](images, generator, **params.get(task, {})), degraded)
    return degraded


__all__ = ["BATCHED_DEGRADATIONS", "degrade_batch"]
