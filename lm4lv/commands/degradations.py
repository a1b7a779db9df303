"""Write a PNG grid of every task's degradation at low / mid / high strength on bundled images.

    lm4lv degradations --output outputs/degradations.png
"""

import argparse
import os

import torch

from lm4lv.processing.data import bundled_corpus
from lm4lv.processing.degradations import STRENGTH_LEVELS, TASKS, degrade
from lm4lv.processing.images import to_tensor
from lm4lv.processing.visualization import image_grid


def degradation_grid(num_images: int = 3, crop_size: int = 96, seed: int = 0):
    """The grid image: one row per (task, image), columns clean / low / mid / high."""
    validation = bundled_corpus(crop_size=crop_size)["validation"]
    step = max(1, len(validation) // num_images)
    clean = torch.stack([to_tensor(validation[i * step]["image"]) for i in range(num_images)])
    rows, labels = [], []
    for task in TASKS:
        levels = STRENGTH_LEVELS[task]
        degraded = [degrade(clean, task, seed=seed, **levels[level]) for level in ("low", "mid", "high")]
        for i in range(num_images):
            rows.append([clean[i]] + [d[i] for d in degraded])
            labels.append(task)
    return image_grid(rows, labels, ["clean", "low", "mid", "high"], scale=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="outputs/degradations.png")
    parser.add_argument("--num_images", type=int, default=2)
    parser.add_argument("--crop_size", type=int, default=96)
    args = parser.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    degradation_grid(args.num_images, args.crop_size).save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
