"""FSDP (v1 with use_orig_params, v2) and DeepSpeed ZeRO-2/3 train LM4LV through `accelerate launch` and the unchanged
examples/run_restoration.py on 2 CPU processes: the loss curve follows 1 process at the same global batch,
checkpoints and the output folder hold the trainable weights only, whole, loadable by `from_pretrained`, and resuming
from a checkpoint ends at the uninterrupted run's weights. The launch configs are the shipped GPU ones with only the
CPU-specific settings changed; tests/cpu_engine_shim.py holds the workarounds that make the CPU runs possible. A launch
that did not get the engine it asked for stops training."""

import json
import os
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
from lm4lv.trainers import LM4LVTrainer

from conftest import free_port, run_training

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_CONFIGS = os.path.join(REPOSITORY, "examples", "accelerate")
SHIM = os.path.join(REPOSITORY, "tests", "cpu_engine_shim.py")
RUN_RESTORATION = os.path.join(REPOSITORY, "examples", "run_restoration.py")
TRAINING = ["--task", "denoise", "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1",
            "--learning_rate", "1e-2", "--warmup_steps", "0", "--disable_tqdm", "true", "--seed", "0",
            "--train_sampling_strategy", "sequential",
            # the options that read the frozen parts before training (partitioned under ZeRO-3) or in the loss
            "--in_adapter_init", "embedding_subspace", "--out_adapter_init", "ridge", "--task_token_init", "text",
            "--task_token_init_text", "Remove the noise.", "--pixel_loss_weight", "1.0"]
ENGINE_ARGUMENTS = {"fsdp1": ["--use_cpu"], "fsdp2": ["--use_cpu"],
                    "zero2": ["--ddp_backend", "gloo"], "zero3": ["--ddp_backend", "gloo"]}


def launch_config(engine: str, folder) -> str:
    """The shipped FSDP or DeepSpeed config for 2 CPU processes: only the settings the CPU needs are changed."""
    if engine.startswith("fsdp"):
        with open(os.path.join(SHIPPED_CONFIGS, "fsdp_7b_bf16.yaml")) as handle:
            config = yaml.safe_load(handle)
        config["fsdp_config"].update(fsdp_version=int(engine[-1]), fsdp_cpu_ram_efficient_loading=False,
                                     fsdp_sync_module_states=False)
        config["mixed_precision"] = "no"  # float32, as the 1-process run (bf16 autocast is emulated on most CPUs)
    else:
        pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (README: DS_BUILD_OPS=0 pip install "
                                                "--no-build-isolation deepspeed)")
        with open(os.path.join(SHIPPED_CONFIGS, "deepspeed_zero3_bf16.yaml")) as handle:
            config = yaml.safe_load(handle)
        with open(os.path.join(REPOSITORY, config["deepspeed_config"]["deepspeed_config_file"])) as handle:
            deepspeed_config = json.load(handle)
        # stage 2 or 3; threshold 0: even the tiny test adapters are partitioned, as LLaMA-7B-sized ones are
        deepspeed_config["zero_optimization"].update(stage=int(engine[-1]), stage3_param_persistence_threshold=0)
        config["deepspeed_config"]["deepspeed_config_file"] = str(folder / "deepspeed.json")
        (folder / "deepspeed.json").write_text(json.dumps(deepspeed_config))
    config.update(num_processes=2, main_process_ip="127.0.0.1")
    path = folder / f"{engine}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def saved_tensor_names(checkpoint) -> set[str]:
    """Names of every tensor a checkpoint holds that names a model parameter: safetensors files, DeepSpeed's module
    states and distributed-checkpoint (DCP) folders."""
    from torch.distributed.checkpoint import FileSystemReader

    names = set()
    for folder, _, files in os.walk(checkpoint):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".safetensors"):
                names |= set(load_file(path))
            elif name.endswith("model_states.pt"):
                names |= set(torch.load(path, weights_only=False, map_location="cpu")["module"])
            elif name == ".metadata":
                names |= set(FileSystemReader(folder).read_metadata().state_dict_metadata)
    return names


