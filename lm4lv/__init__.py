"""LM4LV: a frozen large language model for low-level vision, Hugging Face-native.

    from lm4lv import LM4LVConfig, LM4LVForConditionalGeneration, LM4LVProcessor, LM4LVRestorationPipeline
    restorer = transformers.pipeline("image-restoration")      # the denoiser shipped with the package
    restorer = transformers.pipeline("image-restoration", model="path/to/checkpoint")

Submodules: `lm4lv.modeling_lm4lv` (config, model, vision modules, baselines), `lm4lv.processing` (processor,
degradations, datasets), `lm4lv.pipelines` (the restoration pipeline), `lm4lv.trainers` (Trainer pieces, evaluation),
`lm4lv.research` (the offline default, the demo, the ablations), `lm4lv.metrics` (PSNR/SSIM and their `evaluate`
modules), `lm4lv.cli` (the `lm4lv` command).
Importing `lm4lv` registers the `lm4lv` model type with the transformers Auto classes and the "image-restoration"
pipeline task. The `lm4lv` command is the exception: it imports what the command it runs needs when that command
runs (`lm4lv --help` and `lm4lv restore --help` import no torch), and those imports register the same way.
"""

import importlib
import os
import sys

__version__ = "0.4.0"

# public name -> the submodule that defines it (imported on first use, PEP 562)
PUBLIC_NAMES = {
    "LM4LVConfig": "modeling_lm4lv",
    "LM4LVForConditionalGeneration": "modeling_lm4lv",
    "LM4LVProcessor": "processing",
    "LM4LVRestorationPipeline": "pipelines",
}

__all__ = list(PUBLIC_NAMES)


def __getattr__(name: str):
    if name in PUBLIC_NAMES:
        return getattr(importlib.import_module(f".{PUBLIC_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def running_the_command_line() -> bool:
    """Whether this process is the `lm4lv` console script (pip's launcher, named after the command)."""
    return os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ""))[0] in ("lm4lv", "lm4lv-script")


if not running_the_command_line():
    from . import modeling_lm4lv, pipelines  # noqa: F401  (registration with the Auto classes and the pipeline task)
