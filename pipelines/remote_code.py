"""Export of an LM4LV checkpoint as a self-contained Hub folder that carries the restoration pipeline too, so that
`pipeline(model=folder, trust_remote_code=True)` works where this package is not installed."""

import json
import os
import re

from lm4lv.modeling_lm4lv import export_remote_code
from lm4lv.processing import degradations, images, processing_lm4lv

from . import image_restoration

PIPELINE_TASK = "image-restoration"
# the pipeline's code and what it imports beyond the model's code, written as flat modules next to the model's
PIPELINE_MODULES = (image_restoration, processing_lm4lv, images, degradations)
PACKAGE_IMPORT = re.compile(r"^from lm4lv\.(?:\w+\.)*(\w+) import", re.MULTILINE)


def flat_module_source(module) -> str:
    """`module`'s source with its imports from this package turned into imports of sibling flat modules."""
    with open(module.__file__, encoding="utf-8") as handle:
        source = PACKAGE_IMPORT.sub(r"from .\1 import", handle.read())
    if re.search(r"^\s*(from|import) lm4lv\b", source, re.MULTILINE):
        raise RuntimeError(f"{module.__name__} imports this package in a way the flat export cannot rewrite")
    return source


def export_with_pipeline(model, processor, save_directory: str | os.PathLike):
    """
    Write a self-contained Hub folder: every weight and the model's code (`export_remote_code`), the processor, and
    the restoration pipeline's code as flat modules, with the `custom_pipelines` entry of transformers' remote-code
    convention in `config.json`. Then, without this package:

        pipeline(model=folder, trust_remote_code=True)(image, task="denoise")
    """
    export_remote_code(model, save_directory)
    processor.save_pretrained(save_directory)
    for module in PIPELINE_MODULES:
        with open(os.path.join(save_directory, os.path.basename(module.__file__)), "w", encoding="utf-8") as handle:
            handle.write(flat_module_source(module))
    config_path = os.path.join(save_directory, "config.json")
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["custom_pipelines"] = {
        PIPELINE_TASK: {"impl": "image_restoration.LM4LVRestorationPipeline", "pt": ["AutoModel"], "type": "image"}
    }
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")
