"""Property-based tests (hypothesis) for degradations and metrics, and a long-run memory check of generate()."""

import math
import resource

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lm4lv.metrics import psnr, ssim
from lm4lv.processing.degradations import TASKS, degrade

from conftest import build_tiny, random_images

sizes = st.sampled_from([12, 16, 24, 32])
seeds = st.integers(min_value=0, max_value=2**31 - 1)


@settings(max_examples=40, deadline=None)
@given(task=st.sampled_from(TASKS), size=sizes, seed=seeds, batch=st.integers(1, 3))
def test_degradation_shape_range_and_determinism(task, size, seed, batch):
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed % 1000))
    out = degrade(images, task, seed=seed)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, degrade(images, task, seed=seed))


@settings(max_examples=25, deadline=None)
@given(size=sizes, seed=seeds, task_params=st.sampled_from([
    ("denoise", {"sigma": 0.0}), ("deblur", {"kernel_size": 1}), ("pepper", {"amount": 0.0}),
    ("derain", {"amount": 0.0}), ("mask", {"mask_ratio": 0.0}), ("identity", {})]))
def test_strength_zero_is_identity(size, seed, task_params):
    task, params = task_params
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed % 1000))
    assert torch.equal(degrade(images, task, seed=seed, **params), images)


uint8_images = st.tuples(st.integers(13, 40), st.integers(13, 40), seeds).map(
    lambda hws: np.random.default_rng(hws[2]).integers(0, 256, (hws[0], hws[1], 3), dtype=np.uint8)
)


@settings(max_examples=40, deadline=None)
@given(image=uint8_images, noise_seed=seeds, crop=st.integers(0, 1))
def test_metric_properties(image, noise_seed, crop):
    noise = np.random.default_rng(noise_seed).integers(-30, 31, image.shape)
    other = np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)
    assert psnr(image, other, crop_border=crop) == psnr(other, image, crop_border=crop)  # symmetric
    assert psnr(image, image, crop_border=crop) == math.inf  # maximal for identical images
    if not np.array_equal(image, other):
        assert psnr(image, other, crop_border=crop) < math.inf
    value = ssim(image, other, crop_border=crop)
    assert -1.0 <= value <= 1.0 + 1e-12
    assert abs(ssim(image, image, crop_border=crop) - 1.0) < 1e-9


def test_many_generate_calls_do_not_grow_memory():
    """1,000 generate() calls on the tiny model: resident memory stays flat after warm-up."""
    model, processor = build_tiny()
    batch = processor(images=random_images(1))

    def rss_mib():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize() / 2**20

    for _ in range(50):
        model.generate(**batch)
    start = rss_mib()
    for _ in range(1000):
        model.generate(**batch)
    growth = rss_mib() - start
    assert growth < 20, f"resident memory grew by {growth:.1f} MiB over 1,000 generate() calls"
