"""Score a trained LM4LV checkpoint against MAE-r and the degraded input on held-out crops, with the Python API.

A script to copy and edit; it uses only the installed `lm4lv` package (`lm4lv evaluate` has more options):

    python examples/evaluate_restoration.py CHECKPOINT [TASK] [NUM_SAMPLES]
"""

import sys
import tempfile

from lm4lv import LM4LVProcessor
from lm4lv.processing.data import load_image_dataset, materialize_eval_set
from lm4lv.trainers.evaluation import (
    evaluate_restoration,
    load_restoration_model,
    restoration_methods,
    results_markdown,
)


def main(checkpoint: str, task: str = "denoise", num_samples: int = 16):
    model = load_restoration_model(checkpoint)
    processor = LM4LVProcessor.from_pretrained(checkpoint)
    held_out = load_image_dataset(None, "validation")  # the bundled corpus's validation crops
    with tempfile.TemporaryDirectory() as folder:
        eval_set = materialize_eval_set(held_out, [task], model.config.vision_config.image_size, folder,
                                        limit=num_samples)
        results, _ = evaluate_restoration(eval_set, restoration_methods(model, processor))
    print(results_markdown(results))


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:3], *map(int, sys.argv[3:4]))
