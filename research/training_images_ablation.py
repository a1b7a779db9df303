"""Which training images generalise: one ablation row per source of `training_images` (the bundled corpus's crops,
augmented crops of its photos, procedural dead-leaves images, the default mix), scored on the held-out photos.

    python -m lm4lv.research.training_images_ablation --output_dir outputs/training_images

- Vision module rows: the demo's ViT-MAE recipe (`offline_default.DEMO_MAE`) trained on each source; its
  reconstruction of the corpus's validation crops, of the clean held-out photos (the ceiling) and of the noisy ones
  (MAE-r, sigma `SIGMA`), each photo restored tile by tile.
- LM4LV rows: the shipped denoiser's settings (`pretrained_run.training_arguments`: the recipe, the skip
  connection, the demo MAE, batch 8) trained for `--lm4lv_steps` steps on each source; PSNR on the noisy held-out
  photos.

The held-out photos only score the rows; nothing is chosen by them.
"""

import argparse
import dataclasses
import json
import os

import torch
from transformers.trainer_utils import get_last_checkpoint

from lm4lv.modeling_lm4lv import load_vision_module
from lm4lv.modeling_lm4lv.hub_files import write_text_atomically
from lm4lv.modeling_lm4lv.shipped import default_cache_dir, prepare_smollm2
from lm4lv.modeling_lm4lv.vision import reconstruct_images
from lm4lv.pipelines import restore_tiled
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.data import TRAINING_IMAGES, bundled_corpus
from lm4lv.processing.degradations import pil_to_tensor, tensor_to_pil
from lm4lv.trainers.evaluation import INPUT, LM4LV, MAE_R, load_restoration_model
from lm4lv.trainers.training import parse_arguments, train

from .offline_default import DEMO_MAE, prepare_mae
from .photo_benchmark import CEILING, TILE_OVERLAP, Method, held_out_photos, lm4lv_methods, run_benchmark
from .pretrained_run import training_arguments

SIGMA = 25


def vision_rows(cache_dir: str) -> dict:
    """`{source: {"validation crops": PSNR, photo: {"ceiling", "MAE-r", "input"}}}`: the demo MAE's recipe trained on
    each source of `TRAINING_IMAGES`."""
    validation = bundled_corpus()["validation"]
    rows = {}
    for source in TRAINING_IMAGES:
        folder, info = prepare_mae(cache_dir, validation, dataclasses.replace(DEMO_MAE, images=source))
        vision = load_vision_module(folder).eval()
        tile = vision.config.image_size

        def reconstruct(image, sigma):
            return tensor_to_pil(restore_tiled(pil_to_tensor(image), lambda tiles: reconstruct_images(vision, tiles),
                                               tile, TILE_OVERLAP))

        methods = [Method(MAE_R, reconstruct), Method(CEILING, reconstruct, clean_input=True)]
        scores = run_benchmark(methods, held_out_photos(), (SIGMA,))[SIGMA]
        rows[source] = {"validation crops": info["validation"]["psnr"]} | {
            photo: {name: values[name]["psnr"] for name in (INPUT, MAE_R, CEILING)} for photo, values in scores.items()}
    return rows


def lm4lv_rows(cache_dir: str, steps: int, output_dir: str) -> dict:
    """`{source: {photo: LM4LV's PSNR}}`: the shipped denoiser's settings trained for `steps` steps on each source
    (resuming a run cut short; a finished run is only scored)."""
    llm, vision = prepare_smollm2(cache_dir), prepare_mae(cache_dir, bundled_corpus()["validation"])[0]
    rows = {}
    for source in TRAINING_IMAGES:
        folder = os.path.join(output_dir, f"lm4lv_{source}")
        if not os.path.exists(os.path.join(folder, "model.safetensors")):
            arguments = training_arguments(llm, vision, folder)
            arguments[arguments.index("--training_images") + 1] = source
            arguments[arguments.index("--max_steps") + 1] = str(steps)
            arguments[arguments.index("--save_steps") + 1] = str(max(1, steps // 5))
            last = get_last_checkpoint(folder) if os.path.isdir(folder) else None
            train(*parse_arguments(arguments + (["--resume_from_checkpoint", last] if last else [])))
        model = load_restoration_model(folder)
        processor = LM4LVProcessor.from_pretrained(folder, model_config=model.config)
        scores = run_benchmark(lm4lv_methods(model, processor, LM4LV), held_out_photos(), (SIGMA,))[SIGMA]
        rows[source] = {photo: values[LM4LV]["psnr"] for photo, values in scores.items()}
    return rows


def ablation_markdown(vision: dict, lm4lv: dict, steps: int) -> str:
    """Both tables: per source, the vision module's PSNRs and LM4LV's on each held-out photo."""
    photos = list(next(iter(vision.values())))[1:]
    lines = ["| MAE trained on | validation crops | " + " | ".join(
        f"{photo}: ceiling / MAE-r / input (sigma {SIGMA})" for photo in photos) + " |",
        "|" + " --- |" * (2 + len(photos))]
    for source, row in vision.items():
        cells = [" / ".join(f"{row[photo][name]:.2f}" for name in (CEILING, MAE_R, INPUT)) for photo in photos]
        lines.append(f"| {source} | {row['validation crops']:.2f} | {' | '.join(cells)} |")
    lines += ["", f"| LM4LV ({steps} steps) trained on | " + " | ".join(f"{photo} (sigma {SIGMA})" for photo in photos)
              + " |", "|" + " --- |" * (1 + len(photos))]
    lines += [f"| {source} | {' | '.join(f'{row[photo]:.2f}' for photo in photos)} |" for source, row in lm4lv.items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/training_images")
    parser.add_argument("--lm4lv_steps", type=int, default=250)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.output_dir, exist_ok=True)
    cache_dir = default_cache_dir()
    vision = vision_rows(cache_dir)
    lm4lv = lm4lv_rows(cache_dir, args.lm4lv_steps, args.output_dir)
    write_text_atomically(os.path.join(args.output_dir, "training_images.json"),
                          json.dumps({"vision": vision, "lm4lv": lm4lv, "lm4lv_steps": args.lm4lv_steps}, indent=2))
    table = ablation_markdown(vision, lm4lv, args.lm4lv_steps)
    write_text_atomically(os.path.join(args.output_dir, "training_images.md"), table + "\n")
    print(table)


if __name__ == "__main__":
    main()
