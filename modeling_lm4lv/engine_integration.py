"""What the distributed engines change about parameters, for the model code that must read or save them:
whether an engine holds only a shard of a parameter, and the whole values of DeepSpeed ZeRO-3 partitions.
`lm4lv.trainers.engines` builds the trainer-side engine support on these."""

from contextlib import contextmanager


def is_sharded(param) -> bool:
    """Whether an engine holds only a shard of `param`: an FSDP2 `DTensor` (it has a device mesh) or a DeepSpeed
    ZeRO-3 partition (`ds_id`)."""
    return hasattr(param, "device_mesh") or hasattr(param, "ds_id")


@contextmanager
def readable_parameters(parameters):
    """Within the block, parameters that DeepSpeed ZeRO-3 partitioned at load time (`zero.Init`, before any engine
    exists) hold their whole values, read-only; other parameters are left as they are. A collective under ZeRO-3: every
    process must enter it. For the fits that read the frozen parts before training (text-initialised task tokens,
    `in_adapter_init`, `out_adapter_init`)."""
    partitioned = [param for param in parameters if hasattr(param, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield
