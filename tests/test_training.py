"""Trainer integration: loss logging, trainable-only checkpoints, exact resume, streaming, run_restoration, the
two-process launch, a killed save, gradient accumulation, the first-batch checks."""

import json
import math
import os
import sys

import datasets
import pytest
import torch
from safetensors import safe_open
from transformers import TrainerCallback

from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
from lm4lv.processing.data import bundled_corpus, paired_dataset
from lm4lv.trainers import LM4LVDataCollator, LM4LVTrainer, LM4LVTrainingArguments
from lm4lv.trainers.training import parse_arguments, train

from conftest import build_tiny, free_port, run_training

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_RESTORATION = os.path.join(REPOSITORY, "examples", "run_restoration.py")


@pytest.fixture(scope="module")
def crops():
    return bundled_corpus()["train"].select(range(48))


class StopAt(TrainerCallback):
    """Simulates an interruption: stops training after `step` steps (after that step's checkpoint is saved)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def make_trainer(crops, output_dir, max_steps=6, callbacks=None, **arguments):
    model, processor = build_tiny(task_names=("denoise", "deblur"))
    args = LM4LVTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=max_steps, save_steps=3,
        logging_steps=1, warmup_steps=2, learning_rate=1e-2, use_cpu=True, seed=0, disable_tqdm=True, **arguments,
    )
    dataset = paired_dataset(crops, ["denoise", "deblur"], 32, seed=0)
    return LM4LVTrainer(model=model, args=args, train_dataset=dataset, data_collator=LM4LVDataCollator(processor),
                        processing_class=processor, callbacks=callbacks)


def test_trainer_logs_losses_and_saves_trainable_weights(crops, tmp_path):
    trainer = make_trainer(crops, tmp_path)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 6 and all({"text_loss", "vision_loss"} <= set(entry) for entry in logs)
    for entry in logs:
        assert entry["loss"] == pytest.approx(entry["text_loss"] + entry["vision_loss"], rel=1e-4)
    assert logs[-1]["vision_loss"] < logs[0]["vision_loss"]
    with safe_open(str(tmp_path / "checkpoint-3" / "model.safetensors"), "pt") as handle:
        assert set(handle.keys()) == set(trainer.model.trainable_state_dict())
    assert os.path.exists(tmp_path / "checkpoint-3" / "processor_config.json")


def test_resume_gives_the_same_weights(crops, tmp_path):
    full = make_trainer(crops, tmp_path / "full")
    full.train()
    interrupted = make_trainer(crops, tmp_path / "resumed", callbacks=[StopAt(3)])
    interrupted.train()
    assert interrupted.state.global_step == 3
    resumed = make_trainer(crops, tmp_path / "resumed")
    with torch.no_grad():  # a different starting point: the checkpoint must override it
        for tensor in resumed.model.trainable_state_dict().values():
            tensor.normal_()
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-3"))
    for name, tensor in full.model.trainable_state_dict().items():
        assert torch.allclose(tensor, resumed.model.trainable_state_dict()[name], atol=1e-6), name


def test_streaming_training_draws_fresh_degradations_every_pass(crops, tmp_path):
    images = crops.select(range(4))
    stream = datasets.IterableDataset.from_generator(
        lambda: ({"image": row["image"]} for row in images), features=datasets.Features({"image": datasets.Image()})
    )
    model, processor = build_tiny(task_names=("denoise",))
    seen = []

    def recording_collator(examples):
        seen.extend(examples)
        return LM4LVDataCollator(processor)(examples)

    args = LM4LVTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=6, save_strategy="no", use_cpu=True,
        seed=0, disable_tqdm=True, report_to=[],
    )
    LM4LVTrainer(model=model, args=args, train_dataset=paired_dataset(stream, ["denoise"], 32, seed=0),
                 data_collator=recording_collator, processing_class=processor).train()
    # 6 steps of 2 = three passes over the 4 streamed images; pass e is epoch e of the same images in memory
    in_memory = paired_dataset(images, ["denoise"], 32, seed=0, epochs=3)
    assert [example["sample_id"] for example in seen] == [0, 1, 2, 3] * 3
    for position, example in enumerate(seen):
        assert torch.equal(example["degraded"], in_memory[position]["degraded"]), position
    assert not torch.equal(seen[0]["degraded"], seen[4]["degraded"])


def test_streaming_refuses_persistent_workers(crops, tmp_path):
    stream = datasets.IterableDataset.from_generator(
        lambda: ({"image": row["image"]} for row in crops), features=datasets.Features({"image": datasets.Image()})
    )
    model, processor = build_tiny(task_names=("denoise",))
    args = LM4LVTrainingArguments(output_dir=str(tmp_path), max_steps=2, use_cpu=True, report_to=[],
                                  dataloader_num_workers=2, dataloader_persistent_workers=True)
    with pytest.raises(ValueError, match="persistent data loader workers would not see"):
        LM4LVTrainer(model=model, args=args, train_dataset=paired_dataset(stream, ["denoise"], 32),
                     data_collator=LM4LVDataCollator(processor), processing_class=processor)


def test_run_restoration_end_to_end(base_model_dirs, tmp_path):
    llm, vision = base_model_dirs
    config = {
        "llm": llm, "vision": vision, "task": "denoise,flip", "task_token_length": 2,
        "output_dir": str(tmp_path / "out"),
        "max_steps": 4, "per_device_train_batch_size": 2, "use_cpu": True, "save_steps": 2, "disable_tqdm": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    model_args, data_args, training_args = parse_arguments([str(tmp_path / "config.json")])
    assert training_args.learning_rate == 3e-4 and training_args.adam_beta2 == 0.95  # the paper's recipe
    assert training_args.warmup_steps == 200 and training_args.max_grad_norm == 1.0
    assert training_args.weight_decay == 0.0 and training_args.lr_scheduler_type == "cosine"
    train(model_args, data_args, training_args)
    model = LM4LVForConditionalGeneration.from_pretrained(tmp_path / "out")
    assert model.config.task_names == ["denoise", "flip"] and model.config.task_token_length == 2


def test_yaml_config(tmp_path):
    (tmp_path / "c.yaml").write_text("llm: a\nvision: b\ntask: rotate\noutput_dir: o\nlearning_rate: 0.001\n")
    model_args, data_args, training_args = parse_arguments([str(tmp_path / "c.yaml")])
    assert (model_args.llm, data_args.task, training_args.learning_rate) == ("a", "rotate", 0.001)


def accelerate_launch(*args) -> list[str]:
    """`accelerate launch` with the repository's 2-process CPU config on a free port (the config's fixed port may be
    taken by another job on a shared machine)."""
    config = os.path.join(REPOSITORY, "examples", "accelerate", "cpu_2proc.yaml")
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    return [launcher, "launch", "--config_file", config, "--main_process_port", str(free_port()), *args]


SLOW_RANK_LAUNCHER = """
import runpy, sys, time
from transformers import Trainer

