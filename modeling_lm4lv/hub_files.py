"""Files and the Hub: where model weights are (local folder or Hub, safetensors only: the one refusal of pickle
weights), what a safetensors file holds, and atomic writes (one function per kind: a file, a text file, files into a
folder, a whole folder), so that a killed run never leaves a half-written file behind."""

import json
import os
import shutil
import socket
import tempfile
from urllib.parse import urlparse

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from safetensors import safe_open

SAFE_WEIGHTS_NAME = "model.safetensors"
PICKLE_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt")
HUB_PROBE_SECONDS = 3.0  # how long check_hub_location waits for the Hub to answer


def looks_like_hub_id(location: str) -> bool:
    """Whether a model location reads as a Hub id (`org/name`) rather than a local path."""
    return not location.startswith((".", "/", "~")) and not os.path.isabs(location) and location.count("/") == 1


def recorded_location(location: str | None) -> str | None:
    """How a record (a results JSON, a report) names a model location: a Hub id as it is, a local folder by its last
    component, so that no record carries a path of the machine that wrote it."""
    if location is None or looks_like_hub_id(str(location)):
        return location
    return os.path.basename(os.path.normpath(str(location)))


def check_hub_location(location: str | os.PathLike, what: str):
    """Fail within seconds, naming `location`, when it reads as a Hub id (`org/name`), is not in the local Hub cache
    and the Hub cannot be reached (offline mode, no network): transformers would retry for about half a minute and then
    give a generic message. `what` names the location in the message ("checkpoint", "LLM", ...)."""
    location = str(location)
    if os.path.exists(location) or not looks_like_hub_id(location):
        return
    if isinstance(try_to_load_from_cache(location, "config.json"), str):
        return
    if hub_constants.HF_HUB_OFFLINE:
        reason = "offline mode is on (HF_HUB_OFFLINE)"
    else:
        endpoint = urlparse(hub_constants.ENDPOINT)
        port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        try:
            socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_SECONDS).close()
            return
        except OSError as error:
            reason = f"{hub_constants.ENDPOINT} cannot be reached ({error})"
    raise OSError(
        f"The {what} {location!r} is not a local folder, so it was taken as a Hub id, but {reason}: pass the path "
        "of a local folder instead (one written by save_pretrained, or a downloaded snapshot)"
    )


def weight_names(weights_file: str) -> list[str]:
    """Tensor names of a safetensors file; a `ValueError` naming the file when it is not one (empty, truncated,
    garbage)."""
    try:
        with safe_open(weights_file, framework="pt") as handle:
            return list(handle.keys())
    except Exception as error:  # safetensors raises several types for a broken header
        raise ValueError(
            f"{weights_file}: not a readable safetensors file ({type(error).__name__}: {error})"
        ) from error


def file_metadata(weights_file: str) -> dict:
    """The metadata of a safetensors file (after `weight_names` vouched for it)."""
    with safe_open(weights_file, framework="pt") as handle:
        return handle.metadata() or {}


def check_floating_weights(weights_file: str):
    """Refuse a safetensors file holding a tensor of a non-floating dtype, naming the tensor (integer weights would be
    cast silently into float parameters)."""
    with safe_open(weights_file, framework="pt") as handle:
        for name in handle.keys():
            dtype = handle.get_slice(name).get_dtype()
            if not dtype.startswith(("F", "BF")):
                raise ValueError(f"{weights_file}: {name} is stored as {dtype}; weights must be floating point")


def check_finite(tensors: dict, weights_file: str):
    """Refuse NaN/inf weights, naming the tensor and the file: they would turn every output into NaN."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{weights_file}: {name} holds NaN or inf values")


def check_safetensors_only(location: str | os.PathLike, what: str):
    """Refuse a local model folder that holds pickle weights and no safetensors, naming the file and how to convert
    it (LM4LV loads safetensors only; Hub ids are loaded with `use_safetensors=True`)."""
    location = str(location)
    if not os.path.isdir(location) or any(name.endswith(".safetensors") or name.endswith(".safetensors.index.json")
                                          for name in os.listdir(location)):
        return
    pickles = [name for name in PICKLE_WEIGHTS_NAMES if os.path.exists(os.path.join(location, name))]
    if pickles:
        raise ValueError(
            f"The {what} folder {location} holds only pickle weights ({', '.join(pickles)}); LM4LV loads safetensors "
            "only. Convert them once where you trust the file: model = AutoModel.from_pretrained(folder); "
            "model.save_pretrained(folder) writes model.safetensors."
        )


def resolve_weights_file(path: str | os.PathLike, kwargs: dict) -> str:
    """Path of `model.safetensors` (local folder or Hub), refusing pickle-only checkpoints."""
    path = str(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, SAFE_WEIGHTS_NAME)
        if os.path.isfile(candidate):
            return candidate
        index_file = os.path.join(path, SAFE_WEIGHTS_NAME + ".index.json")
        if os.path.isfile(index_file):
            with open(index_file) as handle:
                index = json.load(handle)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index_file}: no weight_map (the index of a sharded checkpoint lists its shards)")
            return os.path.join(path, sorted(set(weight_map.values()))[0])
        check_safetensors_only(path, "checkpoint")
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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes the file owner-only; give it a new file's usual mode
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


def write_text_atomically(path: str, text: str):
    """`write_atomically` for a text file (reports, tables, JSON)."""

    def write(tmp_path):
        with open(tmp_path, "w", encoding="utf-8") as handle:
            handle.write(text)

    write_atomically(path, write)


def write_files_atomically(directory: str | os.PathLike, write, last: tuple[str, ...] = ("config.json",)):
    """Call `write(staging)` on a staging folder inside `directory`, then move every file it wrote into `directory`
    (those in `last` at the end): a write that fails part-way leaves the files already there untouched, and a
    folder's `config.json` never describes weights that were not written. Other files in `directory` are kept."""
    os.makedirs(directory, exist_ok=True)
    staging = tempfile.mkdtemp(dir=directory, prefix=".tmp-save-")
    try:
        write(staging)
        names = sorted(os.listdir(staging), key=lambda name: name in last)
        for name in names:
            with open(os.path.join(staging, name), "rb") as written:
                os.fsync(written.fileno())
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_folder_atomically(path: str, write):
    """Call `write(tmp_folder)`, then rename the folder onto `path`: a killed run never leaves half a folder."""
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    os.replace(tmp, path)
