"""The held-out photo benchmark (research/photo_benchmark.py): photos, noise, rows, scores, the tile-grid check, and
tiled restoration equal to the pipeline's."""

import numpy as np
import pytest
import torch
from PIL import Image

from lm4lv.pipelines import LM4LVRestorationPipeline, restore_tiled
from lm4lv.processing.degradations import pil_to_tensor, tensor_to_pil
from lm4lv.research.photo_benchmark import (
    CEILING,
    HELD_OUT_PHOTOS,
    NON_LOCAL_MEANS,
    WAVELET,
    benchmark_markdown,
    classical_denoisers,
    grid_error_ratio,
    held_out_photo,
    held_out_photos,
    lm4lv_methods,
    noisy_photo,
    run_benchmark,
)
from lm4lv.trainers.evaluation import INPUT, LM4LV, MAE_R

from conftest import build_tiny


def smooth_image(height: int = 96, width: int = 120) -> Image.Image:
    """A smooth synthetic photo: gradients and a slow wave in each channel."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [0.2 + 0.6 * x, 0.5 + 0.3 * np.sin(6 * y + 3 * x), 0.8 - 0.5 * y * x]
    return Image.fromarray(np.round(np.stack(channels, -1) * 255).astype(np.uint8))


def patch_means(tiles: torch.Tensor, patch: int = 8) -> torch.Tensor:
    """Each `patch` x `patch` block replaced by its mean: the blockiest restoration of a smooth image."""
    pooled = torch.nn.functional.avg_pool2d(tiles, patch)
    return torch.nn.functional.interpolate(pooled, scale_factor=patch, mode="nearest")


def test_the_grid_check_sees_patch_blocks_and_not_noise():
    clean = smooth_image()
    pixels = pil_to_tensor(clean)
    blocky = tensor_to_pil(restore_tiled(pixels, patch_means, tile=32, overlap=8))
    assert grid_error_ratio(blocky, clean) > 1.5
    noise = np.random.default_rng(0).normal(0, 6, (96, 120, 3))
    noisy = Image.fromarray(np.clip(np.asarray(clean) + noise, 0, 255).round().astype(np.uint8))
    assert grid_error_ratio(noisy, clean) == pytest.approx(1.0, abs=0.1)
    dimmed = tensor_to_pil(restore_tiled(pixels, lambda tiles: 0.9 * tiles + 0.03, tile=32, overlap=8))
    assert grid_error_ratio(dimmed, clean) == pytest.approx(1.0, abs=0.1)  # the same error in every tile: no grid
    edges = tensor_to_pil(restore_tiled(pixels, lambda tiles: torch.nn.functional.avg_pool2d(
        tiles, 3, stride=1, padding=1, count_include_pad=False), tile=32, overlap=8))
    assert grid_error_ratio(edges, clean) > 1.5  # a blur right inside and skewed on each tile's edges: seams


def test_restore_tiled_is_the_pipelines_tiling():
    model, processor = build_tiny()
    pipe = LM4LVRestorationPipeline(model=model, processor=processor, batch_size=5)
    image = smooth_image(50, 70)
    from_pipeline = pipe(image, method="reconstruction", overlap=8)
    from lm4lv.pipelines import mae_reconstruct

    tiled = restore_tiled(pil_to_tensor(image), lambda tiles: mae_reconstruct(model, tiles), 32, 8, batch_size=3)
    assert np.array_equal(np.asarray(tensor_to_pil(tiled)), np.asarray(from_pipeline))


def test_noisy_photos_are_seeded_per_photo_and_sigma():
    clean = smooth_image(40, 40)
    first = noisy_photo(clean, 25, 0)
    assert np.array_equal(np.asarray(first), np.asarray(noisy_photo(clean, 25, 0)))
    assert not np.array_equal(np.asarray(first), np.asarray(noisy_photo(clean, 25, 1)))
    spread = (np.asarray(first, np.float64) - np.asarray(clean, np.float64)).std()
    assert 20 < spread < 27  # sigma 25, a little of it clipped


def test_held_out_photos_are_scikit_learns_at_the_corpus_scale():
    assert set(HELD_OUT_PHOTOS) == {"china.jpg", "flower.jpg"}
    assert held_out_photo("china.jpg").size == (320, 213)
    with pytest.raises(ValueError, match="not a held-out photo"):
        held_out_photo("astronaut.png")
    centres = held_out_photos(64)  # the smoke profile's quick look: the centre of each photo
    assert list(centres) == list(HELD_OUT_PHOTOS) and {photo.size for photo in centres.values()} == {(64, 64)}
    whole = np.asarray(held_out_photo("china.jpg"))
    assert np.array_equal(np.asarray(centres["china.jpg"]), whole[74:138, 128:192])


def test_the_benchmark_scores_every_row_on_a_small_photo(tmp_path):
    model, processor = build_tiny()
    methods = lm4lv_methods(model, processor, f"{LM4LV} (tiny)", mae_name="tiny") + classical_denoisers()
    photo = {"china.jpg": held_out_photo("china.jpg").crop((120, 60, 184, 108))}
    results = run_benchmark(methods, photo, sigmas=(25,), output_dir=str(tmp_path))
    scores = results[25]["china.jpg"]
    names = [INPUT, f"{MAE_R} (tiny)", f"{CEILING} (tiny)", f"{LM4LV} (tiny)", NON_LOCAL_MEANS, WAVELET]
    assert names == list(scores)[: len(names)]
    assert scores[NON_LOCAL_MEANS]["psnr"] > scores[INPUT]["psnr"] + 2  # what a user would pick does denoise
    assert all(scores[name]["seconds_per_megapixel"] > 0 for name in names[1:])
    assert (tmp_path / "photo_china.png").exists()
    table = benchmark_markdown(results).splitlines()
    assert table[0].startswith("| sigma 25 | china.jpg PSNR / SSIM | mean PSNR | s / MP | grid ratio |")
    assert table[2].startswith(f"| {INPUT} | {scores[INPUT]['psnr']:.2f} / ")


def test_the_training_images_ablation_tables_every_source():
    from lm4lv.processing.data import TRAINING_IMAGES
    from lm4lv.research.training_images_ablation import SIGMA, ablation_markdown

    photo = {INPUT: 21.0, MAE_R: 21.2, CEILING: 48.0}
    vision = {source: {"validation crops": 50.0 + index, "china.jpg": photo, "flower.jpg": photo}
              for index, source in enumerate(TRAINING_IMAGES)}
    lm4lv = {source: {"china.jpg": 22.0, "flower.jpg": 23.5} for source in TRAINING_IMAGES}
    lines = ablation_markdown(vision, lm4lv, 250).splitlines()
    assert lines[0] == (f"| MAE trained on | validation crops | china.jpg: ceiling / MAE-r / input (sigma {SIGMA}) | "
                        f"flower.jpg: ceiling / MAE-r / input (sigma {SIGMA}) |")
    assert lines[2] == "| corpus | 50.00 | 48.00 / 21.20 / 21.00 | 48.00 / 21.20 / 21.00 |"
    assert lines[-1] == "| mix | 22.00 | 23.50 |" and len(lines) == 2 + 4 + 1 + 2 + 4
