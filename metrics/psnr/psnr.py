"""`evaluate` metric script: PSNR with BasicSR's conventions (see `lm4lv/metrics/image_quality.py`).

    from lm4lv import metrics
    metric = metrics.load("psnr")
    metric.compute(predictions=[...], references=[...], crop_border=4, test_y_channel=False)
    # -> {"psnr": mean, "scores": [per image]}
"""

from lm4lv.metrics.image_quality import evaluate_metric_class

PSNR = evaluate_metric_class("psnr")
