"""Image-quality metrics (BasicSR conventions): plain functions, and `evaluate` modules in psnr/ and ssim/.

    from lm4lv import metrics
    metrics.psnr(restored, clean)                          # one image pair
    psnr = metrics.load("psnr")                            # the `evaluate` module, loaded from this package's files
    psnr.compute(predictions=[...], references=[...])      # -> {"psnr": mean, "scores": [per image]}
"""

import os

from .image_quality import psnr, rgb_to_y, ssim, to_uint8_rgb

METRIC_NAMES = ("psnr", "ssim")


def load(name: str):
    """The `evaluate` module of metric `name` ("psnr" or "ssim"), loaded by absolute path from this package, so it
    never resolves to a Hub namespace whatever the working directory, and works offline."""
    import evaluate

    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; LM4LV ships {list(METRIC_NAMES)}")
    return evaluate.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), name))


__all__ = ["psnr", "ssim", "rgb_to_y", "to_uint8_rgb", "load", "METRIC_NAMES"]
