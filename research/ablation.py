"""The paper's comparisons: methods x tasks, trained by `train()` and scored on the same held-out crops; one
Markdown + JSON table and a PNG grid per task (`lm4lv ablate`)."""

import json
import os
import platform
import time

import torch
from transformers import AutoConfig, set_seed

from lm4lv.modeling_lm4lv import load_vision_module
from lm4lv.modeling_lm4lv.hub_files import recorded_location, write_text_atomically
from lm4lv.modeling_lm4lv.vision import reconstruct_images
from lm4lv.processing.data import load_image_dataset, materialize_eval_set
from lm4lv.processing.visualization import image_grid
from lm4lv.research.offline_default import RECIPE
from lm4lv.trainers.evaluation import (
    CLEAN,
    DEGRADED,
    LM4LV,
    baseline_methods,
    evaluate_restoration,
    feature_errors,
    grid_columns,
    restore,
)
from lm4lv.trainers.trainer import LM4LVTrainingArguments
from lm4lv.trainers.training import DataArguments, ModelArguments, train

# The lever study's base pair: `in_adapter` in the token embeddings' subspace and no loss on the forced delimiters
# (the `subspace_nodelim_*` methods add one further lever to it)
SUBSPACE_NODELIM = {"in_adapter_init": "embedding_subspace", "delimiter_loss_weight": 0.0}
# the paper's comparisons (and LoRA); `lm4lv ablate` runs these by default
PAPER_METHODS = ("lm4lv", "linear", "mlp", "transformer", "random_init_llm", "vit_llm", "lora", "autoencoder_kl")
# beyond the paper: ONE LM4LV model for all the run's tasks (shared adapters, task tokens per task), trained for the
# steps of all the per-task models together and scored on each task's evaluation set
MULTI_TASK = "lm4lv_multitask"
RECIPE_METHODS = (*PAPER_METHODS, MULTI_TASK)  # the methods `recipe` applies to
# key: (label, ModelArguments overrides, LM4LVTrainingArguments overrides); after the paper's methods, the
# sample-efficiency levers (options of the model and trainer; the paper's method leaves them off)
ABLATION_METHODS = {
    "lm4lv": (LM4LV, {}, {}),
    "linear": ("Linear only", {"method": "linear"}, {}),
    "mlp": ("2-layer MLP", {"method": "mlp"}, {}),
    "transformer": ("1-layer Transformer", {"method": "transformer"}, {}),
    "random_init_llm": ("Random-init LLM", {"method": "random_init_llm"}, {}),
    "vit_llm": ("ViT-LLM (no AR)", {"method": "vit_llm"}, {}),
    "lora": ("LoRA r=8", {"lora_r": 8}, {}),
    "autoencoder_kl": ("LM4LV + AutoencoderKL", {}, {}),
    MULTI_TASK: ("LM4LV, one model for all tasks", {}, {}),
    "embedding_init": ("LM4LV, in_adapter in the embedding subspace", {"in_adapter_init": "embedding_subspace"}, {}),
    "no_delimiter_loss": ("LM4LV, no loss on forced delimiters", {"delimiter_loss_weight": 0.0}, {}),
    "subspace_nodelim": ("LM4LV, both levers", SUBSPACE_NODELIM, {}),
    "subspace_nodelim_ridge_out_adapter": ("both + ridge out_adapter init",
                                           SUBSPACE_NODELIM | {"out_adapter_init": "ridge"}, {}),
    "subspace_nodelim_teacher_forced_noise": ("both + teacher-forced input noise 0.3",
                                              SUBSPACE_NODELIM | {"teacher_forced_noise": 0.3}, {}),
    "subspace_nodelim_pixel_loss": ("both + pixel loss 1.0", SUBSPACE_NODELIM | {"pixel_loss_weight": 1.0}, {}),
    "subspace_nodelim_identity_curriculum": ("both + identity curriculum (first 100 steps)", SUBSPACE_NODELIM,
                                             {"identity_curriculum_steps": 100}),
    "subspace_nodelim_constant_lr": ("both + constant LR after warmup", SUBSPACE_NODELIM,
                                     {"lr_scheduler_type": "constant_with_warmup"}),
    "subspace_nodelim_batch_8": ("both + batch 8", SUBSPACE_NODELIM, {"per_device_train_batch_size": 8}),
    "subspace_nodelim_bf16_llm": ("both + bfloat16 frozen LLM", SUBSPACE_NODELIM | {"llm_dtype": "bfloat16"}, {}),
    # the schedule and dtype levers on top of the package's recipe instead of the pair
    "recipe_identity_curriculum": ("recipe + identity curriculum (first 100 steps)", RECIPE,
                                   {"identity_curriculum_steps": 100}),
    "recipe_constant_lr": ("recipe + constant LR after warmup", RECIPE, {"lr_scheduler_type": "constant_with_warmup"}),
    "recipe_bf16_llm": ("recipe + bfloat16 frozen LLM", RECIPE | {"llm_dtype": "bfloat16"}, {}),
}


