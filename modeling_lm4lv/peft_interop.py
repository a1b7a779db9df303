"""peft interoperability of LM4LV models: optional LoRA adapters on the frozen LLM, and task tokens exported to and
imported from peft's prompt-tuning adapter format."""

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .checkpointing import is_trainable_name
from .hub_files import write_atomically


class PeftInteropMixin:
    """LoRA on the LLM and task tokens as peft prompt-tuning adapters, for [`LM4LVForConditionalGeneration`]."""

    def add_lora_adapters(self):
        """Inject LoRA adapters (rank `config.lora_r`) into the LLM in place, through peft. An extension: the paper
        keeps the LLM entirely frozen (`lora_r=0`)."""
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as error:
            raise ImportError("lora_r > 0 needs peft: pip install peft") from error
        lora_config = LoraConfig(
            r=self.config.lora_r,
            lora_alpha=self.config.lora_alpha,
            target_modules=self.config.lora_target_modules,
            lora_dropout=0.0,
        )
        self.language_model = inject_adapter_in_model(lora_config, self.language_model)
        # trainables stay in float32 when the frozen LLM is in bf16/fp16 (as peft's autocast)
        for name, param in self.language_model.named_parameters():
            if is_trainable_name(name):
                param.data = param.data.float()
        # peft initialised them (B = 0: the LLM unchanged); post_init must not re-initialise them
        for name, module in self.language_model.named_modules():
            if is_trainable_name(name):
                module._is_hf_initialized = True

    @torch.no_grad()
    def merge_lora_adapters(self):
        """Fold the LoRA adapters into the LLM's weights for inference (no extra matmuls). The merged LLM differs
        from the base LLM, so the model can then only be saved with `save_full=True`."""
        from peft.tuners.lora import LoraLayer

        if not self.config.lora_r:
            raise ValueError("This model has no LoRA adapters (config.lora_r is 0)")
        for name, module in list(self.language_model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent_name, _, child_name = name.rpartition(".")
                setattr(self.language_model.get_submodule(parent_name), child_name, module.get_base_layer())
        self.config.lora_r = 0
        self.lora_merged = True

    def save_task_prompt(self, save_directory: str | os.PathLike, task: str):
        r"""
        Write one task's tokens as a peft prompt-tuning adapter (`adapter_config.json` + `adapter_model.safetensors`
        holding `prompt_embeddings` of shape `(task_token_length, hidden)`), so peft tooling can read them, e.g.
        `PeftModel.from_pretrained(llm, save_directory)`. Note that peft prepends virtual tokens to the input while
        LM4LV places them after the image: the tensors are the same, their position in the sequence is not.
        """
        from peft import PromptTuningConfig

        text_config = self.config.text_config
        init_text = self.config.task_token_init == "text"
        peft_config = PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=self.config.task_token_length,
            token_dim=text_config.hidden_size,
            num_transformer_submodules=1,
            num_attention_heads=text_config.num_attention_heads,
            num_layers=text_config.num_hidden_layers,
            prompt_tuning_init="TEXT" if init_text else "RANDOM",
            prompt_tuning_init_text=self.config.task_token_init_text if init_text else None,
            tokenizer_name_or_path=self.config.text_model_name_or_path if init_text else None,
            base_model_name_or_path=self.config.text_model_name_or_path,
        )
        os.makedirs(save_directory, exist_ok=True)
        peft_config.save_pretrained(save_directory)
        tokens = self.task_prompt_embeddings[self.config.task_index(task)].detach().cpu().contiguous()
        write_atomically(
            os.path.join(save_directory, "adapter_model.safetensors"),
            lambda path: save_file({"prompt_embeddings": tokens}, path, metadata={"format": "pt"}),
        )

    @torch.no_grad()
    def load_task_prompt(self, directory: str | os.PathLike, task: str):
        """Set one task's tokens from a peft prompt-tuning adapter folder (written by `save_task_prompt` or by
        peft's own `save_pretrained`), checking its type and shape."""
        with open(os.path.join(directory, "adapter_config.json")) as handle:
            peft_config = json.load(handle)
        if peft_config.get("peft_type") != "PROMPT_TUNING":
            raise ValueError(f"{directory} is a {peft_config.get('peft_type')} adapter, not PROMPT_TUNING")
        weights_file = os.path.join(directory, "adapter_model.safetensors")
        if not os.path.isfile(weights_file):
            raise FileNotFoundError(f"{directory} has no adapter_model.safetensors (pickle adapters are not read)")
        with safe_open(weights_file, framework="pt") as handle:
            tokens = handle.get_tensor("prompt_embeddings")
        target = self.task_prompt_embeddings[self.config.task_index(task)]
        if tokens.shape != target.shape:
            raise ValueError(
                f"{directory} holds prompt embeddings of shape {tuple(tokens.shape)}, but this model's task tokens "
                f"are {tuple(target.shape)} (task_token_length x LLM hidden size)"
            )
        target.copy_(tokens)
