"""Evaluation of LM4LV against the MAE-r baseline on a fixed evaluation set: tables, JSON and picture grids."""

import json
import os
import statistics

import torch
from PIL import Image
from tqdm.auto import tqdm
from transformers import AutoConfig

from lm4lv import metrics
from lm4lv.modeling_lm4lv import (
    LM4LVExpertConfig,
    LM4LVExpertModel,
    LM4LVForConditionalGeneration,
    LM4LVViTLLMConfig,
    LM4LVViTLLMModel,
)
from lm4lv.modeling_lm4lv.hub_files import write_atomically, write_text_atomically
from lm4lv.modeling_lm4lv.shipped import resolve_model_location
from lm4lv.pipelines import mae_reconstruct, restore
from lm4lv.processing.degradations import tensor_to_pil
from lm4lv.processing.images import to_tensor
from lm4lv.processing.visualization import image_grid

# the methods' names in every table, chart and report
INPUT, MAE_R, LM4LV = "Input", "MAE-r", "LM4LV"
# the first and last columns of every picture grid
DEGRADED, CLEAN = "degraded", "clean"


def load_restoration_model(path: str, llm: str | None = None, vision: str | None = None,
                           llm_dtype: str | None = None, device: str | None = None):
    """An LM4LV checkpoint (LM4LV or ViT-LLM, trainable-only or full) or an expert baseline, by its config, in
    eval mode on `device` (default: CUDA when available). `llm` / `vision` override the base model locations an LM4LV
    checkpoint names; `llm_dtype` (float32, bfloat16 or float16) is the frozen LLM's dtype (default: the one it was
    trained with; trainables stay float32). `path` may also name a model shipped inside the package."""
    path = resolve_model_location(path)
    config = AutoConfig.from_pretrained(path)
    if isinstance(config, LM4LVExpertConfig):
        model = LM4LVExpertModel.from_pretrained(path)
    else:
        model_class = LM4LVViTLLMModel if isinstance(config, LM4LVViTLLMConfig) else LM4LVForConditionalGeneration
        model = model_class.from_pretrained(path, llm=llm, vision=vision,
                                            dtype=getattr(torch, llm_dtype) if llm_dtype else None)
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()


def baseline_methods(reconstruct) -> dict:
    """The paper's two baselines as `evaluate_restoration` methods, by name: the degraded input itself (`INPUT`) and
    MAE-r (`MAE_R`; `reconstruct(degraded)`: the vision module's reconstruction)."""
    return {INPUT: lambda degraded, task: degraded, MAE_R: lambda degraded, task: reconstruct(degraded)}


def restoration_methods(model, processor) -> dict:
    """The paper's comparison for `evaluate_restoration`: the degraded input, MAE-r and LM4LV, by name."""
    return baseline_methods(lambda degraded: mae_reconstruct(model, degraded)) | {
        LM4LV: lambda degraded, task: restore(model, processor, degraded, task)
    }


def task_batches(eval_set, task: str, batch_size: int):
    """`(degraded, clean)` batches of `(B, 3, H, W)` tensors in [0, 1] for the rows of `eval_set` of `task`."""
    subset = eval_set.filter(lambda row: row["task"] == task)
    for start in range(0, len(subset), batch_size):
        rows = subset[start : start + batch_size]
        yield (torch.stack([to_tensor(image) for image in rows["degraded"]]),
               torch.stack([to_tensor(image) for image in rows["clean"]]))


