"""Image-quality metrics (BasicSR conventions); `evaluate` scripts live in metrics/psnr and metrics/ssim."""

from .image_quality import psnr, rgb_to_y, ssim, to_uint8_rgb

__all__ = ["psnr", "ssim", "rgb_to_y", "to_uint8_rgb"]