save_rng_state = Trainer._save_rng_state


def slowly_save_rng_state(self, output_dir):
    if self.args.process_index == 1:
        time.sleep(3)  # rank 1 writes its part of the checkpoint long after rank 0 has written its own
    save_rng_state(self, output_dir)


Trainer._save_rng_state = slowly_save_rng_state
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_accelerate_two_cpu_processes_match_one(base_model_dirs, tmp_path):
    """2 gloo processes x batch 2 follow the same loss curve as 1 process x batch 4 (same global batch), and every
    process's files land in the checkpoint even when one of them writes late."""

    llm, vision = base_model_dirs
    common = [RUN_RESTORATION, "--llm", llm, "--vision", vision, "--task", "denoise",
              "--max_steps", "4", "--save_steps", "4", "--logging_steps", "1", "--learning_rate", "1e-2",
              "--warmup_steps", "0", "--use_cpu", "--disable_tqdm", "true", "--seed", "0",
              "--train_sampling_strategy", "sequential"]
    one = run_training([sys.executable, *common, "--per_device_train_batch_size", "4"], tmp_path / "one")
    launcher = tmp_path / "slow_rank.py"  # rank 1 is slowed down while it writes its checkpoint files
    launcher.write_text(SLOW_RANK_LAUNCHER)
    two = run_training(accelerate_launch(str(launcher), *common, "--per_device_train_batch_size", "2"),
                       tmp_path / "two")
    checkpoint = tmp_path / "two" / "checkpoint-4"
    assert (checkpoint / "rng_state_0.pth").is_file() and (checkpoint / "rng_state_1.pth").is_file()
    assert not (tmp_path / "two" / LM4LVTrainer.staging_dir_name).exists()
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        # same samples per step and averaged gradients: equal up to float reduction order
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), (one, two)
        assert a["vision_loss"] == pytest.approx(b["vision_loss"], rel=1e-5), (one, two)


