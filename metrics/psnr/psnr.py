"""`evaluate` metric script: PSNR with BasicSR's conventions (see `metrics/image_quality.py`).

    import evaluate
    metric = evaluate.load("metrics/psnr")
    metric.compute(predictions=[...], references=[...], crop_border=4, test_y_channel=False)
    # -> {"psnr": mean, "scores": [per image]}
"""

from metrics.image_quality import evaluate_metric_class

PSNR = evaluate_metric_class("psnr")
