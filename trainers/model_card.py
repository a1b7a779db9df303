"""Model cards (huggingface_hub `ModelCard`) and Hub uploads for LM4LV checkpoints."""

import os
import tempfile
from importlib import resources

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from lm4lv.modeling_lm4lv.hub_files import looks_like_hub_id
from lm4lv.trainers.evaluation import LM4LV, results_markdown

# the repository's model_card.md, shipped in the wheel
TEMPLATE_PATH = str(resources.files("lm4lv") / "model_card.md")


def eval_results_from(results: dict, dataset_name: str, method: str = LM4LV) -> list[EvalResult]:
    """`EvalResult`s (PSNR and SSIM per task) of `method` from an `evaluate_restoration` results dict: one entry
    per task (its evaluation set is the dataset's config) and metric."""
    return [EvalResult(task_type="image-to-image", task_name=task, dataset_type=dataset_name, dataset_name=dataset_name,
                       dataset_config=task, metric_type=metric, metric_name=metric.upper(),
                       metric_value=round(by_method[method][metric]["mean"], 4))
            for task, by_method in results.items() for metric in ("psnr", "ssim")]


def build_model_card(model, repo_id: str, results: dict | None = None, dataset_name: str = "lm4lv-bundled-crops",
                     training_summary: str = "", full_checkpoint: bool = False,
                     base_models: tuple[str, str] | None = None) -> ModelCard:
    """Render `model_card.md` for `model` with its base models (`(llm, vision)`; default: the locations its config
    names), tasks, parameter count and evaluation results."""
    config = model.config
    llm, vision = base_models or (config.text_model_name_or_path or config.text_config.model_type,
                                  config.vision_model_name_or_path or config.vision_config.model_type)
    card_data = ModelCardData(
        library_name="transformers",
        license="apache-2.0",
        base_model=[name for name in (llm, vision) if looks_like_hub_id(name)] or None,  # Hub ids only
        datasets=[dataset_name] if looks_like_hub_id(dataset_name) else None,
        tags=["lm4lv", "image-restoration", "low-level-vision", "frozen-llm", *config.task_names],
        pipeline_tag="image-to-image",
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results_from(results, dataset_name) if results else None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=TEMPLATE_PATH,
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        llm=llm,
        vision=vision,
        tasks=", ".join(config.task_names),
        first_task=config.task_names[0],
        trainable_parameters=f"{sum(t.numel() for t in model.trainable_state_dict().values()):,}",
        num_visual_tokens=config.num_visual_tokens,
        image_size=config.vision_config.image_size,
        task_token_length=config.task_token_length,
        checkpoint_kind="full (all weights in this repository)" if full_checkpoint else
        "trainable weights only (the config names the base models, which `from_pretrained` loads)",
        results_table=results_markdown(results) if results else "No evaluation recorded.",
        training_summary=training_summary or "See the LM4LV repository's `examples/run_restoration.py`.",
    )


def push_to_hub(model, processor, repo_id: str, results: dict | None = None, full_checkpoint: bool = False,
                private: bool = False, token: str | None = None, commit_message: str = "Upload LM4LV model",
                **card_kwargs) -> str:
    r"""
    Upload config, weights (trainable-only by default, or everything with `full_checkpoint=True`), processor files
    and the rendered model card in one commit. Returns the commit URL.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, save_full=full_checkpoint)
        processor.save_pretrained(folder)
        build_model_card(model, repo_id, results, full_checkpoint=full_checkpoint, **card_kwargs).save(
            os.path.join(folder, "README.md")
        )
        return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message)


__all__ = ["build_model_card", "eval_results_from", "push_to_hub"]
