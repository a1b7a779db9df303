"""Run a training script under FSDP or DeepSpeed on CPU processes: test-only workarounds, never on the GPU path.

    accelerate launch --config_file CONFIG tests/cpu_engine_shim.py examples/run_restoration.py ...

- accelerate 1.15's `AcceleratorState` switches to FSDP only for GPU-like backends, so an FSDP launch with `--use_cpu`
  silently becomes plain DDP (`MULTI_CPU`; `LM4LVTrainer` refuses that fallback). The shim sets the FSDP distributed
  type and plugin on such a `MULTI_CPU` state, so the 2-process CPU tests run the same FSDP code (wrapping, sharded
  parameters and gradients, state dicts) as GPU runs. The FSDP configs also need `fsdp_sync_module_states: false`
  and `fsdp_cpu_ram_efficient_loading: false` on the CPU (accelerate looks for a GPU-like device to sync from).
- DeepSpeed on the CPU (`DS_ACCELERATOR=cpu`, `--ddp_backend gloo`) JIT-compiles a shared-memory all-reduce op with a
  C++ compiler when its communication backend starts; the shim makes it use plain gloo collectives instead, so the
  tests compile nothing.
- After the script has finished, a process sometimes aborted while C++ statics were destroyed at exit ("terminate
  called without an active exception"; FSDP2 and ZeRO-3, about one run of the engine tests in two on a 2-core
  machine): the shim leaves with `os._exit(0)` once the script returned.
"""

import os
import runpy
import sys

import torch
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType, is_deepspeed_available

accelerator_state_init = AcceleratorState.__init__


def init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    accelerator_state_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.fsdp_plugin = fsdp_plugin
        # on this state and on the PartialState every later AcceleratorState() copies its values from; the device is
        # "cpu", not "cpu:0": FSDP1 requires the parameters' device to equal its `device_id`
        for state in (self.__dict__, PartialState._shared_state):
            state.update(distributed_type=DistributedType.FSDP, device=torch.device("cpu"))


AcceleratorState.__init__ = init_with_fsdp_on_cpu
if is_deepspeed_available():
    import deepspeed.comm.torch  # noqa: F401  (the package's `torch` attribute is torch itself: patch the module)

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
# the script has finished: leave before C++ statics are destroyed (see the module docstring)
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
