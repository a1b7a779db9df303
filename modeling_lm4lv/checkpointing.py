"""LM4LV's checkpoint format: trainable-only safetensors files (`TrainableCheckpointMixin`: save, load, the full
alternative), which parameters are trainable (`is_trainable_name`), and where a checkpoint's base models are."""

import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .engines import is_sharded
from .hub_files import (
    SAFE_WEIGHTS_NAME,
    check_finite,
    check_floating_weights,
    check_hub_location,
    file_metadata,
    looks_like_hub_id,
    resolve_weights_file,
    weight_names,
    write_files_atomically,
)
from .shipped import SMOLLM2_FOLDER, prepare_smollm2, resolve_model_location

TRAINABLE_WEIGHTS_FORMAT = "lm4lv-trainable"

# names of the parameters LM4LV trains (the adapters, the task tokens and optional LoRA adapters on the LLM)
TRAINABLE_PREFIXES = ("in_adapter.", "out_adapter.", "task_prompt_embeddings")
LORA_MARKER = "lora_"  # peft's LoRA parameters carry it in their names (lora_A, lora_B, ...)
# the metadata key of a trainable-only file's format tag
FORMAT_KEY = "lm4lv"
# the keywords `save_pretrained(save_full=False)` takes: the trainable weights' source, and what `push_to_hub`
# passes (a trainable-only file is one small file: `max_shard_size` has nothing to shard)
TRAINABLE_SAVE_KEYWORDS = ("is_main_process", "state_dict", "push_to_hub", "max_shard_size", "repo_id",
                           "commit_message", "token", "private", "create_pr")


def is_trainable_name(name: str) -> bool:
    """THE rule for what LM4LV trains: the adapters, the task tokens and LoRA parameters (named as in the model, or
    inside the LLM). `freeze_base_models` sets `requires_grad` by it, and everything else reads `requires_grad`."""
    return name.startswith(TRAINABLE_PREFIXES) or LORA_MARKER in name


def is_trainable_only(weights_file: str) -> bool:
    """Whether a safetensors file is an LM4LV trainable-only checkpoint: tagged so by `save_pretrained`, or, for a file
    another tool rewrote without the tag, by its content (mostly trainable parameters: a full checkpoint holds the
    frozen models' hundreds of tensors; loading then names any tensor that does not belong)."""
    names = weight_names(weights_file)
    if file_metadata(weights_file).get(FORMAT_KEY) == TRAINABLE_WEIGHTS_FORMAT:
        return True
    trainable = sum(is_trainable_name(name) for name in names)
    return trainable > 0 and trainable > len(names) - trainable


def base_model_location(location: str | None, checkpoint: str | os.PathLike, what: str) -> str | None:
    """Where a base model named in a checkpoint's config is. A relative path is resolved against a local checkpoint
    folder (when it exists there, or starts with "."); `shipped.SMOLLM2_FOLDER` names the offline SmolLM2, which
    is converted into the cache on first use; anything else but a Hub id (`org/name`) must exist, or this raises
    naming it."""
    if not location:
        return location
    location = os.path.expanduser(location)
    if not os.path.isabs(location) and os.path.isdir(checkpoint):
        beside = os.path.normpath(os.path.join(checkpoint, location))
        if os.path.exists(beside) or location.startswith("."):
            location = beside
    if location == SMOLLM2_FOLDER and not os.path.exists(location):
        return prepare_smollm2()
    if not looks_like_hub_id(location) and not os.path.exists(location):
        option = "llm" if what == "LLM" else "vision"
        raise FileNotFoundError(
            f"The base {what} named in {checkpoint}'s config, {location}, does not exist: pass its folder with "
            f"{option}=... (on the command line: --{option})"
        )
    return location


