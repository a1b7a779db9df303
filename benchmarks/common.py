"""Shared pieces of the benchmarks: model builders and a timer. Ratios are measured side by side in one run."""

import os
import time

import torch
from transformers import AutoConfig, LlamaConfig, ViTMAEConfig

from lm4lv.modeling_lm4lv import LM4LVConfig, LM4LVForConditionalGeneration
from lm4lv.modeling_lm4lv.modeling_lm4lv import positions_from_mask
from lm4lv.modeling_lm4lv.shipped import smollm2_folder
from lm4lv.trainers.mae_training import DEMO_MAE_CONFIG

# the paper's scale: LLaMA-2-7B and ViT-MAE-Large shapes
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5)
MAE_LARGE = dict(image_size=224, patch_size=16, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                 intermediate_size=4096, decoder_hidden_size=512, decoder_num_hidden_layers=8,
                 decoder_num_attention_heads=16, decoder_intermediate_size=2048, mask_ratio=0.0)


def vision_config(llm: str, num_patches_side: int, patch_size: int = 8) -> ViTMAEConfig:
    """A random-weight MAE with `num_patches_side**2 + 1` visual tokens: the test suite's tiny MAE (hidden 32) next
    to the tiny LLM, a 4-layer hidden-256 one next to SmolLM2 (its cost is small next to that LLM), MAE-Large's
    shape (patch 16) next to LLaMA-2-7B's."""
    if llm == "llama2-7b":
        return ViTMAEConfig(**{**MAE_LARGE, "image_size": num_patches_side * MAE_LARGE["patch_size"]})
    if llm == "tiny":
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
                     decoder_intermediate_size=64)
    else:  # the demo MAE's shape
        sizes = {key: value for key, value in DEMO_MAE_CONFIG.items() if key not in ("image_size", "patch_size")}
    return ViTMAEConfig(image_size=num_patches_side * patch_size, patch_size=patch_size, **sizes)


def text_config(name: str):
    """`tiny` (2 layers, hidden 64), `smollm2` (the offline default's shape, from the demo cache if present) or
    `llama2-7b` (LLaMA-2-7B's shape)."""
    if name == "tiny":
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=320, max_position_embeddings=2048)
    if name == "smollm2":
        converted = smollm2_folder()
        if os.path.isdir(converted):
            return AutoConfig.from_pretrained(converted)
        return LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                           num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                           tie_word_embeddings=True)
    if name == "llama2-7b":
        return LlamaConfig(vocab_size=32000, **LLAMA2_7B)
    raise ValueError(name)


def build_model(llm: str, num_patches_side: int, device: str = "cpu",
                llm_dtype: torch.dtype | None = None) -> LM4LVForConditionalGeneration:
    """A random-weight LM4LV model built on `device` (timings do not depend on the weights' values); `llm_dtype`
    casts the frozen LLM only (adapters, task tokens and the vision module stay float32)."""
    torch.manual_seed(0)
    config = LM4LVConfig(text_config=text_config(llm), vision_config=vision_config(llm, num_patches_side),
                         task_names=["denoise"], task_token_length=10,
                         image_start_token_ids=[5, 6, 7, 8], image_end_token_ids=[9, 10, 11, 12, 13])
    with torch.device(device):
        model = LM4LVForConditionalGeneration(config)
    if llm_dtype is not None:
        model.language_model.to(llm_dtype)
    return model.eval()


def stub_processor(model, llm: str = "tiny"):
    """An `LM4LVProcessor` for a random-weight model: SmolLM2's own tokenizer for `llm="smollm2"` when the converted
    model is in the cache (so batches have the demo's sequence length), else a one-word tokenizer (every template
    piece is one token, id 0); the model's image size and normalisation (its delimiter ids become the tokenizer's)."""
    from tokenizers import Tokenizer, models
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from lm4lv.processing import LM4LVProcessor

    converted = smollm2_folder()
    if llm == "smollm2" and os.path.isdir(converted):
        tokenizer = AutoTokenizer.from_pretrained(converted)
    else:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, "[UNK]")),
                                            eos_token="[UNK]")
    model.config.image_start_token_ids = model.config.image_end_token_ids = None
    return LM4LVProcessor.from_config(model.config, tokenizer)


def prompt_batch(model, batch_size: int) -> dict:
    """A prompt of the processor's shape: 4 text tokens, the image, 5 text tokens, task tokens, 6 text tokens, on
    the model's device."""
    config = model.config
    row = [1, 2, 3, 4] + [config.image_token_id] * config.num_visual_tokens + [20, 21, 22, 23, 24]
    row += [config.task_token_id] * config.task_token_length + [30, 31, 32, 33, 34, 35]
    input_ids = torch.tensor([row] * batch_size, device=model.device)
    size = config.vision_config.image_size
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(batch_size, 3, size, size, device=model.device),
        "task_ids": torch.zeros(batch_size, dtype=torch.long, device=model.device),
    }


@torch.no_grad()
def bare_decoding_loop(model, batch: dict, steps: int):
    """The floor: the same LLM, a KV cache, `steps` single-position forwards on `inputs_embeds`, nothing else."""
    from transformers import DynamicCache

    llm = model.text_backbone
    embeds = model.get_input_embeddings()(batch["input_ids"].clamp(min=0))
    mask = batch["attention_mask"]
    positions = positions_from_mask(mask)
    if mask.all():
        mask = None  # no padding: the causal mask alone is enough
    cache = DynamicCache(config=model.language_model.config)
    hidden = llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache,
                 use_cache=True).last_hidden_state[:, -1:]
    position = positions[:, -1:] + 1
    for _ in range(steps):
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        hidden = llm(inputs_embeds=hidden, attention_mask=mask, position_ids=position, cache=cache,
                     use_cache=True).last_hidden_state
        position = position + 1
    return hidden


def wait_for(device: torch.device):
    """Wait until the device has run its queued kernels (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synchronized(function, device: torch.device):
    """`function` followed by waiting for the device, so that wall times cover its kernels."""

    def run():
        function()
        wait_for(device)

    return run


def timed(function, repeats: int = 3) -> float:
    """Best wall time of `repeats` calls after one warm-up call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def machine() -> str:
    import platform

    cores, threads = os.cpu_count(), torch.get_num_threads()
    return f"{platform.machine()}, {cores} CPU cores, torch {torch.__version__}, {threads} threads"
