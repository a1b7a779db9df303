"""Export of an LM4LV model as a self-contained Hub folder that loads with `trust_remote_code=True`, and the one writer
of flat remote-code modules (the restoration pipeline's export uses it too)."""

import os
import re

from . import (
    attention,
    checkpointing,
    configuration_lm4lv,
    decoding,
    engines,
    hub_files,
    initialization,
    loss_lm4lv,
    modeling_lm4lv,
    peft_interop,
    shipped,
    vision,
)

# the model's code as transformers' remote-code loader needs it: flat modules that import each other relatively
REMOTE_CODE_MODULES = (configuration_lm4lv, modeling_lm4lv, decoding, vision, checkpointing, hub_files,
                       engines, shipped, attention, peft_interop, loss_lm4lv, initialization)
PACKAGE_IMPORT = re.compile(r"^from lm4lv\.(?:\w+\.)*(\w+) import", re.MULTILINE)


def flat_module_source(module) -> str:
    """`module`'s source with its imports from this package turned into imports of sibling flat modules."""
    with open(module.__file__, encoding="utf-8") as handle:
        source = PACKAGE_IMPORT.sub(r"from .\1 import", handle.read())
    if re.search(r"^\s*(from|import) lm4lv\b", source, re.MULTILINE):
        raise RuntimeError(f"{module.__name__} imports this package in a way the flat export cannot rewrite")
    return source


def write_flat_modules(modules, save_directory: str | os.PathLike):
    """Write each of `modules` into `save_directory` as a flat module (`flat_module_source`) of the same file name."""
    for module in modules:
        with open(os.path.join(save_directory, os.path.basename(module.__file__)), "w", encoding="utf-8") as handle:
            handle.write(flat_module_source(module))


def export_remote_code(model, save_directory: str | os.PathLike):
    """
    Write a self-contained Hub folder: every weight (`save_full=True`) plus this model's code as flat modules, with
    `auto_map` in the config, so `AutoModel.from_pretrained(folder, trust_remote_code=True)` works where this
    package is not installed.
    """
    model.config.auto_map = {
        "AutoConfig": "configuration_lm4lv.LM4LVConfig",
        "AutoModel": "modeling_lm4lv.LM4LVForConditionalGeneration",
    }
    try:
        model.save_pretrained(save_directory, save_full=True)
    finally:
        del model.config.auto_map
    write_flat_modules(REMOTE_CODE_MODULES, save_directory)
