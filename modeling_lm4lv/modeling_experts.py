"""Baselines of the paper's ablations that REPLACE the LLM: a model that maps the degraded image's vision features
straight to the restored image's features, with no language model at all.

- `linear`: one linear map per token (the paper's "linear only");
- `mlp`: a 2-layer MLP per token;
- `transformer`: one pre-norm Transformer encoder layer over the image's tokens (bidirectional, learned positions).

The MLP and Transformer "experts" are sized to about the number of trainable parameters LM4LV has with the same
LLM and vision module (the paper's comparison); the linear map is as large as the features make it.
"""

from typing import Literal, get_args

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from .configuration_lm4lv import LM4LVConfig
from .hub_files import check_safetensors_only
from .modeling_lm4lv import LM4LVCausalLMOutput, LM4LVGenerateOutput
from .vision import VisionFeaturesMixin, load_vision_module, vision_module_from_config

ExpertName = Literal["linear", "mlp", "transformer"]
EXPERTS = get_args(ExpertName)


def one_pass_output(last_hidden_state, predicted, target_features, vision_loss_weight: float) -> LM4LVCausalLMOutput:
    """Output of a one-pass restorer (the expert baselines, the "ViT-LLM" ablation): with targets, the loss is the
    MSE between predicted and target features (there is no text to supervise)."""
    if target_features is None:
        return LM4LVCausalLMOutput(last_hidden_state=last_hidden_state)
    vision_loss = nn.functional.mse_loss(predicted, target_features)
    return LM4LVCausalLMOutput(
        loss=vision_loss_weight * vision_loss,
        text_loss=vision_loss.new_zeros(()),
        vision_loss=vision_loss,
        last_hidden_state=last_hidden_state,
    )


@strict
class LM4LVExpertConfig(LM4LVConfig):
    r"""
    Config of an [`LM4LVExpertModel`]. It is an [`LM4LVConfig`] (so the same processor, collator, trainer and
    evaluation serve it; `text_config` records the LLM it replaces and sets the parameter budget), plus:

    Args:
        expert (`str`, *optional*, defaults to `"linear"`): `"linear"`, `"mlp"` or `"transformer"`.
        expert_hidden_size (`int`, *optional*, defaults to 0): Hidden width of the MLP / feed-forward width of the
            Transformer layer; 0 picks the width that matches LM4LV's trainable-parameter count.
        expert_num_attention_heads (`int`, *optional*, defaults to 4): Attention heads of the Transformer expert.
    """

    model_type = "lm4lv_expert"

    expert: ExpertName = "linear"
    expert_hidden_size: int = 0
    expert_num_attention_heads: int = 4

    def validate_expert(self):
        """Raise a `ValueError` naming the field when a value cannot work."""
        if self.expert_hidden_size < 0:
            raise ValueError(f"expert_hidden_size must be >= 0, got {self.expert_hidden_size}")
        if self.expert == "transformer" and self.vision_hidden_size % self.expert_num_attention_heads:
            raise ValueError(
                f"vision hidden size {self.vision_hidden_size} is not divisible by expert_num_attention_heads "
                f"{self.expert_num_attention_heads}"
            )

    @property
    def lm4lv_trainable_parameters(self) -> int:
        """Trainable parameters of LM4LV with this LLM and vision module: both adapters and the task tokens."""
        vision, text = self.vision_hidden_size, self.text_config.hidden_size
        return 2 * vision * text + vision + text + len(self.task_names) * self.task_token_length * text

    @property
    def resolved_hidden_size(self) -> int:
        """`expert_hidden_size`, or the width that brings the expert closest to `lm4lv_trainable_parameters`."""
        if self.expert_hidden_size:
            return self.expert_hidden_size
        d, budget = self.vision_hidden_size, self.lm4lv_trainable_parameters
        if self.expert == "mlp":  # 2 d h + h + d
            return max(1, round((budget - d) / (2 * d + 1)))
        # transformer: attention 4 d^2 + 4 d, two norms 4 d, positions n d, feed-forward 2 d h + h + d
        fixed = 4 * d * d + 9 * d + self.num_visual_tokens * d
        return max(1, round((budget - fixed) / (2 * d + 1)))


