"""`evaluate` metric script: SSIM with BasicSR's conventions (see `lm4lv/metrics/image_quality.py`).

    from lm4lv import metrics
    metric = metrics.load("ssim")
    metric.compute(predictions=[...], references=[...], crop_border=4, test_y_channel=False)
    # -> {"ssim": mean, "scores": [per image]}
"""

from lm4lv.metrics.image_quality import evaluate_metric_class

SSIM = evaluate_metric_class("ssim")
