"""Training pieces for LM4LV: data collator, Trainer subclass, MAE decoder fine-tuning, model cards."""

from .collator import LM4LVDataCollator
from .trainer import LM4LVTrainer, LM4LVTrainingArguments

__all__ = ["LM4LVDataCollator", "LM4LVTrainer", "LM4LVTrainingArguments"]
