"""`evaluate` metric script: Structural similarity (BasicSR conventions: Gaussian window 11 / sigma 1.5 per channel, averaged; 0..255 RGB, crop_border, optional Y channel).

Usage (offline, from the repository root or with the path of this folder):

    import evaluate
    metric = evaluate.load("metrics/ssim")
    metric.compute(predictions=[pil_or_array, ...], references=[...], crop_border=4, test_y_channel=False)
    # -> {"ssim": mean, "scores": [per image]}
"""

import evaluate

from metrics.image_quality import evaluate_features, mean_over_pairs, ssim

_DESCRIPTION = "Structural similarity (BasicSR conventions: Gaussian window 11 / sigma 1.5 per channel, averaged; 0..255 RGB, crop_border, optional Y channel)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: RGB images (PIL, uint8 HxWx3 arrays, or float arrays in [0, 1]).
    references: RGB images of the same shapes.
    crop_border (int, default 4): pixels removed from each side before measuring.
    test_y_channel (bool, default False): measure the BT.601 luma instead of RGB.
Returns:
    ssim: the mean over image pairs; scores: the per-pair values.
"""


class SSIM(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=evaluate_features(),
            reference_urls=["https://github.com/XPixelGroup/BasicSR/blob/master/basicsr/metrics/psnr_ssim.py"],
        )

    def _compute(self, predictions, references, crop_border=4, test_y_channel=False):
        return mean_over_pairs(ssim, predictions, references, crop_border, test_y_channel)