@torch.no_grad()
def feature_errors(model, processor, eval_set, task: str, batch_size: int = 16) -> dict:
    """Exposure bias on held-out pairs of `task`: the MSE between predicted and clean-image features when the model
    is fed the clean features (teacher forcing: the training loss) and when it is fed its own predictions
    (`generate()`), their gap, and the generated MSE at each visual token position (`generated_mse_by_position`:
    how the error grows along the image as the model feeds itself). One-pass models (experts, ViT-LLM) have no gap."""
    teacher_forced, squared_error_by_position, count = 0.0, 0.0, 0
    for degraded, clean in task_batches(eval_set, task, batch_size):
        batch = processor(images=degraded, targets=clean, task=task).to(model.device)
        teacher_forced += model(**batch).vision_loss.item() * len(degraded)
        generated = model.generate(**processor(images=degraded, task=task).to(model.device)).visual_features
        target = model.encode_images(batch["target_pixel_values"])
        squared_error_by_position = squared_error_by_position + (generated.float() - target).pow(2).mean(-1).sum(0)
        count += len(degraded)
    by_position = (squared_error_by_position / count).cpu()
    errors = {"teacher_forced_mse": teacher_forced / count, "generated_mse": by_position.mean().item()}
    return {**errors, "gap": errors["generated_mse"] - errors["teacher_forced_mse"],
            "generated_mse_by_position": [round(value, 4) for value in by_position.tolist()]}


@torch.no_grad()
def input_feature_mse(model, processor, eval_set, task: str, batch_size: int = 16) -> float:
    """MAE-r on the vision loss's scale: the MSE between the degraded and the clean image's features on held-out pairs
    of `task`. A model whose generated features have a lower MSE predicts the clean image better than a copy of its
    input's features (which is what MAE-r decodes)."""
    total, count = 0.0, 0
    for degraded, clean in task_batches(eval_set, task, batch_size):
        batch = processor(images=degraded, targets=clean, task=task).to(model.device)
        features, target = model.encode_images(batch["pixel_values"]), model.encode_images(batch["target_pixel_values"])
        total += torch.nn.functional.mse_loss(features, target).item() * len(degraded)
        count += len(degraded)
    return total / count


def compare_on_picture(restorers: dict, degraded: Image.Image, clean: Image.Image, path: str,
                       crop_border: int = 4) -> dict:
    """Restore one whole picture with each of `restorers` (name -> `fn(PIL image) -> PIL image`, e.g. an
    `LM4LVRestorationPipeline` with its task bound), score it against `clean` (PSNR/SSIM) and save degraded / each
    result / clean side by side to `path`. Returns `{name: {"psnr": ..., "ssim": ...}}`."""
    outputs = {name: function(degraded) for name, function in restorers.items()}
    scores = {
        name: {"psnr": metrics.psnr(output, clean, crop_border=crop_border),
               "ssim": metrics.ssim(output, clean, crop_border=crop_border)}
        for name, output in outputs.items()
    }
    row = [to_tensor(image) for image in (degraded, *outputs.values(), clean)]
    labels = [DEGRADED, *(f"{name} {scores[name]['psnr']:.2f} dB" for name in outputs), CLEAN]
    image_grid([row], column_labels=labels, scale=2).save(path)
    return scores


def summarise(values: list[float]) -> dict:
    finite = [v for v in values if v != float("inf")]
    return {
        "mean": statistics.fmean(finite) if finite else float("inf"),
        "median": statistics.median(values),
        "count": len(values),
    }


