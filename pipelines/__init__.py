"""Pipelines: `LM4LVRestorationPipeline`, registered with transformers as the task "image-restoration" (its default
model: the shipped denoiser), and the export of a checkpoint with the pipeline's code for `trust_remote_code=True`
(`export_with_pipeline`)."""

from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from lm4lv.modeling_lm4lv.shipped import DEFAULT_MODEL, shipped_model_path, shipped_models

from .image_restoration import LM4LVRestorationPipeline, mae_reconstruct, restore, restore_tiled
from .remote_code import PIPELINE_TASK, export_with_pipeline

# `pipeline("image-restoration")` with no model restores with the denoiser shipped inside the package
DEFAULT_PIPELINE_MODEL = {"model": (shipped_model_path(DEFAULT_MODEL), "main")} if DEFAULT_MODEL in shipped_models() \
    else None
PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=LM4LVRestorationPipeline, pt_model=AutoModel,
                                    default=DEFAULT_PIPELINE_MODEL, type="image")

__all__ = ["LM4LVRestorationPipeline", "PIPELINE_TASK", "export_with_pipeline", "mae_reconstruct", "restore",
           "restore_tiled"]
