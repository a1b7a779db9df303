"""The frozen LLM's attention on unpadded training batches, reached without reading the device.

With no attention mask, transformers' `create_causal_mask` checks the position ids for packed sequences, and that
check reads a value back from the device (one synchronisation per forward). `CAUSAL_SDPA` is PyTorch's SDPA with
its causal flag, registered as an attention implementation that has no mask function: `create_causal_mask` then
returns no mask at once, and the attention computes exactly what SDPA computes on a maskless batch.
`unpadded_causal_attention(model)` switches an SDPA model to it for one forward.
"""

from contextlib import contextmanager

from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

CAUSAL_SDPA = "lm4lv_causal_sdpa"


def causal_sdpa_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA with no mask: causal for a multi-token query, as transformers' `sdpa` computes a maskless batch."""
    return sdpa_attention_forward(module, query, key, value, None, **kwargs)


AttentionInterface.register(CAUSAL_SDPA, causal_sdpa_attention)


@contextmanager
def unpadded_causal_attention(language_model):
    """Within the block, an LLM that uses `sdpa` attends through `CAUSAL_SDPA` (for a batch without padding); any
    other attention implementation is left as it is."""
    config = language_model.config
    if config._attn_implementation != "sdpa":
        yield
        return
    config._attn_implementation = CAUSAL_SDPA
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"
