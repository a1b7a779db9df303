"""`lm4lv demo --estimate`: how long a profile's run would take on this machine, measured rather than guessed. It
trains a few steps of each kind of training run of the profile on the device (the profile's batch, model and data
path), times one batch of generation and of one-pass restoration, and projects the wall time of every stage and of
the whole run from those rates and the profile's counts. Nothing of the run itself is trained or cached, except
SmolLM2's conversion and the evaluation sets, which the run would make the same way."""

import collections
import dataclasses
import os
import shutil
import statistics
import time

import torch
from transformers import TrainerCallback

from lm4lv.modeling_lm4lv.configuration_lm4lv import image_size_pair
from lm4lv.modeling_lm4lv.hub_files import write_text_atomically
from lm4lv.modeling_lm4lv.shipped import default_cache_dir, prepare_smollm2
from lm4lv.pipelines.image_restoration import restore, tile_boxes
from lm4lv.processing.data import bundled_corpus, validation_strip
from lm4lv.trainers.mae_training import DEMO_MAE_CONFIG, train_vision_module

from .demo import (
    CONVERSION_STAGE,
    FIXED_SIGMAS,
    MAE_STAGE,
    PHOTO_STAGE,
    PICTURE_STAGE,
    SETS_STAGE,
    SHIPPED_STAGE,
    TABLE_2_STAGE,
    TABLE_3_STAGE,
    evaluation_sets,
    load_trained,
    planned_stages,
    scores_shipped_model,
    train_run,
    training_runs,
)
from .offline_default import PROFILES, Profile, demo_mae, image_tensors
from .photo_benchmark import PICTURE_SIGMA as PHOTO_SIGMA
from .photo_benchmark import TILE_OVERLAP, classical_denoisers, held_out_photos, noisy_photo
from .report import LM4LV_ROWS, PICTURE, PICTURE_TILE_OVERLAP, RANDOM_INIT

WARMUP_STEPS = 2  # untimed training steps of each kind (allocation, kernel selection, compilation)
TIMED_STEPS = 5  # timed steps after them: the median step time (a checkpoint save lands in one interval)
EVAL_BATCH = 16  # crops per restoration call, as the evaluation batches them


class StepClock(TrainerCallback):
    """The time at which every training step ends (after the device finished it)."""

    def __init__(self):
        self.ends = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def seconds_per_step(self) -> float:
        """The median time between the ends of consecutive steps after the warm-up steps."""
        timed = self.ends[WARMUP_STEPS - 1 :]
        return statistics.median(later - earlier for earlier, later in zip(timed, timed[1:]))


def seconds_per_restored_crop(summary: dict) -> float:
    """Seconds per crop of the trained model's restoration (`restore`: generation, or one pass for the baselines
    without it), timed on the second of two calls on a batch of `EVAL_BATCH` random crops."""
    model, processor = load_trained(summary)
    crops = torch.rand(EVAL_BATCH, 3, *image_size_pair(model.config.vision_config.image_size),
                       generator=torch.Generator().manual_seed(0))
    restore(model, processor, crops, "denoise")
    start = time.perf_counter()
    restore(model, processor, crops, "denoise")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / EVAL_BATCH


def timed_training(profile: Profile, llm: str, vision: str, work_dir: str, cache_dir: str) -> dict:
    """Train each kind of run of `profile` (one per method: LM4LV's rate stands for the random-init LLM and the skip
    connection, whose models have its shape) for `WARMUP_STEPS + TIMED_STEPS` steps under `work_dir`; `{method:
    (seconds per step, the short run's summary)}`."""
    rates = {}
    for run in training_runs(profile):
        if run.method not in rates:
            clock = StepClock()
            short = dataclasses.replace(run, steps=WARMUP_STEPS + TIMED_STEPS, random_init=False)
            summary = train_run(short, llm, vision, profile, work_dir, cache_dir, callbacks=[clock])
            rates[run.method] = (clock.seconds_per_step(), summary)
    return rates


def timed_vision_module(profile: Profile, cache_dir: str, corpus, work_dir: str) -> tuple[str, float]:
    """`(folder, projected seconds)` of the MAE stage: the cached MAE and 0 when the run would find it, else a fresh
    MAE saved under `work_dir` (its speed is what matters) and `profile.mae.steps` at its measured step time."""
    cached = os.path.join(cache_dir, profile.mae.name)
    if os.path.exists(os.path.join(cached, "training.json")):
        return cached, 0.0
    torch.manual_seed(0)
    model = demo_mae().to("cuda" if torch.cuda.is_available() else "cpu")
    steps = WARMUP_STEPS + TIMED_STEPS
    start = time.perf_counter()
    train_vision_module(model, image_tensors(corpus["train"]), mode="autoencoder", steps=steps, batch_size=64,
                        warmup_steps=1, progress=False)
    seconds = (time.perf_counter() - start) / steps * profile.mae.steps
    folder = os.path.join(work_dir, "mae")
    model.save_pretrained(folder)
    return folder, seconds


def classical_seconds_per_megapixel() -> float:
    """Seconds per megapixel of all the classical denoisers of the photo benchmark together, timed on one held-out
    photo."""
    clean = next(iter(held_out_photos().values()))
    noisy = noisy_photo(clean, PHOTO_SIGMA, 0)
    start = time.perf_counter()
    for method in classical_denoisers():
        method.restore(noisy, PHOTO_SIGMA)
    return (time.perf_counter() - start) / (clean.width * clean.height / 1e6)