def vision_reconstruct(vision_model):
    """The reconstruction of any vision module (`reconstruct_images`): `fn(degraded) -> reconstructed`."""
    return lambda degraded: reconstruct_images(vision_model, degraded)


def train_method(key: str, run_tasks: list[str], llm: str, vision: str, output_dir: str, settings: dict,
                 dataset: str | None) -> tuple:
    """Train method `key` of `ABLATION_METHODS` on `run_tasks` (one model) with the run's settings; returns the
    trainer and the training time in seconds."""
    _, model_overrides, training_overrides = ABLATION_METHODS[key]
    base = settings["recipe"] if key in RECIPE_METHODS else {}
    model_args = ModelArguments(llm=llm, vision=settings["autoencoder_kl"] if key == "autoencoder_kl" else vision,
                                **{**base, **model_overrides})
    max_steps = settings["max_steps"]
    training_args = LM4LVTrainingArguments(**{
        "output_dir": os.path.join(output_dir, "runs", f"{key}-{'-'.join(run_tasks)}"),
        "per_device_train_batch_size": settings["batch_size"], "learning_rate": settings["learning_rate"],
        "warmup_steps": min(20, max_steps // 10), "max_steps": max_steps * len(run_tasks),
        "logging_steps": max(1, max_steps // 10), "save_strategy": "no", "use_cpu": not torch.cuda.is_available(),
        "seed": settings["seed"], "dataloader_num_workers": 0, "report_to": [], **training_overrides,
    })
    set_seed(settings["seed"])
    start = time.time()
    trainer = train(model_args, DataArguments(task=",".join(run_tasks), dataset=dataset), training_args)
    return trainer, time.time() - start


def score_method(trainer, seconds: float, label: str, eval_set, task: str) -> tuple[dict, list]:
    """Scores and feature errors of a trained method on one task's held-out crops; returns the entry for the
    results and the method's grid column."""
    model, processor = trainer.model.eval(), trainer.processing_class
    scores, examples = evaluate_restoration(
        eval_set, {label: lambda degraded, task: restore(model, processor, degraded, task)}
    )
    entry = {**scores[task][label], **feature_errors(model, processor, eval_set, task),
             "train_seconds": round(seconds, 1), "steps": trainer.state.global_step,
             "final_loss": next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None)}
    return entry, [row[1] for row in examples[task]]


def run_settings(llm, vision, autoencoder_kl, max_steps, learning_rate, batch_size, eval_samples, seed,
                 recipe) -> dict:
    """The settings a run records (and `train_method` reads)."""
    return {"llm": llm, "vision": vision, "autoencoder_kl": autoencoder_kl, "max_steps": max_steps,
            "learning_rate": learning_rate, "batch_size": batch_size, "eval_samples": eval_samples, "seed": seed,
            "recipe": recipe or {},
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                       f"CPU kernels {torch.backends.cpu.get_cpu_capability()}"}


def run_ablation(llm: str, vision: str, methods: list[str], tasks: list[str], output_dir: str, max_steps: int,
                 learning_rate: float = 1e-3, batch_size: int = 4, eval_samples: int = 32, dataset: str | None = None,
                 autoencoder_kl: str | None = None, seed: int = 0, recipe: dict | None = None) -> dict:
    """Train and score every method on every task; write the table, JSON and grids. Returns the results. `recipe`
    (LM4LV options such as `offline_default.RECIPE`) is applied to the paper's methods (`RECIPE_METHODS`) under their
    own overrides; the lever methods state their options in full."""
    unknown = sorted(set(methods) - set(ABLATION_METHODS))
    if unknown:
        raise ValueError(f"Unknown methods {unknown}; choose from {sorted(ABLATION_METHODS)}")
    if "autoencoder_kl" in methods and not autoencoder_kl:
        raise ValueError("Method autoencoder_kl needs --autoencoder_kl (a folder written by DiffusersVisionModule)")
    baselines = baseline_methods(vision_reconstruct(load_vision_module(vision).eval()))
    if "autoencoder_kl" in methods:
        reconstruct_kl = vision_reconstruct(load_vision_module(autoencoder_kl).eval())
        baselines["AutoencoderKL-r"] = lambda degraded, task: reconstruct_kl(degraded)
    image_size = AutoConfig.from_pretrained(vision).image_size
    evaluation_images = load_image_dataset(dataset, "validation")
    settings = run_settings(llm, vision, autoencoder_kl, max_steps, learning_rate, batch_size, eval_samples, seed,
                            recipe)
    results, multi_task_runs = {"settings": settings, "methods": {}, "baselines": {}}, {}
    for task in tasks:
        eval_set = materialize_eval_set(evaluation_images, [task], image_size,
                                        os.path.join(output_dir, "eval_sets", task), seed=1234, limit=eval_samples)
        scores, examples = evaluate_restoration(eval_set, baselines)
        columns = {name: [row[1 + i] for row in examples[task]] for i, name in enumerate(grid_columns(baselines))}
        results["baselines"][task] = scores[task]
        for key in methods:
            label = ABLATION_METHODS[key][0]
            if key in multi_task_runs:  # the multi-task model was trained at the first task; scored on every task
                trainer, seconds = multi_task_runs[key], 0.0
            else:
                trainer, seconds = train_method(key, tasks if key == MULTI_TASK else [task], llm, vision, output_dir,
                                                settings, dataset)
                if key == MULTI_TASK:
                    multi_task_runs[key] = trainer
            entry, columns[label] = score_method(trainer, seconds, label, eval_set, task)
            results["methods"].setdefault(label, {"key": key, "trainable_parameters":
                trainer.model.num_parameters(only_trainable=True), "tasks": {}})["tasks"][task] = entry
        rows = [[row[0], *(column[i] for column in columns.values()), row[-1]] for i, row in enumerate(examples[task])]
        image_grid(rows, column_labels=[DEGRADED, *columns, CLEAN]).save(
            os.path.join(output_dir, f"grid_{task}.png"))
    write_ablation(results, tasks, output_dir)
    return results


def ablation_markdown(results: dict, tasks: list[str]) -> str:
    """Methods as rows: trainable parameters, PSNR / SSIM (mean over the evaluation set) per task, the feature MSE
    with teacher forcing and with generation per task (their gap is the exposure bias), training time."""
    header = ("| Method | Trainable params | " + " | ".join(f"{t} PSNR / SSIM" for t in tasks) + " | "
              + " | ".join(f"{t} feature MSE: teacher-forced / generated" for t in tasks) + " | Train time |")
    lines = [header, "|" + " --- |" * (2 * len(tasks) + 3)]

    def cells(by_task):
        return " | ".join(f"{by_task[t]['psnr']['mean']:.2f} / {by_task[t]['ssim']['mean']:.4f}" for t in tasks)

    def errors(by_task):
        return " | ".join(f"{by_task[t]['teacher_forced_mse']:.4f} / {by_task[t]['generated_mse']:.4f}"
                          if "generated_mse" in by_task[t] else "-" for t in tasks)

    for name in next(iter(results["baselines"].values())):
        dashes = " | ".join("-" for _ in tasks)
        lines.append(f"| {name} | - | {cells({t: results['baselines'][t][name] for t in tasks})} | {dashes} | - |")
    for label, entry in results["methods"].items():
        seconds = sum(entry["tasks"][t]["train_seconds"] for t in tasks)
        lines.append(f"| {label} | {entry['trainable_parameters']:,} | {cells(entry['tasks'])} | "
                     f"{errors(entry['tasks'])} | {seconds / 60:.1f} min |")
    return "\n".join(lines)


def write_ablation(results: dict, tasks: list[str], output_dir: str):
    """Write `ablation.json` (the base models by `recorded_location`) and `ablation.md`, each completely or not at
    all, and print the table."""
    os.makedirs(output_dir, exist_ok=True)
    settings = results["settings"]
    recorded = {**settings, **{key: recorded_location(settings[key]) for key in ("llm", "vision", "autoencoder_kl")
                               if key in settings}}
    write_text_atomically(os.path.join(output_dir, "ablation.json"), json.dumps({**results, "settings": recorded},
                                                                                 indent=2))
    table = ablation_markdown(results, tasks)
    write_text_atomically(
        os.path.join(output_dir, "ablation.md"),
        f"# LM4LV ablations\n\n{table}\n\nEach method: one model per task (the multi-task row: one model for "
        f"all tasks, trained for the sum of their steps), {settings['max_steps']} steps, batch "
        f"{settings['batch_size']}, lr {settings['learning_rate']}, seed {settings['seed']}; "
        f"{settings['eval_samples']} held-out crops per task; PSNR/SSIM with BasicSR conventions (crop border "
        f"4). Recipe of the paper's methods: {settings['recipe'] or 'the paper'}. Training time is the sum over "
        f"tasks. Machine: {settings['machine']}.\n",
    )
    print(table)