def evaluate_restoration(
    eval_set,
    methods: dict,
    batch_size: int = 16,
    crop_border: int = 4,
    grid_samples: int = 6,
) -> tuple[dict, dict]:
    r"""
    Score restoration methods on a fixed evaluation set.

    Args:
        eval_set: A dataset with `degraded`, `clean` (PIL images) and `task` columns (see
            `lm4lv.processing.data.materialize_eval_set`).
        methods (`dict[str, callable]`): Name -> `fn(degraded (B, 3, H, W) in [0, 1], task) -> restored` in [0, 1].
            Typically `restoration_methods`: `INPUT` (identity), `MAE_R` and `LM4LV`.
        batch_size (`int`): Images per call.
        crop_border (`int`): BasicSR crop border for PSNR/SSIM.
        grid_samples (`int`): How many samples per task are kept for the picture grids.

    Returns:
        `(results, examples)`: `results[task][method] = {"psnr": {...}, "ssim": {...}}` with mean/median/count, and
        `examples[task]` = rows of `[degraded, method outputs..., clean]` tensors for `image_grid` (without the
        `INPUT` method, which is the degraded column).
    """
    psnr_metric, ssim_metric = metrics.load("psnr"), metrics.load("ssim")
    grid_methods = grid_columns(methods)
    results, examples = {}, {}
    task_column = list(eval_set["task"])
    tasks = sorted(set(task_column))
    for task in tasks:
        scores = {name: {"psnr": [], "ssim": []} for name in methods}
        examples[task] = []
        batches = task_batches(eval_set, task, batch_size)
        total = -(-task_column.count(task) // batch_size)
        for degraded, clean in tqdm(batches, total=total, desc=f"Evaluating {task}", unit="batch"):
            outputs = {name: method(degraded, task).float().cpu() for name, method in methods.items()}
            references = [tensor_to_pil(image) for image in clean]
            for name, restored in outputs.items():
                predictions = [tensor_to_pil(image) for image in restored]
                for metric, module in (("psnr", psnr_metric), ("ssim", ssim_metric)):
                    scores[name][metric] += module.compute(
                        predictions=predictions, references=references, crop_border=crop_border
                    )["scores"]
            for i in range(min(len(degraded), grid_samples - len(examples[task]))):
                examples[task].append([degraded[i]] + [outputs[name][i] for name in grid_methods] + [clean[i]])
        results[task] = {
            name: {metric: summarise(values) for metric, values in method_scores.items()}
            for name, method_scores in scores.items()
        }
    return results, examples


def grid_labels(method_names) -> list[str]:
    """The column labels of a picture grid of `method_names`: `DEGRADED`, the methods of `grid_columns`, `CLEAN`."""
    return [DEGRADED, *grid_columns(method_names), CLEAN]


def grid_columns(method_names) -> list[str]:
    """The methods shown in picture grids: all but `INPUT`, which the grids' `DEGRADED` column already shows."""
    return [name for name in method_names if name != INPUT]


def results_markdown(results: dict, baseline: str = MAE_R, ours: tuple[str, ...] = (LM4LV,)) -> str:
    """A paper-style Markdown table: tasks as rows, PSNR / SSIM per method, and the gain of each of `ours` (those
    present) over `baseline`."""
    methods = list(next(iter(results.values())))
    gains = [name for name in ours if name in methods] if baseline in methods else []
    header = "| Task | " + " | ".join(f"{m} PSNR / SSIM" for m in methods)
    header += "".join(f" | Gain ({name} - {baseline})" for name in gains) + " |"
    lines = [header, "|" + " --- |" * (len(methods) + 1 + len(gains))]
    for task, by_method in results.items():
        cells = [f"{by_method[m]['psnr']['mean']:.2f} / {by_method[m]['ssim']['mean']:.4f}" for m in methods]
        for name in gains:
            gain_psnr = by_method[name]["psnr"]["mean"] - by_method[baseline]["psnr"]["mean"]
            gain_ssim = by_method[name]["ssim"]["mean"] - by_method[baseline]["ssim"]["mean"]
            cells.append(f"{gain_psnr:+.2f} dB / {gain_ssim:+.4f}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(results: dict, examples: dict, output_dir: str, method_names: list[str]) -> dict:
    """Write `results.json`, `results.md` and one `grid_<task>.png` per task, each completely or not at all; returns
    the paths."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, "results.json"), "markdown": os.path.join(output_dir, "results.md")}
    write_text_atomically(paths["json"], json.dumps(results, indent=2))
    write_text_atomically(paths["markdown"], results_markdown(results) + "\n")
    for task, rows in examples.items():
        path = os.path.join(output_dir, f"grid_{task}.png")
        write_atomically(path, image_grid(rows, column_labels=grid_labels(method_names)).save)
        paths[f"grid_{task}"] = path
    return paths


__all__ = [
    "CLEAN",
    "DEGRADED",
    "INPUT",
    "LM4LV",
    "MAE_R",
    "baseline_methods",
    "load_restoration_model",
    "compare_on_picture",
    "evaluate_restoration",
    "grid_labels",
    "feature_errors",
    "input_feature_mse",
    "mae_reconstruct",
    "restore",
    "restoration_methods",
    "results_markdown",
    "write_results",
]
