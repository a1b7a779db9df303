"""Degradations: paper ranges, determinism per (seed, index, task), PIL and tensor inputs, strength 0."""

import pytest
import torch
from PIL import Image

from lm4lv.processing.degradations import (
    STRENGTH_LEVELS,
    TASKS,
    degrade,
    gaussian_kernel_sigma,
    line_kernels,
    pil_to_tensor,
    tensor_to_pil,
)

from conftest import random_images


@pytest.mark.parametrize("task", TASKS)
def test_shape_range_and_batch_independence(task):
    images = random_images(6, size=32)
    out = degrade(images, task, seed=3)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    # sample i depends on (seed, i, task) only: not on batch composition or order
    subset = degrade(images[[4, 1]], task, indices=[4, 1], seed=3)
    assert torch.equal(subset, out[[4, 1]])
    assert torch.equal(degrade(images, task, seed=3), out)


@pytest.mark.parametrize("task", ["denoise", "pepper", "derain", "mask"])
def test_randomness_depends_on_seed_and_task(task):
    images = random_images(4, size=32)
    assert not torch.equal(degrade(images, task, seed=0, **STRENGTH_LEVELS[task]["mid"]),
                           degrade(images, task, seed=1, **STRENGTH_LEVELS[task]["mid"]))
    # two samples with the same content but different indices get different noise
    same = images[:1].repeat(2, 1, 1, 1)
    out = degrade(same, task, seed=0, **STRENGTH_LEVELS[task]["high"])
    assert not torch.equal(out[0], out[1])


def test_denoise_matches_requested_sigma():
    images = torch.full((1, 3, 128, 128), 0.5)
    noisy = degrade(images, "denoise", sigma=25 / 255)
    assert (noisy - images).std().item() == pytest.approx(25 / 255, rel=0.03)
    sigmas = [(degrade(images, "denoise", indices=[i]) - images).std().item() for i in range(40)]
    assert 0 <= min(sigmas) and max(sigmas) <= 50 / 255 * 1.05 and max(sigmas) > 30 / 255  # U[0, 50/255]


def test_deblur_window_is_drawn_per_sample():
    image = random_images(1, size=32)
    outputs = {degrade(image, "deblur", indices=[i]).sum().item() for i in range(20)}
    assert len(outputs) == 4  # windows 1, 3, 5 and 7 all occur


def test_deblur_kernel_and_sigma():
    assert gaussian_kernel_sigma(3) == pytest.approx(0.8) and gaussian_kernel_sigma(7) == pytest.approx(1.4)
    images = random_images(1, size=32)
    assert torch.equal(degrade(images, "deblur", kernel_size=1), images)
    blurred = degrade(images, "deblur", kernel_size=7)
    assert blurred.std() < 0.5 * images.std()  # a blur that really blurs
    assert blurred.mean().item() == pytest.approx(images.mean().item(), abs=0.01)
    with pytest.raises(ValueError, match="odd"):
        degrade(images, "deblur", kernel_size=4)


def test_pepper_fraction():
    images = torch.full((1, 3, 200, 200), 0.5)
    out = degrade(images, "pepper", amount=0.1)
    corrupted = (out != 0.5).all(dim=1)
    assert corrupted.float().mean().item() == pytest.approx(0.1, abs=0.01)
    values = out[:, 0][corrupted]
    assert set(values.unique().tolist()) == {0.0, 1.0}
    assert (out[:, 0] == out[:, 1]).all()  # a corrupted pixel is black or white in all channels


def test_mask_blocks():
    images = torch.ones(1, 3, 32, 32)
    out = degrade(images, "mask", mask_ratio=0.1, mask_size=4)
    blocks = out[0, 0].unfold(0, 4, 4).unfold(1, 4, 4).reshape(64, 16)
    zero_blocks = (blocks == 0).all(-1)
    assert zero_blocks.sum().item() == round(0.1 * 64)  # exactly 10% of the 4x4 blocks
    assert ((blocks == 1).all(-1) | zero_blocks).all()  # whole blocks, nothing partial


def test_rain_adds_bright_oriented_streaks():
    images = torch.zeros(1, 3, 64, 64)
    out = degrade(images, "derain", amount=20.0)
    assert out.mean() > 0.01 and (out[:, 0] == out[:, 2]).all()  # gray streaks
    kernel = line_kernels(9, [0.0])[0]
    assert kernel[:, 4].sum() == pytest.approx(1.0)  # vertical at angle 0
    assert torch.equal(degrade(images, "derain", amount=0.0), images)


def test_spatial_tasks_are_lossless():
    images = random_images(2, size=16)
    assert torch.equal(degrade(degrade(images, "rotate"), "rotate", angle=270), images)
    assert torch.equal(degrade(degrade(images, "flip"), "flip"), images)
    assert torch.equal(degrade(images, "rotate")[0, :, 0, 0], images[0, :, 0, -1])  # counter-clockwise
    with pytest.raises(ValueError, match="square"):
        degrade(random_images(1, size=16)[:, :, :8], "rotate")


@pytest.mark.parametrize("task, params", [("denoise", {"sigma": 0.0}), ("deblur", {"kernel_size": 1}),
                                          ("pepper", {"amount": 0.0}), ("derain", {"amount": 0.0}),
                                          ("mask", {"mask_ratio": 0.0}), ("identity", {})])
def test_strength_zero_is_identity(task, params):
    images = random_images(2, size=16)
    assert torch.equal(degrade(images, task, **params), images)


def test_pil_input_matches_tensor_input():
    image = tensor_to_pil(random_images(1, size=24)[0])
    out = degrade(image, "denoise", seed=5, sigma=0.1)
    assert isinstance(out, Image.Image) and out.size == (24, 24)
    expected = tensor_to_pil(degrade(pil_to_tensor(image)[None], "denoise", seed=5, sigma=0.1)[0])
    assert out.tobytes() == expected.tobytes()
    assert len(degrade([image, image], "flip")) == 2
    with pytest.raises(ValueError, match="RGB"):
        degrade(Image.new("L", (8, 8)), "flip")
    with pytest.raises(ValueError, match="Unknown task"):
        degrade(image, "sharpen")


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


def test_empty_batches_are_refused():
    with pytest.raises(ValueError, match=r"degrade got no pixels \(images of shape \(0, 3, 32, 32\)\)"):
        degrade(torch.empty(0, 3, 32, 32), "denoise")
    with pytest.raises(ValueError, match="degrade got an empty list of images: pass at least one image"):
        degrade([], "denoise")
