"""PSNR and SSIM with BasicSR's conventions, the one implementation behind the `evaluate` scripts.

Conventions (BasicSR `calculate_psnr` / `calculate_ssim`):

- inputs are RGB images compared as 0..255 values: uint8 arrays `(H, W, 3)` are used as they are; float arrays or
  tensors in [0, 1] (`(H, W, 3)` or `(3, H, W)`) are scaled by 255 and rounded to integers first, like BasicSR's
  `tensor2img`; PIL images are converted with `np.asarray`;
- `crop_border` pixels are removed from each side before measuring;
- `test_y_channel=True` measures the BT.601 luma (Y of YCbCr, range 16..235) instead of RGB;
- PSNR = 10 log10(255^2 / MSE) over all pixels and channels, `inf` for identical images (as BasicSR);
- SSIM: Gaussian window 11x11, sigma 1.5, C1 = (0.01*255)^2, C2 = (0.03*255)^2, 'valid' filtering, computed per
  channel and averaged.

Depends on numpy and torch only.
"""

import numpy as np
import torch
from PIL import Image

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5


def to_uint8_rgb(image) -> np.ndarray:
    """`(H, W, 3)` float64 array of 0..255 integer values from a PIL image, array or tensor (see module doc)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        image = (image.double() if image.is_floating_point() else image).numpy()
    array = np.asarray(image)
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"An image must be uint8 (0..255) or float in [0, 1], got {array.dtype}")
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] == 3 and array.shape[1] != 3:
        raise ValueError(f"Ambiguous image layout {array.shape} (channels first or last?): pass an (H, W, 3) array")
    if array.ndim == 3 and array.shape[0] == 3 and array.shape[-1] != 3:
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"Expected an RGB image (H, W, 3) or (3, H, W), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"An image must have pixels, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64)
    if not np.isfinite(array).all():
        raise ValueError("Image contains NaN or inf")
    if array.min() < 0 or array.max() > 1:
        raise ValueError(f"Float images must be in [0, 1], got [{array.min():.4g}, {array.max():.4g}]")
    return np.round(array.astype(np.float64) * 255.0)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """BT.601 luma of a 0..255 RGB image, in 16..235 (BasicSR's `rgb2ycbcr(..., y_only=True)` scaled to 255)."""
    return (image @ np.array([65.481, 128.553, 24.966]) / 255.0 + 16.0)[..., None]


def _prepare(prediction, reference, crop_border: int, test_y_channel: bool):
    prediction, reference = to_uint8_rgb(prediction), to_uint8_rgb(reference)
    if prediction.shape != reference.shape:
        raise ValueError(f"Image shapes differ: {prediction.shape} vs {reference.shape}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int):
        raise TypeError(f"crop_border must be a whole number of pixels (an int >= 0), got {crop_border!r}")
    height, width = prediction.shape[:2]
    if crop_border < 0 or 2 * crop_border >= min(height, width):
        raise ValueError(
            f"crop_border={crop_border} leaves nothing of a {height}x{width} image: the image is smaller than "
            "the crop"
        )
    if crop_border:
        prediction = prediction[crop_border:-crop_border, crop_border:-crop_border]
        reference = reference[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        prediction, reference = rgb_to_y(prediction), rgb_to_y(reference)
    return prediction, reference


def psnr(prediction, reference, crop_border: int = 4, test_y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB (BasicSR conventions; `inf` for identical images)."""
    prediction, reference = _prepare(prediction, reference, crop_border, test_y_channel)
    mse = np.mean((prediction - reference) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _gaussian_window() -> torch.Tensor:
    offsets = np.arange(WINDOW_SIZE) - (WINDOW_SIZE - 1) / 2
    weights = np.exp(-(offsets**2) / (2 * WINDOW_SIGMA**2))
    weights /= weights.sum()
    return torch.from_numpy(np.outer(weights, weights))[None, None]


def _ssim_channel(prediction: np.ndarray, reference: np.ndarray) -> float:
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    window = _gaussian_window()

    def filtered(x):
        return torch.nn.functional.conv2d(torch.from_numpy(x)[None, None], window)[0, 0]

    mu_x, mu_y = filtered(prediction), filtered(reference)
    sigma_x = filtered(prediction**2) - mu_x**2
    sigma_y = filtered(reference**2) - mu_y**2
    sigma_xy = filtered(prediction * reference) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return float(ssim_map.mean())


def ssim(prediction, reference, crop_border: int = 4, test_y_channel: bool = False) -> float:
    """Structural similarity (BasicSR conventions: Gaussian 11/1.5 window, per channel, averaged)."""
    prediction, reference = _prepare(prediction, reference, crop_border, test_y_channel)
    if min(prediction.shape[:2]) < WINDOW_SIZE:
        raise ValueError(
            f"SSIM needs at least {WINDOW_SIZE}x{WINDOW_SIZE} pixels after cropping, got {prediction.shape[:2]}"
        )
    channels = [_ssim_channel(prediction[..., c], reference[..., c]) for c in range(prediction.shape[-1])]
    return float(np.mean(channels))


METRIC_DESCRIPTIONS = {
    "psnr": "Peak signal-to-noise ratio in dB (BasicSR conventions: 0..255 RGB, crop_border, optional Y channel; inf "
    "for identical images).",
    "ssim": "Structural similarity (BasicSR conventions: Gaussian window 11 / sigma 1.5 per channel, averaged; "
    "0..255 RGB, crop_border, optional Y channel).",
}

_INPUTS_DESCRIPTION = """
Args:
    predictions: RGB images (PIL, uint8 HxWx3 arrays, or float arrays in [0, 1]).
    references: RGB images of the same shapes.
    crop_border (int, default 4): pixels removed from each side before measuring.
    test_y_channel (bool, default False): measure the BT.601 luma instead of RGB.
Returns:
    {name}: the mean over image pairs; scores: the per-pair values.
"""


def evaluate_metric_class(name: str):
    """The `evaluate.Metric` class of the metric `name` ("psnr" or "ssim") that the scripts in metrics/ expose."""
    import datasets
    import evaluate

    function = {"psnr": psnr, "ssim": ssim}[name]

    class ImageQualityMetric(evaluate.Metric):
        def _info(self):
            return evaluate.MetricInfo(
                description=METRIC_DESCRIPTIONS[name],
                citation="",
                inputs_description=_INPUTS_DESCRIPTION.format(name=name),
                features=datasets.Features({"predictions": datasets.Image(), "references": datasets.Image()}),
                reference_urls=["https://github.com/XPixelGroup/BasicSR/blob/master/basicsr/metrics/psnr_ssim.py"],
            )

        def compute(self, *, predictions=None, references=None, **kwargs):
            """As `evaluate.Metric.compute`, but arrays and tensors (uint8, or float in [0, 1]; `(H, W, 3)` or
            `(3, H, W)`) are turned into 8-bit images first, as the module docstring promises; anything else raises
            a short message (not the `evaluate` format check's dump of the whole array)."""

            def as_images(images):
                if images is None:
                    return None
                return [image if isinstance(image, Image.Image)
                        else Image.fromarray(to_uint8_rgb(image).astype(np.uint8)) for image in images]

            return super().compute(predictions=as_images(predictions), references=as_images(references), **kwargs)

        def _compute(self, predictions, references, crop_border=4, test_y_channel=False):
            if len(predictions) != len(references) or not predictions:
                raise ValueError(
                    f"Need equally many predictions and references, got {len(predictions)} and {len(references)}"
                )
            scores = [
                function(p, r, crop_border=crop_border, test_y_channel=test_y_channel)
                for p, r in zip(predictions, references)
            ]
            return {name: float(np.mean(scores)), "scores": scores}

    ImageQualityMetric.__name__ = ImageQualityMetric.__qualname__ = name.upper()
    return ImageQualityMetric


__all__ = ["psnr", "ssim", "to_uint8_rgb", "rgb_to_y", "evaluate_metric_class"]