def as_dtype(dtype) -> torch.dtype | None:
    """A `torch.dtype` from a dtype or its name ("bfloat16", "torch.bfloat16"); None for anything else."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) else None


def trained_llm_dtype(config) -> torch.dtype | None:
    """The dtype the frozen LLM had in training, as the checkpoint's `text_config` records it (None if it does not)."""
    return as_dtype(getattr(config.text_config, "dtype", None))


def llm_dtype_to_load(requested, config) -> torch.dtype | None:
    """The one dtype rule of every loading path (`from_pretrained`, the pipeline, `lm4lv restore`, the app, the
    evaluation): the frozen LLM in the dtype the user asks for, else (nothing asked, or `"auto"`, transformers'
    default, which `pipeline()` passes) the dtype the checkpoint names (`trained_llm_dtype`), else the base model's
    own (None)."""
    if requested is None or requested == "auto":
        return trained_llm_dtype(config)
    dtype = as_dtype(requested)
    if dtype is None:
        raise ValueError(f"dtype must be a torch dtype, its name or 'auto', got {requested!r}")
    return dtype


def check_base_model_shapes(config, text_config, vision_config):
    """Clear error when base models do not match the shapes the adapters were built for."""
    for what, expected, found in (
        ("LLM hidden_size", config.text_config.hidden_size, text_config.hidden_size),
        ("vision hidden_size", config.vision_hidden_size, vision_config.hidden_size),
        ("vision image_size", config.vision_config.image_size, vision_config.image_size),
        ("vision patch_size", config.vision_config.patch_size, vision_config.patch_size),
    ):
        if expected != found:
            raise ValueError(
                f"Base model mismatch: the checkpoint's config has {what}={expected} but the loaded base model "
                f"has {found}; the adapters only fit the base models they were trained with"
            )


