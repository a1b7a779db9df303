"""Export of an LM4LV checkpoint as a self-contained Hub folder that carries the restoration pipeline too, so that
`pipeline(model=folder, trust_remote_code=True)` works where this package is not installed."""

import json
import os

from lm4lv.modeling_lm4lv import export_remote_code
from lm4lv.modeling_lm4lv.remote_code import write_flat_modules
from lm4lv.processing import degradations, images, processing_lm4lv

from . import image_restoration

PIPELINE_TASK = "image-restoration"
# the pipeline's code and what it imports beyond the model's code, written as flat modules next to the model's
PIPELINE_MODULES = (image_restoration, processing_lm4lv, images, degradations)


def export_with_pipeline(model, processor, save_directory: str | os.PathLike):
    """
    Write a self-contained Hub folder: every weight and the model's code (`export_remote_code`), the processor, and
    the restoration pipeline's code as flat modules, with the `custom_pipelines` entry of transformers' remote-code
    convention in `config.json`. Then, without this package:

        pipeline(model=folder, trust_remote_code=True)(image, task="denoise")
    """
    export_remote_code(model, save_directory)
    processor.save_pretrained(save_directory)
    write_flat_modules(PIPELINE_MODULES, save_directory)
    config_path = os.path.join(save_directory, "config.json")
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["custom_pipelines"] = {
        PIPELINE_TASK: {"impl": "image_restoration.LM4LVRestorationPipeline", "pt": ["AutoModel"], "type": "image"}
    }
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)
        handle.write("\n")
