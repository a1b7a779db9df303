"""LM4LV model package: config, model, vision modules; registers `lm4lv` with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel

from .configuration_lm4lv import LM4LVConfig
from .modeling_lm4lv import (
    LM4LVCausalLMOutput,
    LM4LVForConditionalGeneration,
    LM4LVGenerateOutput,
    LM4LVPreTrainedModel,
    export_remote_code,
)
from .vision import MAEVisionModule

AutoConfig.register("lm4lv", LM4LVConfig, exist_ok=True)
AutoModel.register(LM4LVConfig, LM4LVForConditionalGeneration, exist_ok=True)

__all__ = [
    "LM4LVConfig",
    "LM4LVForConditionalGeneration",
    "LM4LVPreTrainedModel",
    "LM4LVCausalLMOutput",
    "LM4LVGenerateOutput",
    "MAEVisionModule",
    "export_remote_code",
]
