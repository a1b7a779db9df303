"""Distributed engines and LM4LV's parameters: whether an engine holds only a shard of a parameter, the whole values
of DeepSpeed ZeRO-3 partitions, a check that a launch got the engine it asked for, and the moves of LM4LV's trainable
parameters (adapters, task tokens, LoRA) between the form an engine trains them in and whole tensors, so checkpoints
hold the trainable weights only, whole, under DDP, FSDP (v1 with `use_orig_params`, v2) and DeepSpeed ZeRO (stages
1-3). The model code uses the first two (reading frozen parts, saving); the Trainer the rest.

| engine | trainable parameters while training | made whole by |
| --- | --- | --- |
| DDP, ZeRO-1/2 | whole on every process | nothing |
| FSDP1 (`use_orig_params`) | views of each process's flat shard | `FullyShardedDataParallel.summon_full_params` |
| FSDP2 | `DTensor` shards | `DTensor.full_tensor()`; loading distributes the whole tensor |
| ZeRO-3 | partitioned (`ds_id`; whole below `stage3_param_persistence_threshold`) | `readable_parameters` |

accelerate and DeepSpeed are imported only where an engine needs them, so the model code (also exported as remote
code) loads without them.
"""

import os
from contextlib import contextmanager

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

# engine -> (the environment variable `accelerate launch` sets when a config asks for it, accelerate's
# `DistributedType` value)
REQUESTED_ENGINES = {"FSDP": ("ACCELERATE_USE_FSDP", "FSDP"), "DeepSpeed": ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED")}
# prefixes FSDP1 and activation checkpointing put into parameter names of wrapped submodules
WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def is_sharded(param) -> bool:
    """Whether an engine holds only a shard of `param`: an FSDP2 `DTensor` (it has a device mesh) or a DeepSpeed
    ZeRO-3 partition (`ds_id`)."""
    return hasattr(param, "device_mesh") or hasattr(param, "ds_id")


@contextmanager
def readable_parameters(parameters, writeback: bool = False):
    """Within the block, parameters that DeepSpeed ZeRO-3 partitioned hold their whole values (the others are left as
    they are); with `writeback`, what the block writes into them is scattered back (rank 0's values: every process
    must write the same), else they are read-only. A collective under ZeRO-3: every process must enter it. The one
    ZeRO-3 gather: for the fits that read the frozen parts before training (text-initialised task tokens,
    `in_adapter_init`, `out_adapter_init`) and for saving and loading the trainable weights."""
    partitioned = [param for param in parameters if hasattr(param, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0 if writeback else None):
        yield


def check_distributed_engine(accelerator):
    """Stop with a clear error when the launch asked for an engine (FSDP, DeepSpeed) or for several processes but
    accelerate set up something else, instead of silently training another way (e.g. accelerate turns an FSDP config
    into plain DDP on the CPU, and a script started without its launcher runs as one process)."""
    for engine, (variable, distributed_type) in REQUESTED_ENGINES.items():
        if os.environ.get(variable, "false").lower() == "true" and accelerator.distributed_type != distributed_type:
            raise RuntimeError(
                f"The launch asked for {engine} ({variable}=true) but accelerate set up "
                f"{accelerator.distributed_type.value}: nothing would be sharded. accelerate switches to {engine} only "
                "on the devices it supports for it (not for --use_cpu); check the launch config and the device."
            )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and accelerator.num_processes != world_size:
        raise RuntimeError(
            f"The launcher started {world_size} processes (WORLD_SIZE) but this one trains as "
            f"{accelerator.num_processes}: each would train its own copy of the model"
        )


def is_fsdp1(accelerator) -> bool:
    return accelerator.distributed_type == "FSDP" and not accelerator.is_fsdp2


@contextmanager
def whole_trainable_parameters(accelerator, model, writeback: bool):
    """Within the block, the unwrapped model's trainable parameters hold their whole values on every process (except
    FSDP2's `DTensor`s, which stay sharded: see the module's table); with `writeback=True` what the block writes into
    them is kept. A collective: every process must enter it. `model` is the engine's wrapped model."""
    unwrapped = accelerator.unwrap_model(model)
    if is_fsdp1(accelerator):
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, writeback=writeback):
            yield unwrapped
    else:  # ZeRO-3 partitions gathered (every process reads the same values); other engines' are whole
        with readable_parameters([param for param in unwrapped.parameters() if param.requires_grad], writeback):
            yield unwrapped


def unwrapped_name(name: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def gather_trainable_state_dict(accelerator, model) -> dict[str, torch.Tensor]:
    """Whole CPU copies of the trainable parameters, keyed by their names in the unwrapped model, on every process.
    A collective: every process must call it."""
    with whole_trainable_parameters(accelerator, model, writeback=False) as unwrapped:
        return {
            unwrapped_name(name): (param.full_tensor() if isinstance(param, DTensor) else param.detach()).cpu().clone()
            for name, param in unwrapped.named_parameters() if param.requires_grad
        }


def place_whole_tensor(param, tensor: torch.Tensor) -> torch.Tensor:
    """What `param` holds of a whole `tensor`: an FSDP2 `DTensor` parameter gets its process's shard, any other the
    tensor itself."""
    if isinstance(param, DTensor):
        return distribute_tensor(tensor.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None)
    return tensor


def load_trainable_weights(accelerator, model, weights_file: str):
    """Load a trainable-only safetensors file into the engine's model (`load_trainable_weights` of the unwrapped
    model, with its checks, on whole parameters or FSDP2 shards). A collective: every process must call it."""
    with whole_trainable_parameters(accelerator, model, writeback=True) as unwrapped:
        unwrapped.load_trainable_weights(weights_file, place=place_whole_tensor)


__all__ = ["check_distributed_engine", "gather_trainable_state_dict", "is_sharded", "load_trainable_weights",
           "readable_parameters", "whole_trainable_parameters"]