class LM4LVExpertModel(VisionFeaturesMixin, PreTrainedModel):
    r"""
    A no-LLM baseline: the frozen vision module, and a small trainable `expert` from degraded to restored features.
    `forward` and `generate` take the same batches as [`LM4LVForConditionalGeneration`] (the text inputs are ignored)
    and return the same output classes, so the LM4LV training and evaluation scripts run it unchanged.
    """

    config_class = LM4LVExpertConfig
    config: LM4LVExpertConfig
    base_model_prefix = ""
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False  # its loss is a mean: the Trainer divides it by the gradient accumulation steps

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained` from safetensors only (a folder of pickle weights is refused, naming
        the file)."""
        check_safetensors_only(pretrained_model_name_or_path, "expert checkpoint")
        kwargs["use_safetensors"] = True
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def __init__(self, config: LM4LVExpertConfig):
        super().__init__(config)
        self.vision_model = vision_module_from_config(config.vision_config)
        d, hidden = config.vision_hidden_size, config.resolved_hidden_size
        if config.expert == "linear":
            self.expert = nn.Linear(d, d)
        elif config.expert == "mlp":
            self.expert = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        else:
            self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_visual_tokens, d))
            self.expert = nn.TransformerEncoderLayer(
                d, config.expert_num_attention_heads, dim_feedforward=hidden, dropout=0.0, activation="gelu",
                batch_first=True, norm_first=True,
            )
        self.vision_model.requires_grad_(False)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, LM4LVExpertModel) and hasattr(module, "position_embeddings"):
            nn.init.normal_(module.position_embeddings, std=0.02)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def train(self, mode: bool = True):
        """Training mode for the expert; the frozen vision module stays in eval mode."""
        super().train(mode)
        self.vision_model.eval()
        return self

    @classmethod
    def from_vision_module(cls, vision: str, config: LM4LVExpertConfig) -> "LM4LVExpertModel":
        """A fresh expert on a pretrained vision module (Hub id or local folder)."""
        vision_model = load_vision_module(vision)
        config.vision_config = vision_model.config
        config.vision_model_name_or_path = vision
        model = cls(config)
        model.vision_model = vision_model.requires_grad_(False).eval()
        return model

    @classmethod
    def from_llm_and_vision(cls, llm: str, vision: str, expert: str, task_names: list[str], llm_kwargs=None,
                            **config_kwargs) -> "LM4LVExpertModel":
        """An expert replacing the LLM at `llm` (only its config is read, for the parameter budget)."""
        text_config = AutoConfig.from_pretrained(llm, **(llm_kwargs or {}))
        config = LM4LVExpertConfig(
            text_config=text_config.to_dict(), vision_config=AutoConfig.from_pretrained(vision).to_dict(),
            task_names=task_names, expert=expert, text_model_name_or_path=llm, **config_kwargs,
        )
        return cls.from_vision_module(vision, config)

    def restore_features(self, features: torch.Tensor) -> torch.Tensor:
        """The expert applied to `(batch, num_visual_tokens, vision_hidden_size)` features."""
        if self.config.expert == "transformer":
            features = features + self.position_embeddings
        return self.expert(features)

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        target_pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        task_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        text_label_positions: torch.LongTensor | None = None,
        check_inputs: bool = True,
    ) -> LM4LVCausalLMOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, 3, height, width)`): Degraded images.
            target_pixel_values (`torch.FloatTensor`, *optional*): Clean images; the loss is the MSE between the
                restored and the clean images' features.
            input_ids, attention_mask, task_ids, labels, text_label_positions: The rest of an LM4LV training batch,
                accepted so that the same batches serve every model, and not used.
            check_inputs (`bool`, *optional*, defaults to `True`): Refuse non-float and non-finite pixels.
        """
        input_features, target_features = self.encode_input_and_target(pixel_values, target_pixel_values, check_inputs)
        predicted = self.restore_features(input_features)
        return one_pass_output(predicted, predicted, target_features, self.config.vision_loss_weight)

    @torch.no_grad()
    def generate(self, pixel_values: torch.FloatTensor, input_ids: torch.LongTensor | None = None,
                 attention_mask: torch.LongTensor | None = None, task_ids: torch.LongTensor | None = None,
                 max_new_tokens: int | None = None) -> LM4LVGenerateOutput:
        """Restore a batch in one pass; same output class as LM4LV's `generate`. The prompt's text inputs and
        `max_new_tokens` are accepted so that the same calls serve every model, and not used (`sequences` is
        `input_ids`; nothing is generated)."""
        features = self.restore_features(self.encode_images(pixel_values))
        return LM4LVGenerateOutput(
            sequences=input_ids,
            visual_features=features,
            pixel_values=self.decode_features(features),
            has_image=torch.ones(pixel_values.shape[0], dtype=torch.bool, device=pixel_values.device),
        )


__all__ = ["LM4LVExpertConfig", "LM4LVExpertModel"]