KILLED_RUN = """
import pathlib, sys, time
sys.path.insert(0, {tests!r})
from test_training import make_trainer
from lm4lv.processing.data import bundled_corpus
from lm4lv.trainers import LM4LVTrainer

out = pathlib.Path({out!r})
original = LM4LVTrainer._save_optimizer_and_scheduler

def slow_save(self, output_dir):  # the step-6 checkpoint hangs halfway (weights written, optimizer not yet)
    if self.state.global_step == 6:
        (out / "saving").touch()
        time.sleep(600)
    return original(self, output_dir)

LM4LVTrainer._save_optimizer_and_scheduler = slow_save
make_trainer(bundled_corpus()["train"].select(range(48)), out).train()
"""


def test_sigkill_mid_save_keeps_previous_checkpoint_and_resume_matches(crops, tmp_path):
    import signal
    import subprocess
    import time

    out = tmp_path / "killed"
    out.mkdir()
    script = KILLED_RUN.format(tests=os.path.dirname(os.path.abspath(__file__)), out=str(out))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "saving").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before the hanging save"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-3"]
    assert (out / LM4LVTrainer.staging_dir_name / "checkpoint-6" / "model.safetensors").exists()  # half-written
    fresh, _ = build_tiny(task_names=("denoise", "deblur"))
    fresh.load_trainable_weights(str(out / "checkpoint-3" / "model.safetensors"))  # still complete and loadable

    resumed = make_trainer(crops, out)
    resumed.train(resume_from_checkpoint=True)  # picks checkpoint-3, never the staging folder
    full = make_trainer(crops, tmp_path / "full")
    full.train()
    for name, tensor in full.model.trainable_state_dict().items():
        assert torch.allclose(tensor, resumed.model.trainable_state_dict()[name], atol=1e-6), name
    assert not (out / LM4LVTrainer.staging_dir_name).exists()


FAILING_WORKER = """
import os, sys
sys.path.insert(0, {tests!r})
from test_training import make_trainer
from lm4lv.processing.data import bundled_corpus

trainer = make_trainer(bundled_corpus()["train"].select(range(48)), {out!r}, max_steps=20)
collate = trainer.data_collator
calls = []

def failing_collator(examples):
    calls.append(1)
    if os.environ.get("RANK") == "1" and len(calls) == 3:
        raise RuntimeError("worker 1 hit a corrupt batch")
    return collate(examples)

trainer.data_collator = failing_collator
trainer.train()
"""


def test_two_process_training_fails_fast_when_one_worker_raises(tmp_path):
    import subprocess

    script = tmp_path / "failing_worker.py"
    script.write_text(FAILING_WORKER.format(tests=os.path.dirname(os.path.abspath(__file__)),
                                            out=str(tmp_path / "out")))
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    result = subprocess.run(accelerate_launch(str(script)), env=env, timeout=300, capture_output=True, text=True)
    assert result.returncode != 0
    assert "worker 1 hit a corrupt batch" in result.stdout + result.stderr


def test_gradient_accumulation_equals_the_whole_batch(crops, tmp_path):
    """2 accumulated batches of 2 train and log exactly like one batch of 4: the Trainer divides the model's mean
    losses by the accumulation steps (the model does not claim to scale them itself)."""
    updates, logged = {}, {}
    for batch_size, accumulation in ((4, 1), (2, 2)):
        model, processor = build_tiny()
        before = {name: tensor.clone() for name, tensor in model.trainable_state_dict().items()}
        args = LM4LVTrainingArguments(
            output_dir=str(tmp_path / f"{batch_size}x{accumulation}"), per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, max_steps=1, logging_steps=1, learning_rate=1.0, optim="sgd",
            warmup_steps=0, lr_scheduler_type="constant", max_grad_norm=0.0, use_cpu=True, seed=0,
            disable_tqdm=True, save_strategy="no", report_to=[],
        )
        trainer = LM4LVTrainer(model=model, args=args, train_dataset=paired_dataset(crops, ["denoise"], 32, seed=0),
                               data_collator=LM4LVDataCollator(processor), processing_class=processor)
        trainer.train()
        updates[accumulation] = {name: tensor - before[name] for name, tensor in model.trainable_state_dict().items()}
        logged[accumulation] = next(e for e in trainer.state.log_history if "loss" in e)
    for name, update in updates[1].items():
        torch.testing.assert_close(updates[2][name], update, atol=1e-6, rtol=1e-5)
    for key in ("loss", "text_loss", "vision_loss"):
        assert logged[2][key] == pytest.approx(logged[1][key], abs=1e-6), key


