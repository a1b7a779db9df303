"""Shared pieces of the benchmarks: model builders and a timer. Ratios are measured side by side in one run."""

import os
import time

import torch
from transformers import AutoConfig, LlamaConfig, ViTMAEConfig

from modeling_lm4lv import LM4LVConfig, LM4LVForConditionalGeneration
from modeling_lm4lv.modeling_lm4lv import positions_from_mask

SMOLLM2_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "lm4lv", "smollm2-135m-instruct")


def vision_config(num_patches_side: int, patch_size: int = 8, hidden_size: int = 256) -> ViTMAEConfig:
    """A random-weight MAE with `num_patches_side**2 + 1` visual tokens (vision cost is small next to the LLM)."""
    return ViTMAEConfig(
        image_size=num_patches_side * patch_size, patch_size=patch_size, hidden_size=hidden_size,
        num_hidden_layers=4, num_attention_heads=4, intermediate_size=4 * hidden_size, decoder_hidden_size=256,
        decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=1024,
    )


def text_config(name: str):
    """`tiny` (2 layers, hidden 64) or `smollm2` (the offline default's shape, from the demo cache if present)."""
    if name == "tiny":
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=320, max_position_embeddings=2048)
    if name == "smollm2":
        if os.path.isdir(SMOLLM2_CACHE):
            return AutoConfig.from_pretrained(SMOLLM2_CACHE)
        return LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                           num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
                           tie_word_embeddings=True)
    raise ValueError(name)


def build_model(llm: str, num_patches_side: int, task_token_length: int = 10) -> LM4LVForConditionalGeneration:
    """A random-weight LM4LV model (timings do not depend on the weights' values)."""
    torch.manual_seed(0)
    config = LM4LVConfig(text_config=text_config(llm), vision_config=vision_config(num_patches_side),
                         task_names=["denoise"], task_token_length=task_token_length,
                         image_start_token_ids=[5, 6, 7, 8], image_end_token_ids=[9, 10, 11, 12, 13])
    return LM4LVForConditionalGeneration(config).eval()


def prompt_batch(model, batch_size: int) -> dict:
    """A prompt of the processor's shape: 4 text tokens, the image, 5 text tokens, task tokens, 6 text tokens."""
    config = model.config
    row = [1, 2, 3, 4] + [config.image_token_id] * config.num_visual_tokens + [20, 21, 22, 23, 24]
    row += [config.task_token_id] * config.task_token_length + [30, 31, 32, 33, 34, 35]
    input_ids = torch.tensor([row] * batch_size)
    size = config.vision_config.image_size
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": torch.randn(batch_size, 3, size, size),
        "task_ids": torch.zeros(batch_size, dtype=torch.long),
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

    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
