"""`evaluate` metric script: SSIM with BasicSR's conventions (see `metrics/image_quality.py`).

    import evaluate
    metric = evaluate.load("metrics/ssim")
    metric.compute(predictions=[...], references=[...], crop_border=4, test_y_channel=False)
    # -> {"ssim": mean, "scores": [per image]}
"""

from metrics.image_quality import evaluate_metric_class

SSIM = evaluate_metric_class("ssim")
