"""Export of an LM4LV model as a self-contained Hub folder that loads with `trust_remote_code=True`."""

import os
import shutil

# the model's code as transformers' remote-code loader needs it: flat modules that import each other relatively
REMOTE_CODE_MODULES = (
    "configuration_lm4lv.py", "modeling_lm4lv.py", "vision.py", "checkpointing.py", "peft_interop.py",
    "loss_lm4lv.py", "initialization.py",
)


def export_remote_code(model, save_directory: str | os.PathLike):
    """
    Write a self-contained Hub folder: every weight (`save_full=True`) plus this model's code as flat modules, with
    `auto_map` in the config, so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works where this
    package is not installed.
    """
    source_dir = os.path.dirname(os.path.abspath(__file__))
    model.config.auto_map = {
        "AutoConfig": "configuration_lm4lv.LM4LVConfig",
        "AutoModel": "modeling_lm4lv.LM4LVForConditionalGeneration",
    }
    try:
        model.save_pretrained(save_directory, save_full=True)
    finally:
        del model.config.auto_map
    for name in REMOTE_CODE_MODULES:
        shutil.copyfile(os.path.join(source_dir, name), os.path.join(save_directory, name))
