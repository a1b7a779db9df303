"""Pipelines: `LM4LVRestorationPipeline`, registered with transformers as the task "image-restoration"."""

from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .image_restoration import LM4LVRestorationPipeline, mae_reconstruct, restore

PIPELINE_TASK = "image-restoration"
PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=LM4LVRestorationPipeline, pt_model=AutoModel,
                                    type="image")

__all__ = ["LM4LVRestorationPipeline", "PIPELINE_TASK", "mae_reconstruct", "restore"]
