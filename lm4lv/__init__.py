"""LM4LV: a frozen large language model for low-level vision, Hugging Face-native.

    from lm4lv import LM4LVConfig, LM4LVForConditionalGeneration, LM4LVProcessor, LM4LVRestorationPipeline
    restorer = transformers.pipeline("image-restoration")      # the denoiser shipped with the package
    restorer = transformers.pipeline("image-restoration", model="path/to/checkpoint")

Submodules: `lm4lv.modeling_lm4lv` (config, model, vision modules, baselines), `lm4lv.processing` (processor,
degradations, datasets), `lm4lv.pipelines` (the restoration pipeline), `lm4lv.trainers` (Trainer pieces, evaluation),
`lm4lv.research` (the offline default, the demo, the ablations), `lm4lv.metrics` (PSNR/SSIM and their `evaluate`
modules), `lm4lv.cli` (the `lm4lv` command).
Importing `lm4lv` registers the `lm4lv` model type with the transformers Auto classes and the "image-restoration"
pipeline task.
"""

from .modeling_lm4lv import LM4LVConfig, LM4LVForConditionalGeneration
from .pipelines import LM4LVRestorationPipeline
from .processing import LM4LVProcessor

__version__ = "0.3.0"

__all__ = ["LM4LVConfig", "LM4LVForConditionalGeneration", "LM4LVProcessor", "LM4LVRestorationPipeline"]
