"""The held-out photo benchmark: whole photos from outside the training corpus, denoised tile by tile, LM4LV beside
the classical denoisers a user would pick instead.

    python -m lm4lv.research.photo_benchmark --model lm4lv-denoise-smollm2 --output_dir outputs/photos

- Photos: `HELD_OUT_PHOTOS`, scikit-learn's sample images (installed with `scikit-learn`), downscaled 2x (bicubic)
  as the corpus is. Nothing in the package trains or tunes on them.
- Noise: Gaussian with sigma `SIGMAS` (on 0..255), each photo and sigma from its own fixed seed.
- Rows: the noisy input; per LM4LV model, its MAE's reconstruction of the noisy photo (MAE-r) and of the clean one
  (the ceiling: what decoding perfect features gives) and LM4LV itself, all tile by tile as `lm4lv restore` does;
  the classical denoisers (`classical_denoisers`: scikit-image's non-local means and wavelet, CBM3D where the
  optional `bm3d` package is installed).
- Scores: PSNR / SSIM (BasicSR conventions: RGB, 4-pixel border), seconds per megapixel (one run, one machine), the
  tile-grid check (`grid_error_ratio`), and before/after pictures.
"""

import argparse
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lm4lv import metrics
from lm4lv.modeling_lm4lv.hub_files import write_atomically, write_text_atomically
from lm4lv.pipelines import mae_reconstruct, restore, restore_tiled
from lm4lv.pipelines.image_restoration import tiles_per_batch
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.data import CORPUS_DOWNSCALE
from lm4lv.processing.degradations import degrade, pil_to_tensor, tensor_to_pil
from lm4lv.processing.visualization import image_grid
from lm4lv.trainers.evaluation import CLEAN, INPUT, LM4LV, MAE_R, load_restoration_model

# scikit-learn's two sample photos (sklearn/datasets/images/README.txt): Flickr photos under CC BY 2.0
HELD_OUT_PHOTOS = {
    "china.jpg": "CC BY 2.0, danielbuechele on Flickr (scikit-learn sample image)",
    "flower.jpg": "CC BY 2.0, vultilion on Flickr (scikit-learn sample image)",
}
SIGMAS = (15, 25, 50)
PICTURE_SIGMA = 25  # the sigma of the before/after pictures
NOISE_SEED = 7
CROP_BORDER = 4
TILE_OVERLAP = 8  # as `lm4lv restore` tiles
CEILING = "MAE ceiling"  # the MAE's reconstruction of the clean photo: what decoding perfect features gives
# the classical denoisers, with the settings a user would pick (what each one is: `classical_denoisers`)
NON_LOCAL_MEANS, WAVELET, CBM3D = "non-local means (scikit-image)", "wavelet (scikit-image)", "CBM3D (bm3d)"


