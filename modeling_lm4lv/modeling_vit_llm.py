"""The paper's "ViT-LLM" ablation: the frozen LLM used as a one-pass, non-autoregressive feature mapper.

The prompt (degraded image and task tokens; the answer of a training batch is dropped) goes through the LLM in ONE
forward pass with no causal mask and no positional information (all position ids 0, i.e. a rotation by angle 0 for
rotary models); the restored features are `out_adapter` of the hidden states at the degraded image's own positions.
It takes the same processor batches and is trained, saved and scored the same way as LM4LV.
"""

import torch
from huggingface_hub.dataclasses import strict
from transformers.masking_utils import create_bidirectional_mask

from .configuration_lm4lv import LM4LVConfig
from .loss_lm4lv import IGNORE_INDEX
from .modeling_experts import one_pass_output
from .modeling_lm4lv import LM4LVCausalLMOutput, LM4LVForConditionalGeneration, LM4LVGenerateOutput


@strict
class LM4LVViTLLMConfig(LM4LVConfig):
    r"""Config of an [`LM4LVViTLLMModel`]: the same fields as [`LM4LVConfig`], its own `model_type` so that
    checkpoints load into the right class."""

    model_type = "lm4lv_vit_llm"


class LM4LVViTLLMModel(LM4LVForConditionalGeneration):
    r"""
    "ViT-LLM": LM4LV's parts (frozen LLM and vision module, linear adapters, task tokens) with one bidirectional,
    position-free pass instead of autoregressive generation.
    """

    config_class = LM4LVViTLLMConfig

    def restore_features(self, input_ids, attention_mask, input_features, task_ids) -> tuple[torch.Tensor, ...]:
        """`(last hidden state, restored features)` of one pass over a prompt batch."""
        inputs_embeds = self.build_inputs_embeds(input_ids, input_features, task_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        full_attention = create_bidirectional_mask(
            config=self.language_model.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            allow_is_bidirectional_skip=False,
        )
        hidden_states = self.text_backbone(
            inputs_embeds=inputs_embeds,
            attention_mask=full_attention,
            position_ids=torch.zeros_like(input_ids),
            use_cache=False,
        ).last_hidden_state
        image_states = hidden_states[input_ids == self.config.image_token_id].view(*input_features.shape[:2], -1)
        predicted = self.out_adapter(image_states.float())
        if self.config.visual_skip_connection:
            predicted = predicted + input_features
        return hidden_states, predicted

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        target_pixel_values: torch.FloatTensor | None = None,
        task_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        text_label_positions: torch.LongTensor | None = None,
        check_inputs: bool = True,
    ) -> LM4LVCausalLMOutput:
        r"""
        Takes [`LM4LVForConditionalGeneration.forward`]'s batches. With `labels` (a training batch) the answer they
        mark is dropped and the loss is the MSE between the restored and the clean images' features.
        `position_ids` and `text_label_positions` are accepted with the batch and not used: the pass has no
        positions and supervises no text.
        """
        if pixel_values is None:
            raise ValueError("The ViT-LLM pass needs pixel_values (the degraded images)")
        input_ids, attention_mask = prompt_part(input_ids, attention_mask, labels)
        input_features, target_features = self.encode_input_and_target(pixel_values, target_pixel_values, check_inputs)
        hidden_states, predicted = self.restore_features(input_ids, attention_mask, input_features, task_ids)
        return one_pass_output(hidden_states, predicted, target_features, self.config.vision_loss_weight)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        task_ids: torch.LongTensor | None = None,
        max_new_tokens: int | None = None,
    ) -> LM4LVGenerateOutput:
        """Restore a prompt batch in one pass; `sequences` is the prompt (nothing is generated, so `max_new_tokens`,
        accepted as LM4LV's `generate` takes it, has nothing to bound)."""
        if pixel_values is None:
            raise ValueError("The ViT-LLM pass needs pixel_values (the degraded images)")
        _, features = self.restore_features(input_ids, attention_mask, self.encode_images(pixel_values), task_ids)
        return LM4LVGenerateOutput(
            sequences=input_ids,
            visual_features=features,
            pixel_values=self.decode_features(features),
            has_image=torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device),
        )


def prompt_part(input_ids, attention_mask, labels):
    """The prompt of a left-padded training batch: every position before the answer that `labels` marks (the
    answer has the same length in every sample). A prompt batch (`labels=None`) is returned as it is."""
    if labels is None:
        return input_ids, attention_mask
    answer_lengths = (labels != IGNORE_INDEX).sum(-1)
    if (answer_lengths != answer_lengths[0]).any():
        raise ValueError(f"Answers of different lengths in one batch: {answer_lengths.tolist()}")
    prompt_length = input_ids.shape[1] - int(answer_lengths[0])
    return input_ids[:, :prompt_length], None if attention_mask is None else attention_mask[:, :prompt_length]


__all__ = ["LM4LVViTLLMConfig", "LM4LVViTLLMModel"]
