"""Argument types shared by the `lm4lv` commands: values and paths are checked by the parser (usage error, exit 2),
before any model is loaded. Building a parser imports nothing heavy (`lm4lv COMMAND --help` needs no torch): the
checks import what they use when they run."""

import argparse
import os


def bounded_int(minimum: int, maximum: int | None = None):
    """An argparse type: an integer in `[minimum, maximum]`."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {number}")
        return number

    return parse


positive_int = bounded_int(1)
non_negative_int = bounded_int(0)
port_number = bounded_int(1, 65535)


def existing_file(value: str) -> str:
    """An argparse type: a path to an existing file."""
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"no such file: {value}")
    return value


def device_name(value: str) -> str:
    """An argparse type: a torch device this machine has (`cpu`, `cuda`, `cuda:1`, `mps`)."""
    import torch

    try:
        device = torch.device(value)
    except RuntimeError as error:
        raise argparse.ArgumentTypeError(f"not a torch device: {value!r} ({error})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{value}: no CUDA device is available here (this torch {torch.__version__} "
                                         "has no CUDA support, or no GPU is visible); use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{value}: MPS is not available here; use --device cpu")
    return value


def image_file_name(value: str) -> str:
    """An argparse type: an output path whose extension names an image format PIL writes (`.png`, `.jpg`, ...)."""
    from PIL import Image

    extension = os.path.splitext(value)[1].lower()
    if Image.registered_extensions().get(extension) not in Image.SAVE:
        raise argparse.ArgumentTypeError(f"{value}: {extension or 'no extension'} is not an image format this can "
                                         "write; end the name with .png (lossless) or .jpg")
    return value


def checkpoint_location(value: str) -> str:
    """An argparse type: an existing checkpoint folder, the name of a model shipped inside the package (its folder
    is returned), or a Hub id (`org/name`; a local-looking path that does not exist is refused here instead of being
    looked up on the Hub)."""
    from lm4lv.modeling_lm4lv.hub_files import check_hub_location, looks_like_hub_id
    from lm4lv.modeling_lm4lv.shipped import resolve_model_location, shipped_models

    value = resolve_model_location(value)
    if os.path.isdir(value):
        if not os.path.isfile(os.path.join(value, "config.json")):
            raise argparse.ArgumentTypeError(f"{value} has no config.json: not a checkpoint folder")
        return value
    if not looks_like_hub_id(value):
        raise argparse.ArgumentTypeError(f"no such checkpoint folder: {value} (the package ships {shipped_models()})")
    try:
        check_hub_location(value, "checkpoint")
    except OSError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def llm_dtype_name(value: str) -> str:
    """An argparse type: a dtype the frozen LLM may run in (`trainers.training.LLM_DTYPES`)."""
    from lm4lv.trainers.training import LLM_DTYPES

    if value not in LLM_DTYPES:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(LLM_DTYPES)})")
    return value


def shipped_model_location() -> str:
    """The folder of the denoiser shipped with the package, the restoring commands' default `--model`."""
    from lm4lv.modeling_lm4lv.shipped import DEFAULT_MODEL

    return checkpoint_location(DEFAULT_MODEL)


def add_loading_arguments(parser: argparse.ArgumentParser):
    """The command-line options of `load_restoration_model`, shared by the commands that load a trained model."""
    parser.add_argument("--llm", default=None, help="Override the base LLM location named in the checkpoint.")
    parser.add_argument("--vision", default=None, help="Override the vision module location.")
    parser.add_argument("--llm_dtype", default=None, type=llm_dtype_name, metavar="DTYPE",
                        help="Dtype of the frozen LLM, one of trainers.training.LLM_DTYPES (default: the one the "
                             "checkpoint names, the dtype it was trained with; trainables stay float32).")
    parser.add_argument("--device", default=None, type=device_name,
                        help="Where to run (default: cuda when available, else cpu).")


def load_restoration_model_from_args(args: argparse.Namespace):
    """`load_restoration_model` with the options `add_loading_arguments` defined."""
    from lm4lv.trainers.evaluation import load_restoration_model

    return load_restoration_model(args.model, llm=args.llm, vision=args.vision, llm_dtype=args.llm_dtype,
                                  device=args.device)