def held_out_photo(name: str, downscale: int = CORPUS_DOWNSCALE) -> Image.Image:
    """One of `HELD_OUT_PHOTOS` as RGB, downscaled by `downscale` (bicubic)."""
    if name not in HELD_OUT_PHOTOS:
        raise ValueError(f"{name!r} is not a held-out photo; choose from {sorted(HELD_OUT_PHOTOS)}")
    try:
        from sklearn.datasets import load_sample_image
    except ImportError as error:
        raise ImportError("The held-out photos come with scikit-learn: pip install scikit-learn") from error
    image = Image.fromarray(load_sample_image(name))
    return image.resize((image.width // downscale, image.height // downscale), Image.BICUBIC)


def noisy_photo(clean: Image.Image, sigma: int, photo_index: int) -> Image.Image:
    """`clean` with Gaussian noise of `sigma` (0..255 scale), clipped and quantised; seeded by `NOISE_SEED`, the
    photo's index and sigma, so every method sees the same noisy photo."""
    return degrade(clean, "denoise", indices=[photo_index * 1000 + sigma], seed=NOISE_SEED, sigma=sigma / 255)


@dataclass(frozen=True)
class Method:
    """One row of the benchmark: `restore(image, sigma) -> image` (PIL RGB), given the noisy photo, or the clean one
    when `clean_input` (the ceiling)."""

    name: str
    restore: object
    clean_input: bool = False


def classical_denoisers() -> list[Method]:
    """What a user would pick instead of LM4LV: scikit-image's non-local means (noise level estimated, h = 0.8 sigma,
    5x5 patches, distance 6, fast mode) and wavelet denoiser (YCbCr, BayesShrink, rescaled sigma), and CBM3D from the
    optional `bm3d` package (sigma known; skipped where `bm3d` is not installed)."""
    methods = [Method(NON_LOCAL_MEANS, non_local_means), Method(WAVELET, wavelet)]
    try:
        import bm3d  # noqa: F401  (optional: the lab's benchmark only)
    except ImportError:
        return methods
    return methods + [Method(CBM3D, cbm3d)]


def as_float(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255


def as_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8))


def non_local_means(image: Image.Image, sigma: int) -> Image.Image:
    from skimage.restoration import denoise_nl_means, estimate_sigma

    pixels = as_float(image)
    estimate = float(np.mean(estimate_sigma(pixels, channel_axis=-1)))
    return as_image(denoise_nl_means(pixels, h=0.8 * estimate, sigma=estimate, patch_size=5, patch_distance=6,
                                     fast_mode=True, channel_axis=-1))


def wavelet(image: Image.Image, sigma: int) -> Image.Image:
    from skimage.restoration import denoise_wavelet

    return as_image(denoise_wavelet(as_float(image), convert2ycbcr=True, rescale_sigma=True, channel_axis=-1))


def cbm3d(image: Image.Image, sigma: int) -> Image.Image:
    import bm3d

    return as_image(bm3d.bm3d_rgb(as_float(image), sigma / 255))


def lm4lv_methods(model, processor, name: str, mae_name: str | None = None) -> list[Method]:
    """The rows of one LM4LV model: LM4LV itself (row `name`) and, with `mae_name`, its MAE's MAE-r and ceiling
    (rows `MAE-r (mae_name)`, `MAE ceiling (mae_name)`; models sharing an MAE need them once), each restoring tile by
    tile as `lm4lv restore` does (its batches of tiles included)."""
    batch_size = tiles_per_batch(model, processor)

    def tiled(function):
        return lambda image, sigma: tensor_to_pil(
            restore_tiled(pil_to_tensor(image), function, processor.image_size, TILE_OVERLAP, batch_size))

    methods = [Method(name, tiled(lambda tiles: restore(model, processor, tiles, "denoise")))]
    if mae_name is None:
        return methods
    reconstruct = tiled(lambda tiles: mae_reconstruct(model, tiles))
    return [Method(f"{MAE_R} ({mae_name})", reconstruct),
            Method(f"{CEILING} ({mae_name})", reconstruct, clean_input=True), *methods]


def score(restored: Image.Image, clean: Image.Image) -> dict:
    return {metric: getattr(metrics, metric)(restored, clean, crop_border=CROP_BORDER) for metric in ("psnr", "ssim")}


def held_out_photos(size: int | None = None) -> dict:
    """Every one of `HELD_OUT_PHOTOS` at the corpus's scale, by name; with `size`, only the centre `size` x `size`
    pixels of each (a quick look, as the smoke profile takes)."""
    photos = {name: held_out_photo(name) for name in HELD_OUT_PHOTOS}
    if size is None:
        return photos
    return {name: photo.crop(((photo.width - size) // 2, (photo.height - size) // 2,
                              (photo.width + size) // 2, (photo.height + size) // 2)) for name, photo in photos.items()}


def run_benchmark(methods: list[Method], photos: dict, sigmas=SIGMAS, output_dir: str | None = None) -> dict:
    """Every method on every photo (`photos`: name -> clean PIL image, e.g. `held_out_photos()`) and sigma: `{sigma:
    {photo: {method: {"psnr", "ssim", "seconds_per_megapixel", "grid_error_ratio"}}}}` (the input row has no time).
    With `output_dir`, the before/after pictures at `PICTURE_SIGMA` are written there (`photo_<name>.png`: the noisy
    photo, every method's restoration but the ceilings, which look like the clean photo, and the clean photo)."""
    ceilings = {method.name for method in methods if method.clean_input}
    results = {}
    for sigma in sigmas:
        results[sigma] = {}
        for index, (photo, clean) in enumerate(photos.items()):
            noisy = noisy_photo(clean, sigma, index)
            outputs = {INPUT: noisy}
            scores = {INPUT: score(noisy, clean)}
            megapixels = clean.width * clean.height / 1e6
            for method in methods:
                start = time.perf_counter()
                outputs[method.name] = method.restore(clean if method.clean_input else noisy, sigma)
                seconds = time.perf_counter() - start
                scores[method.name] = score(outputs[method.name], clean) | {
                    "seconds_per_megapixel": seconds / megapixels,
                    "grid_error_ratio": grid_error_ratio(outputs[method.name], clean)}
            results[sigma][photo] = scores
            if output_dir and sigma == PICTURE_SIGMA:
                shown = {name: output for name, output in outputs.items() if name not in ceilings}
                write_picture(shown, scores, clean, os.path.join(output_dir, picture_name(photo)))
    return results


def picture_name(photo: str) -> str:
    """The file name of a photo's before/after picture."""
    return f"photo_{photo.rsplit('.', 1)[0]}.png"


def write_picture(outputs: dict, scores: dict, clean: Image.Image, path: str):
    """Each output and the clean photo side by side, labelled with PSNR, at full size."""
    row = [pil_to_tensor(image) for image in (*outputs.values(), clean)]
    labels = [f"{name} {scores[name]['psnr']:.2f} dB" for name in outputs] + [CLEAN]
    write_atomically(path, image_grid([row], column_labels=labels, scale=1).save)


def grid_error_ratio(restored: Image.Image, clean: Image.Image, period: int = 8, crop_border: int = CROP_BORDER):
    """How visible a grid of `period` pixels is in `restored`: the mean absolute error (against `clean`) on the
    pixels next to the grid's lines (rows and columns `k * period - 1` and `k * period`) divided by that on all the
    other pixels, inside a `crop_border` frame. The tiles of `lm4lv restore` start at multiples of 8 (stride 24)
    except the last of each row and column, so with `period` 8 the lines are the ViT-MAE's patch borders and the
    tile seams; 1.0 means no grid, 1.1 a 10% excess along it."""
    error = np.abs(as_float(restored) - as_float(clean)).mean(axis=-1)
    rows, columns = np.indices(error.shape)
    on_line = (rows % period == 0) | (rows % period == period - 1) | (columns % period == 0)
    on_line |= columns % period == period - 1
    frame = (slice(crop_border, error.shape[0] - crop_border), slice(crop_border, error.shape[1] - crop_border))
    error, on_line = error[frame], on_line[frame]
    inside = error[~on_line].mean()
    return float(error[on_line].mean() / inside) if inside > 0 else 1.0


def benchmark_markdown(results: dict) -> str:
    """One Markdown table per sigma: PSNR / SSIM per photo, the mean PSNR, seconds per megapixel and the grid
    ratio (largest over the photos)."""
    sections = []
    for sigma, by_photo in results.items():
        photos = list(by_photo)
        methods = list(by_photo[photos[0]])
        lines = [f"| sigma {sigma} | " + " | ".join(f"{photo} PSNR / SSIM" for photo in photos)
                 + " | mean PSNR | s / MP | grid ratio |", "|" + " --- |" * (len(photos) + 4)]
        for method in methods:
            cells = [f"{by_photo[p][method]['psnr']:.2f} / {by_photo[p][method]['ssim']:.4f}" for p in photos]
            mean = np.mean([by_photo[p][method]["psnr"] for p in photos])
            timed = method != INPUT
            seconds = f"{np.mean([by_photo[p][method]['seconds_per_megapixel'] for p in photos]):.1f}" if timed else "-"
            grid = f"{max(by_photo[p][method]['grid_error_ratio'] for p in photos):.3f}" if timed else "-"
            lines.append(f"| {method} | {' | '.join(cells)} | {mean:.2f} | {seconds} | {grid} |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def model_methods(locations: dict) -> list[Method]:
    """The rows of each LM4LV model in `locations` (row name -> checkpoint folder or shipped name): its MAE-r and
    ceiling (named after the model) and LM4LV."""
    methods = []
    for name, location in locations.items():
        model = load_restoration_model(location)
        processor = LM4LVProcessor.from_pretrained(location, model_config=model.config)
        methods += lm4lv_methods(model, processor, f"{LM4LV} ({name})", mae_name=name)
    return methods


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]LOCATION",
                        help="An LM4LV denoiser (checkpoint folder or shipped name); repeat for several.")
    parser.add_argument("--sigmas", default=",".join(map(str, SIGMAS)), help="Noise levels, comma-separated.")
    parser.add_argument("--no_classical", action="store_true", help="Leave the classical denoisers out.")
    parser.add_argument("--output_dir", default="outputs/photo_benchmark")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.output_dir, exist_ok=True)
    locations = dict(item.split("=", 1) if "=" in item else (item, item) for item in args.model)
    methods = model_methods(locations) + ([] if args.no_classical else classical_denoisers())
    results = run_benchmark(methods, held_out_photos(), [int(s) for s in args.sigmas.split(",")], args.output_dir)
    write_text_atomically(os.path.join(args.output_dir, "photo_benchmark.json"), json.dumps(results, indent=2))
    table = benchmark_markdown(results)
    write_text_atomically(os.path.join(args.output_dir, "photo_benchmark.md"), table + "\n")
    print(table)


if __name__ == "__main__":
    main()
