"""Peak memory of training data from an image folder: the dataset that holds paths (decoded on access, as
`load_image_dataset` builds it now) against one that holds every decoded image (how it was built before).

    python -m benchmarks.bench_image_folder [--images 3000] [--size 128]

Each way runs in its own process (peak resident memory is per process); both then draw 64 training pairs.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

from benchmarks.common import machine

MEASURE = r"""
import resource, sys
import datasets
from lm4lv.processing.data import image_folder_dataset, paired_dataset
from lm4lv.processing.images import load_rgb_image
folder, way = sys.argv[1], sys.argv[2]
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if way == "paths":
    dataset = image_folder_dataset(folder)
else:  # every image decoded into the dataset
    paths = sorted(image_folder_dataset(folder)["path"])
    rows = [{"image": load_rgb_image(path), "path": path} for path in paths]
    dataset = datasets.Dataset.from_list(rows, features=datasets.Features(
        {"image": datasets.Image(), "path": datasets.Value("string")}))
pairs = paired_dataset(dataset, ["denoise"], image_size=32)
for index in range(min(64, len(pairs))):
    pairs[index]
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024)
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.images):
            pixels = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{index:05d}.png"))
        pixel_mib = args.images * args.size * args.size * 3 / 2**20
        print(f"# Image-folder dataset memory on {machine()}\n")
        print(f"{args.images} PNG images of {args.size}x{args.size} (decoded pixel data {pixel_mib:.0f} MiB); growth "
              "of peak resident memory while building the dataset and drawing 64 training pairs.\n")
        print("| dataset holds | peak RSS growth MiB | x pixel data |\n| --- | --- | --- |")
        for way in ("decoded images", "paths"):
            result = subprocess.run([sys.executable, "-c", MEASURE, folder, way.split()[-1]], capture_output=True,
                                    text=True, check=True)
            growth = float(result.stdout.strip().splitlines()[-1])
            print(f"| {way} | {growth:.0f} | {growth / pixel_mib:.2f} |", flush=True)


if __name__ == "__main__":
    main()
