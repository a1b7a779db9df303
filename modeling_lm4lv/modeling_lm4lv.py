"""PyTorch LM4LV: a frozen causal LLM doing low-level vision through a frozen MAE, two linear adapters, task tokens."""

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import ModelOutput

from .attention import unpadded_causal_attention
from .checkpointing import TrainableCheckpointMixin, check_base_model_shapes, is_trainable_name
from .configuration_lm4lv import LM4LVConfig
from .decoding import DecodingRun, LM4LVGenerateOutput, positions_from_mask
from .engines import readable_parameters
from .hub_files import check_hub_location, check_safetensors_only
from .loss_lm4lv import lm4lv_loss
from .peft_interop import PeftInteropMixin
from .vision import VisionFeaturesMixin, load_vision_module, vision_module_from_config


@dataclass
class LM4LVCausalLMOutput(ModelOutput):
    r"""
    Output of [`LM4LVForConditionalGeneration.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` is given):
            `text_loss + config.vision_loss_weight * vision_loss` (`+ config.pixel_loss_weight * pixel_loss`).
        text_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Next-token cross-entropy over the supervised text positions of the answer (0 if there are none).
        vision_loss (`torch.FloatTensor` of shape `()`, *optional*):
            MSE between `out_adapter(hidden state)` at the position before each target visual token and the MAE
            feature of that token (0 if there are none).
        pixel_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `config.pixel_loss_weight > 0`):
            MSE between the frozen decoder's image of the predicted features and the normalised target image.
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`, *optional*):
            LM logits at every position; only computed when `labels` is not given (training computes logits at the
            supervised text positions alone).
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Final-layer hidden states of the LLM, after its final norm.
    """

    loss: torch.FloatTensor | None = None
    text_loss: torch.FloatTensor | None = None
    vision_loss: torch.FloatTensor | None = None
    pixel_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


class LM4LVPreTrainedModel(PreTrainedModel):
    """Base class of LM4LV models: config class, weight initialisation and checkpoint conventions."""

    config_class = LM4LVConfig
    config: LM4LVConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # the losses are means over the batch: the Trainer divides them by the gradient accumulation steps itself (with
    # True it would take them as sums over `num_items_in_batch` and skip that division)
    accepts_loss_kwargs = False
    _supports_flash_attn = True

    def _init_weights(self, module):
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, LM4LVPreTrainedModel) and hasattr(module, "task_prompt_embeddings"):
            if self.config.task_token_init == "random":
                nn.init.normal_(module.task_prompt_embeddings, std=std)
            else:  # "zeros", and the placeholder for "text" until from_base_models has the tokenizer
                nn.init.zeros_(module.task_prompt_embeddings)
        elif isinstance(module, nn.Linear):
            if module is getattr(self, "out_adapter", None) and self.config.visual_skip_connection:
                nn.init.zeros_(module.weight)  # with the skip connection an untrained model reproduces MAE-r
            else:
                nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)


