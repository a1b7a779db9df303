"""Data collator: paired examples -> an LM4LV training batch."""

from dataclasses import dataclass

import torch

from lm4lv.processing import LM4LVProcessor


@dataclass
class LM4LVDataCollator:
    r"""
    Turns examples `{"degraded": (3, S, S), "clean": (3, S, S), "task": str}` (from
    `lm4lv.processing.data.paired_dataset`) into the batch `LM4LVForConditionalGeneration.forward` takes:
    `input_ids`, `attention_mask`, `pixel_values`, `target_pixel_values`, `task_ids`, `labels`.
    """

    processor: LM4LVProcessor

    def __call__(self, examples: list[dict]) -> dict:
        degraded = torch.stack([torch.as_tensor(e["degraded"]) for e in examples])
        clean = torch.stack([torch.as_tensor(e["clean"]) for e in examples])
        tasks = [e["task"] for e in examples]
        return dict(self.processor(images=degraded, targets=clean, task=tasks))
