"""LM4LV's checkpoint format: trainable-only safetensors files, weight-file lookup, and atomic writes."""

import json
import os
import shutil
import tempfile

from safetensors import safe_open

SAFE_WEIGHTS_NAME = "model.safetensors"
TRAINABLE_WEIGHTS_FORMAT = "lm4lv-trainable"
PICKLE_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt")



def is_trainable_only(weights_file: str) -> bool:
    """Whether a safetensors file is an LM4LV trainable-only checkpoint (adapters and task tokens)."""
    with safe_open(weights_file, framework="pt") as handle:
        return (handle.metadata() or {}).get("lm4lv") == TRAINABLE_WEIGHTS_FORMAT


def resolve_weights_file(path: str | os.PathLike, kwargs: dict) -> str:
    """Path of `model.safetensors` (local folder or Hub), refusing pickle-only checkpoints."""
    path = str(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, SAFE_WEIGHTS_NAME)
        if os.path.isfile(candidate):
            return candidate
        if os.path.isfile(os.path.join(path, SAFE_WEIGHTS_NAME + ".index.json")):
            with open(os.path.join(path, SAFE_WEIGHTS_NAME + ".index.json")) as handle:
                first_shard = sorted(set(json.load(handle)["weight_map"].values()))[0]
            return os.path.join(path, first_shard)
        pickles = [name for name in PICKLE_WEIGHTS_NAMES if os.path.exists(os.path.join(path, name))]
        if pickles:
            raise ValueError(
                f"{path} holds only pickle weights ({', '.join(pickles)}); LM4LV loads safetensors only. Convert "
                "them to safetensors with a tool you trust."
            )
        raise FileNotFoundError(f"{path} has no {SAFE_WEIGHTS_NAME}: missing weights")
    from transformers.utils import cached_file

    return cached_file(path, SAFE_WEIGHTS_NAME, revision=kwargs.get("revision"), token=kwargs.get("token"))


def write_atomically(path: str, write):
    """Call `write(tmp_path)` on a temporary file next to `path`, fsync it, then rename it onto `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(handle)
    try:
        write(tmp_path)
        with open(tmp_path, "rb") as written:
            os.fsync(written.fileno())
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def write_folder_atomically(path: str, write):
    """Call `write(tmp_folder)`, then rename the folder onto `path`: a killed run never leaves half a folder."""
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    os.replace(tmp, path)
