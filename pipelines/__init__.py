"""Pipelines: `LM4LVRestorationPipeline`, registered with transformers as the task "image-restoration", and the
export of a checkpoint with the pipeline's code for `trust_remote_code=True` (`export_with_pipeline`)."""

from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .image_restoration import LM4LVRestorationPipeline, mae_reconstruct, restore
from .remote_code import PIPELINE_TASK, export_with_pipeline

PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=LM4LVRestorationPipeline, pt_model=AutoModel,
                                    type="image")

__all__ = ["LM4LVRestorationPipeline", "PIPELINE_TASK", "export_with_pipeline", "mae_reconstruct", "restore"]