def test_gpu_training_arguments_ask_for_non_blocking_copies_and_leave_tf32_off(monkeypatch, tmp_path):
    """On a GPU the arguments ask for non-blocking copies and leave TF32 (a process-wide setting that would change
    a later generate()) off unless the user asks; on the CPU, or when the user chose, they stay as given (the GPU's
    answers are faked, and transformers' own checks skipped, since CI has no GPU)."""
    import transformers

    cpu = LM4LVTrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    assert cpu.tf32 is None and not cpu.accelerator_config.non_blocking
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transformers.TrainingArguments, "__post_init__", lambda self: None)
    gpu = LM4LVTrainingArguments(output_dir=str(tmp_path))
    assert gpu.tf32 is None and gpu.accelerator_config == {"non_blocking": True}
    chosen = LM4LVTrainingArguments(output_dir=str(tmp_path), tf32=True, accelerator_config={"non_blocking": False})
    assert chosen.tf32 is True and chosen.accelerator_config == {"non_blocking": False}


def test_trainer_checks_the_first_batch_only_and_keeps_losses_on_the_device(crops, tmp_path, monkeypatch):
    trainer = make_trainer(crops, tmp_path, max_steps=3)
    model = trainer.model
    seen, forward = [], model.forward

    def recording_forward(*args, check_inputs=True, **kwargs):
        seen.append(check_inputs)
        return forward(*args, check_inputs=check_inputs, **kwargs)

    monkeypatch.setattr(model, "forward", recording_forward)
    trainer.train()
    assert seen == [True, False, False]
    assert trainer.floating_point_ops({"input_ids": torch.zeros(2, 5)}) == 60 * model.num_parameters(
        exclude_embeddings=True)


def logged_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_a_compiled_model_is_compiled_once_and_its_first_batch_still_checked(crops, tmp_path):
    """Under `torch_compile` the compiled forward only sees `check_inputs=False`: one graph, no recompilation and no
    graph break at the checks; the eager model checks the first batch."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = make_trainer(crops, tmp_path / "compiled", max_steps=3, torch_compile=True,
                            torch_compile_backend="eager")
    compiled.train()
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert not torch._dynamo.config.suppress_errors  # the fallback is the compiled calls' only, not the process's
    collate = compiled.data_collator
    bad = make_trainer(crops, tmp_path / "bad", max_steps=2, torch_compile=True, torch_compile_backend="eager")
    bad.data_collator = lambda examples: {**collate(examples), "pixel_values": torch.full((4, 3, 32, 32), math.nan)}
    with pytest.raises(ValueError, match="pixel_values contain NaN or inf"):
        bad.train()
    torch._dynamo.reset()


def test_a_model_torch_compile_cannot_compile_trains_eagerly(crops, tmp_path, monkeypatch):
    """A compiler that fails leaves the step eager (torch warns) with the uncompiled run's losses, bit for bit."""
    from torch._dynamo.backends import registry

    def failing_compiler(graph_module, example_inputs):
        raise RuntimeError("this compiler cannot compile")

    registry.lookup_backend("eager")  # registers the built-in backends, so that the next line replaces one
    monkeypatch.setitem(registry._COMPILER_FNS, "eager", failing_compiler)
    torch._dynamo.reset()
    eager = make_trainer(crops, tmp_path / "eager", max_steps=3)
    eager.train()
    failing = make_trainer(crops, tmp_path / "failing", max_steps=3, torch_compile=True, torch_compile_backend="eager")
    failing.train()
    assert logged_losses(failing) == logged_losses(eager) and not torch._dynamo.config.suppress_errors
    torch._dynamo.reset()


def test_a_bad_first_batch_is_refused_by_the_trainer(crops, tmp_path):
    trainer = make_trainer(crops, tmp_path, max_steps=2)
    collate = trainer.data_collator

    def nan_pixels(examples):
        batch = collate(examples)
        batch["pixel_values"][0, 0, 0, 0] = float("nan")
        return batch

    trainer.data_collator = nan_pixels
    with pytest.raises(ValueError, match="pixel_values contain NaN or inf"):
        trainer.train()


def test_device_batches_refuse_a_stream_before_the_model_loads(tmp_path):
    from PIL import Image

    from lm4lv.trainers.training import DataArguments, ModelArguments

    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    model_args = ModelArguments(llm=str(tmp_path / "no-llm-here"), vision=str(tmp_path / "no-mae-here"))
    data_args = DataArguments(dataset=str(tmp_path / "images"), streaming=True, device_batches=True)
    training_args = LM4LVTrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="--device_batches decodes the whole corpus into device memory"):
        train(model_args, data_args, training_args)
