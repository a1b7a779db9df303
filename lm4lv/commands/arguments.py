"""Argument types shared by the `lm4lv` commands: values and paths are checked by the parser (usage error, exit 2),
before any model is loaded."""

import argparse
import os

from lm4lv.modeling_lm4lv.checkpointing import check_hub_location, looks_like_hub_id
from lm4lv.research.offline_default import pin_cpu_kernels


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


def checkpoint_location(value: str) -> str:
    """An argparse type: an existing checkpoint folder, or a Hub id (`org/name`; a local-looking path that does not
    exist is refused here instead of being looked up on the Hub)."""
    if os.path.isdir(value):
        if not os.path.isfile(os.path.join(value, "config.json")):
            raise argparse.ArgumentTypeError(f"{value} has no config.json: not a checkpoint folder")
        return value
    if not looks_like_hub_id(value):
        raise argparse.ArgumentTypeError(f"no such checkpoint folder: {value}")
    try:
        check_hub_location(value, "checkpoint")
    except OSError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return value


def add_cpu_kernels_argument(parser: argparse.ArgumentParser):
    """`--cpu_kernels pinned|native` of the offline default's commands; `apply_cpu_kernels` acts on it."""
    parser.add_argument("--cpu_kernels", choices=["pinned", "native"], default="pinned",
                        help="pinned (default): ATen, MKL and oneDNN use their AVX2 code paths, so an AVX-512 CPU "
                             "trains the same MAE and scores the same baselines as an AVX2 one bit for bit (the LLM "
                             "runs still drift in the last bits; offline_default.PINNED_CPU_KERNELS); native: the "
                             "CPU's fastest paths (needed for a fast bfloat16 LLM on AVX-512 BF16 CPUs).")


def apply_cpu_kernels(args: argparse.Namespace):
    """Pin the CPU kernels unless `--cpu_kernels native`; call before the command's first tensor computation."""
    if args.cpu_kernels == "pinned":
        pin_cpu_kernels()
