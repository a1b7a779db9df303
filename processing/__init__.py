"""LM4LV processing: the processor (template, images), degradations and dataset helpers."""

from .processing_lm4lv import LM4LVProcessor

__all__ = ["LM4LVProcessor"]
