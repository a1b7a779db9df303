"""PSNR/SSIM against scikit-image references, edge cases, and the `evaluate` scripts."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lm4lv import metrics
from lm4lv.metrics import psnr, rgb_to_y, ssim


def pair(height=48, width=40, seed=0, noise=12):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, a.shape), 0, 255).astype(np.uint8)
    return a, b


def skimage_ssim(a, b):
    return structural_similarity(a.astype(np.float64), b.astype(np.float64), channel_axis=-1, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False, data_range=255)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("crop", [0, 4])
def test_against_scikit_image(seed, crop):
    a, b = pair(seed=seed, noise=5 + 10 * seed)
    ca, cb = (a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]) if crop else (a, b)
    assert abs(psnr(a, b, crop_border=crop) - peak_signal_noise_ratio(cb, ca, data_range=255)) < 1e-6
    assert abs(ssim(a, b, crop_border=crop) - skimage_ssim(ca, cb)) < 1e-4


def test_y_channel_against_scikit_image():
    a, b = pair(seed=7)
    ya, yb = rgb_to_y(a.astype(np.float64)), rgb_to_y(b.astype(np.float64))
    assert ya.min() >= 16 and ya.max() <= 235
    expected = peak_signal_noise_ratio(yb[4:-4, 4:-4], ya[4:-4, 4:-4], data_range=255)
    assert abs(psnr(a, b, test_y_channel=True) - expected) < 1e-6
    ssim_y = structural_similarity(ya[4:-4, 4:-4, 0], yb[4:-4, 4:-4, 0], gaussian_weights=True, sigma=1.5,
                                   use_sample_covariance=False, data_range=255)
    assert abs(ssim(a, b, test_y_channel=True) - ssim_y) < 1e-4


def test_known_value():
    a = np.zeros((20, 20, 3), np.uint8)
    b = a.copy()
    b[..., 0] = 10  # MSE = 100 / 3 over all channels
    assert psnr(a, b, crop_border=0) == pytest.approx(10 * math.log10(255**2 / (100 / 3)), abs=1e-9)


def test_identical_constant_and_symmetric():
    a, b = pair()
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    constant = np.full((32, 32, 3), 128, np.uint8)
    assert ssim(constant, constant) == pytest.approx(1.0)
    assert ssim(constant, np.full_like(constant, 100)) < 1.0
    assert psnr(a, b) == psnr(b, a) and ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)


def test_non_square_and_input_kinds():
    a, b = pair(height=30, width=64)
    expected = psnr(a, b)
    assert psnr(Image.fromarray(a), Image.fromarray(b)) == expected
    as_tensor = torch.from_numpy(a).permute(2, 0, 1).float() / 255
    assert psnr(as_tensor, torch.from_numpy(b).permute(2, 0, 1).float() / 255) == pytest.approx(expected, abs=1e-9)
    assert psnr(a.astype(np.float32) / 255, b) == pytest.approx(expected, abs=1e-9)


def test_errors():
    a, b = pair(height=8, width=8)
    with pytest.raises(ValueError, match="smaller than the crop"):
        psnr(a, b, crop_border=4)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a, b, crop_border=0)
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(pair(20, 20)[0], pair(20, 24)[0])
    with pytest.raises(ValueError, match="RGB"):
        psnr(np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        psnr(np.full((20, 20, 3), 2.0), np.zeros((20, 20, 3)))
    with pytest.raises(ValueError, match="must have pixels"):
        psnr(np.zeros((0, 0, 3)), np.zeros((0, 0, 3)))  # float: its value range would be read from no pixels


def test_evaluate_modules_load_by_absolute_path():
    a, b = pair()
    c, d = pair(seed=3)
    psnr_metric = metrics.load("psnr")
    result = psnr_metric.compute(predictions=[Image.fromarray(a), c], references=[Image.fromarray(b), d])
    assert result["scores"] == pytest.approx([psnr(a, b), psnr(c, d)], abs=1e-9)
    assert result["psnr"] == pytest.approx((psnr(a, b) + psnr(c, d)) / 2, abs=1e-9)
    ssim_metric = metrics.load("ssim")
    result = ssim_metric.compute(predictions=[a], references=[b], crop_border=0, test_y_channel=True)
    assert result["ssim"] == pytest.approx(ssim(a, b, crop_border=0, test_y_channel=True), abs=1e-12)


def test_metrics_load_from_another_working_directory_with_the_hub_unreachable(tmp_path):
    """`metrics.load` reads this package's files by absolute path: no relative "metrics/psnr" that evaluate would
    take for a Hub namespace. A decoy `metrics/psnr` folder in the working directory must not be picked up."""
    (tmp_path / "metrics" / "psnr").mkdir(parents=True)
    (tmp_path / "metrics" / "psnr" / "psnr.py").write_text("raise RuntimeError('decoy metric was loaded')\n")
    script = (
        "from lm4lv import metrics\n"
        "import numpy as np\n"
        "a = np.zeros((16, 16, 3), np.uint8); b = a.copy(); b[0, 0] = 9\n"
        "for name in ('psnr', 'ssim'):\n"
        "    print(name, metrics.load(name).compute(predictions=[a], references=[b], crop_border=0)[name])\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9",
               HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split() for line in result.stdout.splitlines())
    assert float(lines["psnr"]) == pytest.approx(psnr(np.zeros((16, 16, 3), np.uint8), _one_pixel_off(), crop_border=0))
    assert 0 < float(lines["ssim"]) < 1


def _one_pixel_off() -> np.ndarray:
    image = np.zeros((16, 16, 3), np.uint8)
    image[0, 0] = 9
    return image


def test_unknown_metric_name_is_refused():
    with pytest.raises(ValueError, match="LM4LV ships"):
        metrics.load("lpips")


def test_evaluate_modules_take_float_arrays_and_tensors_and_say_what_is_wrong():
    import numpy as np
    import pytest
    import torch

    from lm4lv import metrics

    rng = np.random.default_rng(0)
    floats = rng.random((16, 16, 3))
    as_uint8 = (floats * 255).round().astype(np.uint8)
    for name in metrics.METRIC_NAMES:
        module = metrics.load(name)
        from_floats = module.compute(predictions=[floats], references=[as_uint8 // 2], crop_border=0)[name]
        from_tensor = module.compute(predictions=[torch.from_numpy(floats).permute(2, 0, 1)],
                                     references=[as_uint8 // 2], crop_border=0)[name]
        from_uint8 = module.compute(predictions=[as_uint8], references=[as_uint8 // 2], crop_border=0)[name]
        assert from_floats == from_tensor == from_uint8
        with pytest.raises(ValueError, match=r"^Float images must be in \[0, 1\], got \[") as error:
            module.compute(predictions=[floats * 3], references=[as_uint8], crop_border=0)
        assert len(str(error.value)) < 80  # a short message, not the whole array
        with pytest.raises(ValueError, match="Ambiguous image layout \\(3, 16, 3\\)"):
            module.compute(predictions=[np.zeros((3, 16, 3))], references=[as_uint8[:3]], crop_border=0)


@pytest.mark.parametrize("crop_border", [2.5, "4", True])
def test_a_crop_border_that_is_no_whole_number_is_refused(crop_border):
    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(TypeError, match=r"crop_border must be a whole number of pixels \(an int >= 0\)"):
        psnr(image, image, crop_border=crop_border)
