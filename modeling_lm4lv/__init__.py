"""LM4LV model package: config, model, vision modules; registers `lm4lv` with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel

from .configuration_lm4lv import DiffusersAutoencoderConfig, LM4LVConfig, TimmVisionConfig
from .modeling_experts import LM4LVExpertConfig, LM4LVExpertModel
from .modeling_lm4lv import (
    LM4LVCausalLMOutput,
    LM4LVForConditionalGeneration,
    LM4LVGenerateOutput,
    LM4LVPreTrainedModel,
)
from .modeling_vit_llm import LM4LVViTLLMConfig, LM4LVViTLLMModel
from .remote_code import export_remote_code
from .vision import (
    DiffusersVisionModule,
    MAEVisionModule,
    TimmVisionModule,
    load_vision_module,
    vision_module_from_config,
)

AutoConfig.register("lm4lv", LM4LVConfig, exist_ok=True)
AutoConfig.register("lm4lv_diffusers_autoencoder", DiffusersAutoencoderConfig, exist_ok=True)
AutoConfig.register("lm4lv_timm_vit", TimmVisionConfig, exist_ok=True)
AutoConfig.register("lm4lv_expert", LM4LVExpertConfig, exist_ok=True)
AutoConfig.register("lm4lv_vit_llm", LM4LVViTLLMConfig, exist_ok=True)
AutoModel.register(LM4LVConfig, LM4LVForConditionalGeneration, exist_ok=True)
AutoModel.register(LM4LVExpertConfig, LM4LVExpertModel, exist_ok=True)
AutoModel.register(LM4LVViTLLMConfig, LM4LVViTLLMModel, exist_ok=True)

__all__ = [
    "LM4LVConfig",
    "LM4LVForConditionalGeneration",
    "LM4LVPreTrainedModel",
    "LM4LVCausalLMOutput",
    "LM4LVGenerateOutput",
    "LM4LVExpertConfig",
    "LM4LVExpertModel",
    "LM4LVViTLLMConfig",
    "LM4LVViTLLMModel",
    "MAEVisionModule",
    "DiffusersAutoencoderConfig",
    "DiffusersVisionModule",
    "TimmVisionConfig",
    "TimmVisionModule",
    "load_vision_module",
    "vision_module_from_config",
    "export_remote_code",
]