class LM4LVForConditionalGeneration(PeftInteropMixin, TrainableCheckpointMixin, VisionFeaturesMixin,
                                    LM4LVPreTrainedModel):
    r"""
    LM4LV: a frozen causal LM that reads and writes continuous MAE features.

    Sequence format (the authors' template, with `<Img>`/`</Img>` as ordinary text):

        <bos>### Human: <Img>[LQ visual tokens]</Img>[task tokens]
        ### Assistant: <Img>[HQ visual tokens]</Img>
        ###

    Visual tokens are `in_adapter(MAE features)`; the LLM's last hidden state (after its final norm) at the position
    before each HQ visual token is mapped by `out_adapter` to a predicted MAE feature. Only `in_adapter`,
    `out_adapter` and `task_prompt_embeddings` are trainable; the LLM and the vision module are frozen.

    Args:
        config ([`LM4LVConfig`]): Model configuration. `LM4LVForConditionalGeneration(config)` builds every part with
            random weights; use [`from_base_models`] for pretrained parts and [`from_pretrained`] for checkpoints.
    """

    def __init__(self, config: LM4LVConfig, language_model: PreTrainedModel | None = None,
                 vision_model: PreTrainedModel | None = None):
        super().__init__(config)
        self.language_model = (language_model if language_model is not None
                               else AutoModelForCausalLM.from_config(config.text_config))
        if config.lora_r:
            self.add_lora_adapters()
        self.vision_model = (vision_model if vision_model is not None
                             else vision_module_from_config(config.vision_config))
        with torch.device("meta"):  # no default init drawn from the RNG: post_init initialises them
            self.in_adapter = nn.Linear(config.vision_hidden_size, config.text_config.hidden_size)
            self.out_adapter = nn.Linear(config.text_config.hidden_size, config.vision_hidden_size)
        for adapter in (self.in_adapter, self.out_adapter):
            adapter.to_empty(device=self.language_model.device)
        self.task_prompt_embeddings = nn.Parameter(
            torch.zeros(len(config.task_names), config.task_token_length, config.text_config.hidden_size)
        )
        self.freeze_base_models()
        self.post_init()

    # ------------------------------------------------------------------ construction and freezing

    @classmethod
    def from_base_models(
        cls,
        llm: str,
        vision: str,
        task_names: list[str] | None = None,
        config: LM4LVConfig | None = None,
        dtype: torch.dtype | None = None,
        llm_kwargs: dict | None = None,
        **config_kwargs,
    ) -> "LM4LVForConditionalGeneration":
        r"""
        Assemble an LM4LV model from a pretrained causal LM and a pretrained ViT-MAE, with fresh adapters and task
        tokens.

        Args:
            llm (`str`): Hub id or local folder of any causal LM that `AutoModelForCausalLM` loads.
            vision (`str`): Hub id or local folder of a vision module: a ViT-MAE checkpoint (ideally with a decoder
                fine-tuned for unmasked reconstruction) or a diffusers-autoencoder folder written by this package.
            task_names (`list[str]`, *optional*): Tasks to create task tokens for (ignored when `config` is given).
            config ([`LM4LVConfig`], *optional*): Config to use (e.g. from a trainable-only checkpoint); its
                sub-configs must match the loaded models' shapes.
            dtype (`torch.dtype`, *optional*): Dtype of the frozen LLM (e.g. `torch.bfloat16` on a GPU). The
                adapters and task tokens stay in float32.
            llm_kwargs (`dict`, *optional*): Extra arguments for the LLM's `from_pretrained` (e.g. `gguf_file`).
            config_kwargs: Further [`LM4LVConfig`] fields (`task_token_length`, `vision_loss_weight`, ...).
        """
        llm_kwargs = dict(llm_kwargs or {})
        check_hub_location(llm, "LLM")
        check_hub_location(vision, "vision module")
        # the new weights' init must not depend on how the base models load (under DeepSpeed ZeRO-3 they are built
        # inside zero.Init, which draws default inits from the RNG before the weights are read)
        rng_state = torch.get_rng_state()
        if "gguf_file" not in llm_kwargs:  # a GGUF file is no pickle: transformers dequantizes it
            check_safetensors_only(llm, "LLM")
            llm_kwargs.setdefault("use_safetensors", True)
        language_model = AutoModelForCausalLM.from_pretrained(llm, dtype=dtype, **llm_kwargs)
        vision_model = load_vision_module(vision)
        torch.set_rng_state(rng_state)
        tokenizer = AutoTokenizer.from_pretrained(llm, **{k: v for k, v in llm_kwargs.items() if k == "gguf_file"})
        if config is None:
            config = cls.config_class(
                text_config=language_model.config.to_dict(),
                vision_config=vision_model.config.to_dict(),
                task_names=task_names,
                # local folders are recorded as absolute paths, so the checkpoint loads from any working directory
                text_model_name_or_path=os.path.abspath(llm) if os.path.isdir(llm) else llm,
                vision_model_name_or_path=os.path.abspath(vision) if os.path.isdir(vision) else vision,
                **config_kwargs,
            )
        else:
            check_base_model_shapes(config, language_model.config, vision_model.config)
        config.set_image_delimiter_ids(tokenizer)
        # the loaded parts are used as they are (under DeepSpeed ZeRO-3: already partitioned); only the new adapters,
        # task tokens and LoRA adapters are initialised
        model = cls(config, language_model=language_model, vision_model=vision_model)
        if config.task_token_init == "text":
            model.init_task_tokens_from_text(tokenizer, config.task_token_init_text)
        return model.to(language_model.device)

    def freeze_base_models(self):
        """Set `requires_grad` by `checkpointing.is_trainable_name`: the adapters and task tokens (and LoRA adapters,
        when `config.lora_r > 0`) train, and so do the parameters `config.unfrozen_parameters` lists (a checkpoint's
        user-unfrozen ones); the rest of the LLM and the vision module is frozen, and both are in eval mode."""
        for module in (self.language_model, self.vision_model):
            module.eval()
        unfrozen = set(self.config.unfrozen_parameters or ())
        for name, param in self.named_parameters():
            param.requires_grad_(is_trainable_name(name) or name in unfrozen)

    @torch.no_grad()
    def init_task_tokens_from_text(self, tokenizer, text: str):
        """Set every task's tokens to the LLM's input embeddings of `text`'s tokens, repeated or cut to
        `task_token_length` (peft's `PromptTuningInit.TEXT`)."""
        token_ids = tokenizer.encode(text, add_special_tokens=False)
        if not token_ids:
            raise ValueError(f"task_token_init_text {text!r} has no tokens")
        length = self.config.task_token_length
        token_ids = (token_ids * (length // len(token_ids) + 1))[:length]
        with readable_parameters(self.get_input_embeddings().parameters()):
            embeddings = self.get_input_embeddings()(torch.tensor(token_ids, device=self.task_prompt_embeddings.device))
        self.task_prompt_embeddings.copy_(embeddings.float().expand_as(self.task_prompt_embeddings))

    def train(self, mode: bool = True):
        """Set training mode on the trainable parts. The frozen vision module always stays in eval mode, and so does
        the frozen LLM unless activation (gradient) checkpointing is on (transformers only checkpoints layers in
        training mode; the LLM's own dropout, if it has any, is then active too)."""
        super().train(mode)
        self.language_model.train(mode and self.language_model.is_activation_checkpointing)
        self.vision_model.eval()
        return self

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    @property
    def text_backbone(self) -> nn.Module:
        """The LLM without its LM head (returns hidden states after the final norm)."""
        return self.language_model.base_model

    # ------------------------------------------------------------------ inputs

    def task_embeddings(self, task_ids: torch.LongTensor, check_inputs: bool = True) -> torch.Tensor:
        """Task tokens `(batch, task_token_length, hidden)` for the task index of each sample."""
        if check_inputs and (task_ids.min() < 0 or task_ids.max() >= len(self.config.task_names)):
            raise ValueError(f"task_ids must index task_names {self.config.task_names}, got {task_ids.tolist()}")
        return self.task_prompt_embeddings[task_ids]

    def embed_visual(self, features: torch.Tensor) -> torch.Tensor:
        """`in_adapter` in float32, cast to the LLM's dtype."""
        return self.in_adapter(features.float()).to(self.get_input_embeddings().weight.dtype)

    def build_inputs_embeds(
        self,
        input_ids: torch.LongTensor,
        visual_features: torch.Tensor | None,
        task_ids: torch.LongTensor | None,
        check_inputs: bool = True,
    ) -> torch.Tensor:
        """
        Embed `input_ids`, filling the `image_token_id` placeholders in order with `in_adapter(visual_features)`
        and the `task_token_id` placeholders with the task tokens of `task_ids`.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`): Token ids with negative placeholders.
            visual_features (`torch.Tensor` of shape `(batch, k * num_visual_tokens, vision_hidden_size)`):
                Features for the `k` images of each sample, in the order their placeholders appear.
            task_ids (`torch.LongTensor` of shape `(batch,)`): Task index of each sample.
            check_inputs (`bool`): Check the placeholder counts against the features and task tokens (reads them
                back to the host); without the check, nothing here synchronises with the device.
        """
        image_mask = input_ids == self.config.image_token_id
        task_mask = input_ids == self.config.task_token_id
        inputs_embeds = self.get_input_embeddings()(input_ids.clamp(min=0))
        if check_inputs:
            self.check_placeholders(image_mask, task_mask, visual_features, task_ids)
        if visual_features is not None and visual_features.shape[1]:
            inputs_embeds = place_in_order(inputs_embeds, image_mask, self.embed_visual(visual_features))
        if task_ids is not None:
            task_embeds = self.task_embeddings(task_ids, check_inputs).to(inputs_embeds.dtype)
            inputs_embeds = place_in_order(inputs_embeds, task_mask, task_embeds)
        return inputs_embeds

    def check_placeholders(self, image_mask, task_mask, visual_features, task_ids):
        """Refuse placeholder counts that do not match the visual features and the task tokens."""
        expected = 0 if visual_features is None else visual_features.shape[1]
        counts = image_mask.sum(-1)
        if (counts != expected).any():
            raise ValueError(
                f"Image features and image placeholders do not match: each sample has {expected} visual features "
                f"but the placeholder counts per sample are {counts.tolist()}"
            )
        task_counts = task_mask.sum(-1)
        if not bool((task_counts > 0).any()):
            return
        if task_ids is None:
            raise ValueError("input_ids hold task-token placeholders but no task_ids were given")
        if (task_counts != self.config.task_token_length).any():
            raise ValueError(
                f"Each sample needs exactly {self.config.task_token_length} task-token placeholders, got "
                f"{task_counts.tolist()}"
            )

    # ------------------------------------------------------------------ forward

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
        Args:
            input_ids (`torch.LongTensor` of shape `(batch, seq_len)`):
                Token ids from [`LM4LVProcessor`], with `config.image_token_id` at visual positions (first the
                degraded image's, then, in training, the target image's) and `config.task_token_id` at task tokens.
            attention_mask (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*): 1 for real tokens.
            pixel_values (`torch.FloatTensor` of shape `(batch, 3, height, width)`, *optional*): Degraded images.
            target_pixel_values (`torch.FloatTensor` of shape `(batch, 3, height, width)`, *optional*): Clean
                images (training); their MAE features fill the answer's placeholders and are the MSE targets.
            task_ids (`torch.LongTensor` of shape `(batch,)`, *optional*): Index into `config.task_names`.
            labels (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*): Token ids where text is supervised,
                `config.image_token_id` where a target visual token is, -100 elsewhere.
            position_ids (`torch.LongTensor` of shape `(batch, seq_len)`, *optional*): Defaults to positions that
                skip left padding.
            text_label_positions (`torch.LongTensor` of shape `(batch, k)`, *optional*): Where `labels` supervise
                text (`loss_lm4lv.text_label_positions(labels)`, which `LM4LVDataCollator` computes on the host);
                computed from `labels` when not given.
            check_inputs (`bool`, *optional*, defaults to `True`): Check the inputs' values (finite pixels,
                placeholder counts, task ids, visual labels). `LM4LVTrainer` checks its first batch and then turns
                the checks off: with `check_inputs=False`, `text_label_positions` given and no `attention_mask`
                (a batch without padding), the forward and its loss never synchronise with the device and compile
                as one graph.

        Example:

        ```python
        >>> batch = processor(images=degraded, targets=clean, task="denoise", return_tensors="pt")
        >>> out = model(**batch)
        >>> out.loss.backward()
        ```"""
        input_features, target_features = self.encode_input_and_target(pixel_values, target_pixel_values, check_inputs)
        visual_features = self.fed_visual_features(input_features, target_features)
        inputs_embeds = self.build_inputs_embeds(input_ids, visual_features, task_ids, check_inputs)
        if position_ids is None and attention_mask is None:  # no padding: the LLM's plain causal attention
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        elif position_ids is None:
            position_ids = positions_from_mask(attention_mask)
        with unpadded_causal_attention(self.language_model) if attention_mask is None else contextlib.nullcontext():
            hidden_states = self.text_backbone(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
        if labels is None:
            return LM4LVCausalLMOutput(
                logits=self.get_output_embeddings()(hidden_states).float(), last_hidden_state=hidden_states
            )
        losses = lm4lv_loss(self, hidden_states, labels, input_features, target_features, target_pixel_values,
                            text_label_positions, check_inputs)
        return LM4LVCausalLMOutput(**losses, last_hidden_state=hidden_states)

    def fed_visual_features(self, input_features, target_features) -> torch.Tensor | None:
        """The features that fill the visual placeholders: the degraded image's, then the target's (with
        `config.teacher_forced_noise` in training: the noise of the model's own predictions at generation)."""
        if target_features is not None and self.training and self.config.teacher_forced_noise > 0:
            target_features = target_features + self.config.teacher_forced_noise * torch.randn_like(target_features)
        encoded = [f for f in (input_features, target_features) if f is not None]
        return torch.cat(encoded, dim=1) if encoded else None

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        task_ids: torch.LongTensor | None = None,
        max_new_tokens: int | None = None,
        force_image_output: bool = True,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        cache_implementation: str | None = None,
    ) -> LM4LVGenerateOutput:
        r"""
        Greedy autoregressive generation of text and continuous visual tokens, with a KV cache, batched over
        left-padded prompts.

        Text is generated by default. Once a sample's text ends with `config.image_start_token_ids` (`<Img>`), the
        next `config.num_visual_tokens` steps are visual: the last hidden state goes through `out_adapter` to a
        predicted MAE feature, and `in_adapter(feature)` is fed back as the next input embedding. Then
        `config.image_end_token_ids` (`</Img>`) are forced and text resumes until `eos_token_id` or
        `max_new_tokens`. Forced tokens take no decoding steps of their own: the forced `<Img>` goes through the
        LLM with the prompt, and `</Img>` with the last visual token when every sample's image ends at that step.

        Args:
            input_ids, attention_mask, pixel_values, task_ids: A prompt batch from [`LM4LVProcessor`] (no targets).
            max_new_tokens (`int`, *optional*): Generation budget. Defaults to `<Img>` + visual tokens + `</Img>` +
                8 text tokens.
            force_image_output (`bool`, *optional*, defaults to `True`): Start the answer with `<Img>`, as the
                authors do for restoration prompts. With `False` the model decides.
            eos_token_id (`int`, *optional*): Stops a sample. Defaults to the LLM's generation config.
            pad_token_id (`int`, *optional*): Fills finished samples. Defaults to `eos_token_id` (or 0).
            cache_implementation (`str`, *optional*): `"dynamic"` (a KV cache grown per step) or `"static"` (one
                preallocated: fixed shapes, and on CUDA the visual run replayed as a CUDA graph, one launch per
                visual token; the cache and the graph are kept and reused by later calls of the same shape).
                Defaults to `"static"` on CUDA and `"dynamic"` elsewhere; both give the same features (float32:
                within 1e-5).

        Returns:
            [`LM4LVGenerateOutput`] with `sequences`, `visual_features`, `pixel_values` and `has_image`.
        """
        if input_ids.dim() != 2 or input_ids.shape[0] == 0:
            raise ValueError(f"generate() needs a batch of at least one prompt: input_ids of shape (batch, length), "
                             f"got {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        visual_features = self.encode_images(pixel_values) if pixel_values is not None else None
        skip_features = None
        if self.config.visual_skip_connection:
            if visual_features is None or visual_features.shape[1] != self.config.num_visual_tokens:
                raise ValueError("visual_skip_connection needs exactly one input image per prompt")
            skip_features = visual_features
        run = DecodingRun.start(self, attention_mask, max_new_tokens, eos_token_id, pad_token_id, force_image_output,
                                cache_implementation, skip_features)
        if force_image_output:  # the forced <Img> is known in advance: it goes through the LLM with the prompt
            forced_start = run.start_ids[: run.forced_start_length].expand(input_ids.shape[0], -1)
            input_ids = torch.cat([input_ids, forced_start], dim=1)
        return run.decode(input_ids, self.build_inputs_embeds(input_ids, visual_features, task_ids))


def place_in_order(inputs_embeds: torch.Tensor, mask: torch.BoolTensor, values: torch.Tensor) -> torch.Tensor:
    """`inputs_embeds` `(batch, seq, hidden)` with the positions of `mask` filled, row by row and in order, with
    `values` `(batch, k, hidden)` (each row has exactly `k` such positions): a gather and a `where`, whose backward is
    a scatter-add, so neither direction reads a value back to the host (`masked_scatter`'s backward, `masked_select`,
    does)."""
    order = (mask.long().cumsum(-1) - 1).clamp(0, values.shape[1] - 1)
    placed = torch.gather(values, 1, order[..., None].expand(-1, -1, values.shape[-1]))
    return torch.where(mask[..., None], placed, inputs_embeds)


__all__ = [
    "LM4LVPreTrainedModel",
    "LM4LVForConditionalGeneration",
    "LM4LVCausalLMOutput",
    "LM4LVGenerateOutput",
]
