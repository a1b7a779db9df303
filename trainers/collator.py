"""Data collator: paired examples -> an LM4LV training batch."""

from dataclasses import dataclass

import torch

from lm4lv.modeling_lm4lv.loss_lm4lv import text_label_positions
from lm4lv.processing import LM4LVProcessor


@dataclass
class LM4LVDataCollator:
    r"""
    Turns examples `{"degraded": (3, S, S), "clean": (3, S, S), "task": str}` (from
    `lm4lv.processing.data.paired_dataset`) into the batch `LM4LVForConditionalGeneration.forward` takes:
    `input_ids`, `pixel_values`, `target_pixel_values`, `task_ids`, `labels`, and what the host computes so the
    device need not: `text_label_positions`, and `attention_mask` only when some row is padded (the template's
    rows all have one length, so training batches have none and the LLM runs its plain causal attention).
    """

    processor: LM4LVProcessor

    def __call__(self, examples: list[dict]) -> dict:
        degraded = torch.stack([torch.as_tensor(e["degraded"]) for e in examples])
        clean = torch.stack([torch.as_tensor(e["clean"]) for e in examples])
        tasks = [e["task"] for e in examples]
        batch = dict(self.processor(images=degraded, targets=clean, task=tasks))
        if bool(batch["attention_mask"].all()):
            del batch["attention_mask"]
        batch["text_label_positions"] = text_label_positions(batch["labels"])
        return batch