@pytest.fixture(scope="module")
def one_process(base_model_dirs, tmp_path_factory):
    """1 process x batch 4: the losses and the final trainable weights every engine must reproduce."""
    llm, vision = base_model_dirs
    output_dir = tmp_path_factory.mktemp("one") / "run"
    losses = run_training([sys.executable, RUN_RESTORATION, "--llm", llm, "--vision", vision, *TRAINING, "--use_cpu",
                        "--per_device_train_batch_size", "4"], output_dir)
    return losses, load_file(output_dir / "model.safetensors")


@pytest.mark.parametrize("engine", list(ENGINE_ARGUMENTS))
def test_engine_trains_checkpoints_and_resumes_like_one_process(engine, one_process, base_model_dirs, tmp_path):
    reference_losses, reference_weights = one_process
    llm, vision = base_model_dirs
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    command = [launcher, "launch", "--config_file", launch_config(engine, tmp_path), "--main_process_port",
               str(free_port()), SHIM, RUN_RESTORATION, "--llm", llm, "--vision", vision, *TRAINING,
               *ENGINE_ARGUMENTS[engine], "--per_device_train_batch_size", "2"]

    losses = run_training(command, tmp_path / "run")
    assert len(losses) == len(reference_losses) == 4
    for ours, reference in zip(losses, reference_losses):  # same samples per step, gradients averaged over 2
        for key in ("loss", "vision_loss", "text_loss"):
            assert ours[key] == pytest.approx(reference[key], rel=1e-5), (engine, losses, reference_losses)

    trainable = set(reference_weights)
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        folder = tmp_path / "run" / checkpoint
        weights = load_file(folder / "model.safetensors")  # whole tensors, not one process's shard
        assert {name: tuple(t.shape) for name, t in weights.items()} == {
            name: tuple(t.shape) for name, t in reference_weights.items()}
        frozen = {name for name in saved_tensor_names(folder) if "language_model" in name or "vision_model" in name}
        assert not frozen, f"{engine} wrote frozen weights into {checkpoint}: {sorted(frozen)[:5]}"
    assert not (tmp_path / "run" / LM4LVTrainer.staging_dir_name).exists()

    model = LM4LVForConditionalGeneration.from_pretrained(tmp_path / "run")
    assert set(model.trainable_state_dict()) == trainable
    for name, tensor in reference_weights.items():
        torch.testing.assert_close(model.trainable_state_dict()[name], tensor, rtol=1e-5, atol=1e-5)

    resumed = run_training([*command, "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint-2")],
                        tmp_path / "resumed")
    assert [entry["step"] for entry in resumed] == [1, 2, 3, 4]  # steps 1-2 from the checkpoint's history
    for ours, uninterrupted in zip(resumed[2:], losses[2:]):
        assert ours["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-5), (engine, resumed, losses)
    uninterrupted_weights = load_file(tmp_path / "run" / "model.safetensors")
    for name, tensor in load_file(tmp_path / "resumed" / "model.safetensors").items():
        torch.testing.assert_close(tensor, uninterrupted_weights[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variable, engine",
                         [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_a_requested_engine_that_did_not_start_stops_training(variable, engine, monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from lm4lv.modeling_lm4lv.engines import check_distributed_engine

    fallback = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, num_processes=2)  # what --use_cpu gives
    monkeypatch.setenv("WORLD_SIZE", "2")
    check_distributed_engine(fallback)  # nothing requested: plain DDP is what was asked for
    monkeypatch.setenv(variable, "true")
    with pytest.raises(RuntimeError, match=f"asked for {engine} \\({variable}=true\\) but accelerate set up MULTI_CPU"):
        check_distributed_engine(fallback)
    granted = DistributedType.FSDP if engine == "FSDP" else DistributedType.DEEPSPEED
    check_distributed_engine(SimpleNamespace(distributed_type=granted, num_processes=2))


def test_one_process_under_a_multi_process_launch_stops_training(monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from lm4lv.modeling_lm4lv.engines import check_distributed_engine

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="started 2 processes \\(WORLD_SIZE\\) but this one trains as 1"):
        check_distributed_engine(SimpleNamespace(distributed_type=DistributedType.NO, num_processes=1))
