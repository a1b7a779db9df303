"""Throughput of the restoration pipeline (`pipeline("image-restoration", ...)`): images/s at batch 1 and 16.

    python -m benchmarks.bench_pipeline --model CHECKPOINT [--model OTHER] [--images 32] [--quick]

Inputs: held-out 32x32 crops of the bundled corpus (one tile each; `batch_size` tiles per generate() call), then the
whole validation strip of coffee.png, restored tile by tile (8-pixel overlap). Times are the best of `--repeats` runs
after a warm-up, on whatever checkpoints are given (a tiny random one and a trained demo one in
docs/results/performance.md).
"""

import argparse
import os

from transformers import pipeline

import lm4lv  # noqa: F401  (registers the "image-restoration" task)
from lm4lv.processing.data import bundled_corpus, validation_strip

from benchmarks.common import machine, timed

BATCH_SIZES = (1, 16)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="Checkpoint folder (repeatable).")
    parser.add_argument("--images", type=int, default=32, help="Held-out crops per run.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 crops, one repeat, no whole picture.")
    args = parser.parse_args(argv)
    count, repeats = (4, 1) if args.quick else (args.images, args.repeats)
    crops = bundled_corpus()["validation"][:count]["image"]
    picture = validation_strip()
    print(f"# Restoration pipeline throughput on {machine()}\n")
    print(f"{count} held-out 32x32 crops (one tile each); the {picture.width}x{picture.height} validation strip of "
          "coffee.png tiled with an 8-pixel overlap.\n")
    print("| checkpoint | batch | crops/s | speedup | strip s |\n| --- | --- | --- | --- | --- |")
    for folder in args.model:
        restorer = pipeline("image-restoration", model=folder)
        task = restorer.model.config.task_names[0]
        single = None
        for batch_size in BATCH_SIZES:
            seconds = timed(lambda: restorer(list(crops), task=task, batch_size=batch_size), repeats)
            rate = count / seconds
            single = single or rate
            strip = "-" if args.quick else (
                f"{timed(lambda: restorer(picture, task=task, batch_size=batch_size), repeats):.2f}")
            print(f"| {os.path.basename(folder.rstrip('/'))} | {batch_size} | {rate:.2f} | {rate / single:.2f} | "
                  f"{strip} |", flush=True)


if __name__ == "__main__":
    main()