def photo_stage_seconds(profile: Profile, per_crop: dict, classical: float) -> tuple[float, str]:
    """`(projected seconds, basis)` of the held-out photo benchmark: its tiles generated by every LM4LV row and the
    classical denoisers' time per megapixel, at each of the profile's noise levels."""
    names = {run.name for run in training_runs(profile)}
    models = sum(name in names for name in LM4LV_ROWS) + scores_shipped_model(profile)
    photos = held_out_photos(profile.photo_size).values()
    tile = DEMO_MAE_CONFIG["image_size"]
    tiles = sum(len(tile_boxes(photo.height, photo.width, tile, TILE_OVERLAP)) for photo in photos)
    megapixels = sum(photo.width * photo.height for photo in photos) / 1e6
    count, sigmas = tiles * models * len(profile.photo_sigmas), len(profile.photo_sigmas)
    return (count * per_crop["lm4lv"] + classical * megapixels * sigmas,
            f"{count:,} tiles generated, classical denoisers {classical:.1f} s/MP")


def evaluation_seconds(profile: Profile, sets: dict, per_crop: dict, classical: float) -> dict:
    """Per evaluation stage: `(projected seconds, basis)` from the crops it restores and `per_crop` (method -> seconds
    a crop; LM4LV's stands for every generating row), and `classical`, the classical denoisers' seconds per
    megapixel. The input, MAE-r and the feature MSE cost little next to them and are left out."""
    runs = training_runs(profile)
    names = {run.name for run in runs}
    ablations = sum(name in names for name in (LM4LV_ROWS[1], RANDOM_INIT))
    fixed = sum(len(sets[f"sigma{sigma}"]) for sigma in FIXED_SIGMAS)
    strip = validation_strip(PICTURE)
    tiles = len(tile_boxes(strip.height, strip.width, DEMO_MAE_CONFIG["image_size"], PICTURE_TILE_OVERLAP))
    generated = {TABLE_2_STAGE: len(sets["all"]) + ablations * len(sets["denoise"]) + (1 + ablations) * fixed,
                 SHIPPED_STAGE: len(sets["denoise"]), PICTURE_STAGE: tiles * sum(name in names for name in LM4LV_ROWS)}
    projected = {stage: (count * per_crop["lm4lv"], f"{count:,} crops generated") for stage, count in generated.items()}
    crops_per_task = collections.Counter(sets["all"]["task"])
    baselines = [(run.method, crops_per_task[run.tasks[0]]) for run in runs if run.method != "lm4lv"]
    projected[TABLE_3_STAGE] = (sum(per_crop[method] * count for method, count in baselines),
                                f"{sum(count for _, count in baselines):,} crops restored in one pass")
    projected[PHOTO_STAGE] = photo_stage_seconds(profile, per_crop, classical)
    return projected


def projection_table(profile: Profile, measured: dict, rates: dict, evaluation: dict) -> str:
    """The projected wall time of every stage of `profile` and of the whole run, as a markdown table: training from
    `rates` (method -> seconds a step), evaluation from `evaluation` (`evaluation_seconds`), the rest `measured`."""
    by_stage = {run.stage: run for run in training_runs(profile)}
    rows, total = [], 0.0
    for stage in planned_stages(profile):
        if stage in by_stage:
            run = by_stage[stage]
            per_step = rates[run.method]
            seconds = per_step * run.steps
            basis = (f"{profile.batch_size / per_step:,.0f} samples/s ({per_step * 1000:.1f} ms a step), "
                     f"{run.steps} steps")
        elif stage in evaluation:
            seconds, basis = evaluation[stage]
        else:
            seconds, basis = measured[stage], "measured now" if measured[stage] else "cached"
        total += seconds
        rows.append(f"| {stage} | {basis} | {seconds:,.1f} |")
    return "\n".join(["| stage | basis | projected wall time (s) |", "| --- | --- | --- |", *rows,
                      f"| **whole run** | | **{total:,.1f}** ({total / 60:.1f} min) |"])


def estimate_demo(profile_name: str, output_dir: str, cache_dir: str | None = None, llm: str | None = None) -> str:
    """Measure this machine's speed on `profile_name`'s kinds of training and restoration, print and write
    (`output_dir/estimate.md`) the projected wall time of every stage and of the run; returns the table."""
    profile = PROFILES[profile_name]
    cache_dir = cache_dir or default_cache_dir()
    work_dir = os.path.join(output_dir, "estimate")
    shutil.rmtree(work_dir, ignore_errors=True)
    corpus, measured = bundled_corpus(), {}
    start = time.perf_counter()
    llm = llm or prepare_smollm2(cache_dir)
    measured[CONVERSION_STAGE] = time.perf_counter() - start
    vision, measured[MAE_STAGE] = timed_vision_module(profile, cache_dir, corpus, work_dir)
    start = time.perf_counter()
    sets = evaluation_sets(corpus, profile, work_dir)
    measured[SETS_STAGE] = time.perf_counter() - start
    rates = timed_training(profile, llm, vision, work_dir, cache_dir)
    per_crop = {method: seconds_per_restored_crop(summary) for method, (_, summary) in rates.items()}
    table = projection_table(profile, measured, {method: rate for method, (rate, _) in rates.items()},
                             evaluation_seconds(profile, sets, per_crop, classical_seconds_per_megapixel()))
    text = (f"# Projected wall time of `lm4lv demo --profile {profile_name}`\n\n"
            f"Measured on {torch.cuda.get_device_name() if torch.cuda.is_available() else 'the CPU'}: "
            f"{WARMUP_STEPS} untimed then {TIMED_STEPS} timed training steps of each kind of run, one batch of "
            f"{EVAL_BATCH} crops restored ({per_crop['lm4lv'] * 1000:.1f} ms a crop generated).\n\n{table}\n")
    write_text_atomically(os.path.join(output_dir, "estimate.md"), text)
    shutil.rmtree(work_dir, ignore_errors=True)
    print(text)
    return table