class TrainableCheckpointMixin:
    """LM4LV's checkpoints for [`LM4LVForConditionalGeneration`]: trainable-only by default (the config names the base
    models, `from_pretrained` rebuilds them), or full (`save_full=True`, for the Hub)."""

    def unfrozen_parameter_names(self) -> list[str]:
        """The frozen-by-default parameters a user unfroze (they require grad, though `is_trainable_name` says no)."""
        return sorted(name for name, param in self.named_parameters()
                      if param.requires_grad and not is_trainable_name(name))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters that require grad (adapters and task tokens, plus anything a user unfroze)."""
        return {name: param.detach() for name, param in self.named_parameters() if param.requires_grad}

    def save_pretrained(self, save_directory: str | os.PathLike, save_full: bool = False, **kwargs):
        r"""
        Save the model.

        Args:
            save_directory (`str` or `os.PathLike`): Target folder.
            save_full (`bool`, *optional*, defaults to `False`): With `False` (the default) write the config and
                a safetensors file of the trainable parameters only (those that require grad); the config names the
                base LLM and vision module so [`from_pretrained`] rebuilds the whole model. With `True` write every
                weight into the folder (self-contained, for the Hub), through `PreTrainedModel.save_pretrained`.
                Either way the files are
                written to a staging folder first and moved in at the end (`config.json` last), so a write that fails
                part-way leaves a previous checkpoint in the folder intact. In both formats a parameter a user
                unfroze is recorded in `config.unfrozen_parameters` (and saved), and loading unfreezes it again.
            kwargs: Passed to `PreTrainedModel.save_pretrained` when `save_full=True`. Otherwise only
                `TRAINABLE_SAVE_KEYWORDS` are taken (any other raises a `TypeError`): `is_main_process`; `state_dict`,
                whose trainable weights are saved when given (whole tensors gathered from a sharding engine, as
                `LM4LVTrainer.save_model` does; other entries are ignored), else the model's own, which must then be
                whole; `push_to_hub` with `repo_id`, `commit_message`, `token`, `private`, `create_pr` (uploads the
                saved files through `push_to_hub`); `max_shard_size` (nothing to shard: one small file).
        """
        self.config.unfrozen_parameters = self.unfrozen_parameter_names() or None  # loading unfreezes them again
        if save_full:
            save_everything = super().save_pretrained
            return write_files_atomically(save_directory, lambda staging: save_everything(staging, **kwargs))
        unknown = sorted(set(kwargs) - set(TRAINABLE_SAVE_KEYWORDS))
        if unknown:
            raise TypeError(f"save_pretrained(save_full=False) takes no {unknown}: a trainable-only checkpoint is one "
                            f"safetensors file (it takes {list(TRAINABLE_SAVE_KEYWORDS)}); use save_full=True")
        if getattr(self, "lora_merged", False):
            raise ValueError(
                "LoRA adapters were merged into the LLM, which no longer equals the base LLM the config names; save "
                "with save_full=True"
            )
        if not kwargs.get("is_main_process", True):
            return
        tensors = self.trainable_tensors_to_save(kwargs.get("state_dict"))

        def write(staging):
            save_file(tensors, os.path.join(staging, SAFE_WEIGHTS_NAME),
                      metadata={"format": "pt", FORMAT_KEY: TRAINABLE_WEIGHTS_FORMAT})
            self.config.save_pretrained(staging)

        write_files_atomically(save_directory, write)
        if kwargs.get("push_to_hub"):
            self.push_to_hub(kwargs.get("repo_id") or os.path.basename(os.path.abspath(save_directory)),
                             **{key: kwargs[key] for key in ("commit_message", "token", "private", "create_pr")
                                if key in kwargs})

    def trainable_tensors_to_save(self, state_dict: dict | None) -> dict[str, torch.Tensor]:
        """Whole CPU tensors of the trainable parameters, from `state_dict` when given, else from the model (which
        must not be sharded)."""
        own = self.trainable_state_dict()
        if state_dict is None and any(is_sharded(p) for p in self.parameters() if p.requires_grad):
            raise ValueError(
                "The trainable parameters are sharded (FSDP2 or DeepSpeed ZeRO-3): pass their whole tensors as "
                "state_dict=..., gathered on every process by the engine that sharded them"
            )
        source = own if state_dict is None else state_dict
        missing = sorted(set(own) - set(source))
        if missing:
            raise ValueError(f"state_dict lacks trainable parameters {missing}")
        return {name: source[name].contiguous().cpu() for name in own}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args, **kwargs):
        r"""
        Load an LM4LV checkpoint: either trainable-only (the base LLM and vision module named in its config are
        loaded with [`from_base_models`], then the adapters and task tokens) or full (`save_full=True`). Only
        safetensors are read; a folder with pickle weights alone is refused.

        Args:
            pretrained_model_name_or_path: Local folder, Hub id, or the name of a model shipped inside the package
                (`shipped.shipped_models()`).
            dtype (`torch.dtype`, its name or `"auto"`, *optional*): Dtype of the frozen LLM; by default (or
                `"auto"`) the one the checkpoint names, the dtype it was trained with (`text_config.dtype`):
                `llm_dtype_to_load`.
            llm (`str`, *optional*), vision (`str`, *optional*): Override the base model locations named in the
                config (e.g. local copies of the Hub ids).
            kwargs: Passed to `PreTrainedModel.from_pretrained` for full checkpoints.
        """
        llm, vision = kwargs.pop("llm", None), kwargs.pop("vision", None)
        pretrained_model_name_or_path = resolve_model_location(pretrained_model_name_or_path)
        check_hub_location(pretrained_model_name_or_path, "checkpoint")
        weights_file = resolve_weights_file(pretrained_model_name_or_path, kwargs)
        if not is_trainable_only(weights_file):
            return cls.from_full_checkpoint(pretrained_model_name_or_path, weights_file, *model_args, **kwargs)
        config = kwargs.pop("config", None) or cls.config_class.from_pretrained(pretrained_model_name_or_path)
        llm = llm or base_model_location(config.text_model_name_or_path, pretrained_model_name_or_path, "LLM")
        vision = vision or base_model_location(config.vision_model_name_or_path, pretrained_model_name_or_path,
                                               "vision module")
        if not llm or not vision:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds trainable weights only, and its config names no base "
                "LLM/vision module: pass llm=... and vision=..."
            )
        model = cls.from_base_models(llm, vision, config=config, dtype=llm_dtype_to_load(kwargs.pop("dtype", None),
                                                                                       config))
        model.load_trainable_weights(weights_file)
        return model

    @classmethod
    def from_full_checkpoint(cls, pretrained_model_name_or_path, weights_file: str, *model_args, **kwargs):
        """`from_pretrained` of a full checkpoint (`save_full=True`), refusing missing or unexpected weights; the
        frozen LLM in `llm_dtype_to_load`'s dtype, everything else in float32."""
        requested = kwargs.pop("dtype", None)
        kwargs["use_safetensors"] = True
        check_floating_weights(weights_file)
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *model_args, output_loading_info=True,
                                              **kwargs)
        problems = {kind: sorted(info[kind]) for kind in ("missing_keys", "unexpected_keys") if info[kind]}
        if problems:
            raise ValueError(
                f"{weights_file} is not a complete checkpoint of this model: "
                + "; ".join(f"{kind.replace('_', ' ')} {names[:8]}" + (" ..." if len(names) > 8 else "")
                            for kind, names in problems.items())
            )
        check_finite(model.trainable_state_dict(), weights_file)
        model.freeze_base_models()  # loading replaced the parameters, which reset requires_grad
        dtype = llm_dtype_to_load(requested, model.config)
        if dtype is not None:  # the LLM only: trainables and the vision module stay float32, as in from_base_models
            model.language_model.to(dtype)
        return (model, info) if output_loading_info else model

    def read_trainable_weights(self, weights_file: str) -> dict[str, torch.Tensor]:
        """The tensors of a trainable-only safetensors file, checked against this model: every name a parameter that
        is trainable (or that `config.unfrozen_parameters` lists), finite, of the parameter's shape, and none
        missing."""
        own = dict(self.named_parameters())
        weight_names(weights_file)  # a clear error naming the file when it is not a readable safetensors file
        check_floating_weights(weights_file)
        tensors = {}
        with safe_open(weights_file, framework="pt") as handle:
            for name in handle.keys():
                if name not in own:
                    raise ValueError(f"{weights_file}: unknown parameter {name!r} for this model")
                if not own[name].requires_grad:
                    raise ValueError(
                        f"{weights_file}: {name!r} is a frozen base-model weight; a trainable-only checkpoint holds "
                        "only adapters, task tokens and LoRA weights (and the parameters its config lists as "
                        "unfrozen_parameters)"
                    )
                tensor = handle.get_tensor(name)
                check_finite({name: tensor}, weights_file)
                if tensor.shape != own[name].shape:
                    raise ValueError(
                        f"{weights_file}: {name} has shape {tuple(tensor.shape)} but this model expects "
                        f"{tuple(own[name].shape)}: the checkpoint was trained with a base LLM/vision module of "
                        f"other hidden sizes (text {self.config.text_config.hidden_size}, vision "
                        f"{self.config.vision_hidden_size}) or another number of tasks/task tokens"
                    )
                tensors[name] = tensor
        missing = set(self.trainable_state_dict()) - set(tensors)
        if missing:
            raise ValueError(f"{weights_file} lacks trainable parameters {sorted(missing)}")
        return tensors

    @torch.no_grad()
    def load_trainable_weights(self, weights_file: str, place=None):
        """Load a trainable-only safetensors file (`read_trainable_weights`, with its checks) into the parameters.
        `place(parameter, tensor)` turns a whole tensor into what the
        parameter holds (a sharding engine's shard: `lm4lv.modeling_lm4lv.engines.load_trainable_weights`)."""
        own = dict(self.named_parameters())
        for name, tensor in self.read_trainable_weights(weights_file).items():
            own[name].copy_(tensor if place is None else place(own[name], tensor))
