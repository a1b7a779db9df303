"""Property-based tests (hypothesis) for degradations and metrics; random shapes, dtypes and values into the processor,
`degrade`, the metrics and `generate()` (a result or an error naming the parameter, never one from inside torch); a
long-run memory check of generate()."""

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
    """500 generate() calls on the tiny model: resident memory stays flat after warm-up (under 20 KiB a call)."""
    model, processor = build_tiny()
    batch = processor(images=random_images(1))

    def rss_mib():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize() / 2**20

    for _ in range(50):
        model.generate(**batch)
    start = rss_mib()
    for _ in range(500):
        model.generate(**batch)
    growth = rss_mib() - start
    assert growth < 10, f"resident memory grew by {growth:.1f} MiB over 500 generate() calls"


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8, torch.int64, torch.bool]
# what a named error must mention, per entry point: the parameter, or what it was expected to be
NAMED = {"processor": ("image", "pixel"), "degrade": ("image", "degrade"), "metrics": ("image", "shape", "crop_border"),
         "generate": ("pixel_values", "image", "input_ids", "max_new_tokens")}


@st.composite
def tensors(draw):
    """A tensor of any small shape, dtype and value range, finite or not."""
    shape = draw(st.lists(st.integers(0, 40), min_size=1, max_size=5))
    if draw(st.booleans()):  # often image-like, so the checks past the shape are reached too
        shape = [draw(st.integers(0, 3)), draw(st.sampled_from([1, 3, 4])), draw(st.sampled_from([0, 4, 32, 33])),
                 draw(st.sampled_from([0, 4, 32, 33]))]
    dtype = draw(st.sampled_from(DTYPES))
    scale = draw(st.sampled_from([1.0, 255.0, -1.0, 1e30]))
    values = torch.rand(shape, generator=torch.Generator().manual_seed(draw(seeds))) * scale
    if draw(st.booleans()) and values.numel():
        values.view(-1)[0] = draw(st.sampled_from([math.nan, math.inf, -0.5, 2.0]))
    return values.to(dtype)


def valid_or_named(entry: str, call):
    """`call()`'s result, or None when it raised a ValueError/TypeError (ImageLoadError is one) naming what is
    wrong; anything else (IndexError, RuntimeError from inside torch) fails the test."""
    try:
        return call()
    except (ValueError, TypeError) as error:
        message = str(error).lower()
        assert any(word in message for word in NAMED[entry]), f"{entry}: {type(error).__name__}: {error}"
        return None


_tiny = {}


def tiny_model():
    if not _tiny:
        _tiny["model"], _tiny["processor"] = build_tiny()
    return _tiny["model"], _tiny["processor"]


@settings(max_examples=60, deadline=None)
@given(tensor=tensors())
def test_the_processor_and_degrade_answer_any_tensor_with_a_result_or_a_named_error(tensor):
    _, processor = tiny_model()
    batch = valid_or_named("processor", lambda: processor(images=tensor, task="denoise"))
    if batch is not None:
        assert batch["pixel_values"].shape[1:] == (3, 32, 32) and torch.isfinite(batch["pixel_values"]).all()
    if tensor.dtype != torch.bfloat16:  # numpy has no bfloat16
        array = tensor.numpy()
        batch = valid_or_named("processor", lambda: processor(images=[array], task="denoise"))
        assert batch is None or batch["pixel_values"].shape == (1, 3, 32, 32)
    degraded = valid_or_named("degrade", lambda: degrade(tensor, "denoise", seed=0))
    if degraded is not None:
        assert degraded.shape == tensor.shape and 0 <= degraded.min() and degraded.max() <= 1


@settings(max_examples=60, deadline=None)
@given(prediction=tensors(), reference=tensors(), crop_border=st.sampled_from([0, 1, 4, -1, 2.5]))
def test_the_metrics_answer_any_pair_with_a_number_or_a_named_error(prediction, reference, crop_border):
    for metric in (psnr, ssim):
        value = valid_or_named("metrics", lambda: metric(prediction, reference, crop_border=crop_border))
        assert value is None or not math.isnan(value)


@settings(max_examples=30, deadline=None)
@given(pixel_values=tensors(), max_new_tokens=st.sampled_from([None, 1, 5, 0, -3, 2.5]))
def test_generate_answers_any_pixel_values_with_images_or_a_named_error(pixel_values, max_new_tokens):
    model, processor = tiny_model()
    prompt = processor(images=random_images(max(1, len(pixel_values)) if pixel_values.dim() else 1), task="denoise")
    prompt["pixel_values"] = pixel_values
    with torch.no_grad():
        generated = valid_or_named("generate", lambda: model.generate(**prompt, max_new_tokens=max_new_tokens))
    if generated is not None:
        assert generated.sequences.shape[0] == prompt["input_ids"].shape[0]
