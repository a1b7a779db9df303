"""Images and parameters are validated where they enter: degradations, the processor and generate() say what they
expected instead of returning a silently wrong result."""

import numpy as np
import pytest
import torch

from lm4lv.processing.degradations import degrade
from lm4lv.trainers.evaluation import restore

from conftest import build_tiny, random_images


@pytest.mark.parametrize("task, params, message", [
    ("mask", {"mask_ratio": -0.1}, r"mask: mask_ratio must be in \[0.0, 1.0\], got -0.1"),
    ("mask", {"mask_ratio": 1.5}, r"mask: mask_ratio must be in \[0.0, 1.0\], got 1.5"),
    ("mask", {"mask_size": 0}, "mask: mask_size must be >= 1, got 0"),
    ("mask", {"mask_size": 40}, "mask: mask_size 40 is larger than the image side 32"),
    ("denoise", {"sigma": -0.1}, r"denoise: sigma must be in \[0.0, 1.0\], got -0.1"),
    ("pepper", {"amount": 1.2}, r"pepper: amount must be in \[0.0, 1.0\], got 1.2"),
    ("deblur", {"kernel_size": 65}, "deblur: kernel_size 65 is too large for images of side 32 \\(at most 63\\)"),
])
def test_degradation_parameters_out_of_range_raise(task, params, message):
    with pytest.raises(ValueError, match=message):
        degrade(random_images(1), task, **params)


@pytest.mark.parametrize("images, message", [
    ((random_images(1) * 255).to(torch.uint8), "degrade takes float images in \\[0, 1\\], got torch.uint8"),
    (random_images(1) * 2, "degrade takes float images in \\[0, 1\\] \\(finite\\); got values outside that range"),
])
def test_degradations_refuse_images_that_are_not_unit_range_floats(images, message):
    with pytest.raises(ValueError, match=message):
        degrade(images, "denoise")


def test_numpy_images_are_scaled_once_whatever_their_dtype():
    _, processor = build_tiny()
    floats = np.random.default_rng(0).random((32, 32, 3))
    as_uint8 = (floats * 255).round().astype(np.uint8)
    torch.testing.assert_close(processor.preprocess_images([floats]), processor.preprocess_images([as_uint8]))
    with pytest.raises(ValueError, match="Float image arrays must be finite and in \\[0, 1\\]"):
        processor.preprocess_images([floats * 255])


def test_empty_batches_and_raw_pixels_are_refused():
    model, processor = build_tiny()
    with pytest.raises(ValueError, match="No images given"):
        processor.preprocess_images([])
    batch = processor(images=random_images(1))
    batch["pixel_values"] = (random_images(1) * 255).to(torch.uint8)
    with pytest.raises(ValueError, match="pixel_values must be normalised float images from LM4LVProcessor, got a "
                                         "torch.uint8 tensor"):
        model.generate(**batch)


def test_non_finite_weights_never_come_out_as_an_image():
    model, processor = build_tiny()
    with torch.no_grad():
        model.out_adapter.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        restore(model, processor, random_images(1), "denoise")


@pytest.mark.parametrize("task, max_new_tokens, message", [
    (0, None, r"task must be a task name or a list of names \(one per image\) from \['denoise', 'rotate'\], got 0"),
    (["denoise", 1], None, "task must be a task name or a list of names"),
    ("deblur", None, r"Unknown task 'deblur': this model has task tokens for \['denoise', 'rotate'\]"),
    ("denoise", -1, "max_new_tokens must be a positive integer, got -1"),
    ("denoise", 0, "max_new_tokens must be a positive integer, got 0"),
    ("denoise", 2.5, "max_new_tokens must be a positive integer, got 2.5"),
])
def test_generate_arguments_are_validated(task, max_new_tokens, message):
    model, processor = build_tiny(task_names=("denoise", "rotate"))
    images = random_images(2)
    with pytest.raises(ValueError, match=message):
        model.generate(**processor(images=images, task=task), max_new_tokens=max_new_tokens)
