"""Trainer integration: loss logging, trainable-only checkpoints, exact resume, run_restoration, evaluation, card."""

import json
import os
import sys

import datasets
import pytest
import torch
from safetensors import safe_open
from transformers import TrainerCallback

from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
from lm4lv.processing.data import bundled_corpus, materialize_eval_set, paired_dataset
from lm4lv.trainers import LM4LVDataCollator, LM4LVTrainer, LM4LVTrainingArguments
from lm4lv.trainers.evaluation import (
    evaluate_restoration,
    feature_errors,
    input_feature_mse,
    mae_reconstruct,
    restore,
    results_markdown,
    write_results,
)
from lm4lv.trainers.model_card import build_model_card, push_to_hub
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


def make_trainer(crops, output_dir, max_steps=6, callbacks=None):
    model, processor = build_tiny(task_names=("denoise", "deblur"))
    args = LM4LVTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=max_steps, save_steps=3,
        logging_steps=1, warmup_steps=2, learning_rate=1e-2, use_cpu=True, seed=0, disable_tqdm=True,
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


def test_input_feature_mse_is_the_copy_baseline_on_the_vision_loss_scale(tmp_path):
    model, processor = build_tiny(task_names=("denoise",))
    validation = bundled_corpus()["validation"].select(range(5))
    eval_set = materialize_eval_set(validation, ["denoise"], 32, str(tmp_path / "eval"), seed=1)
    degraded = torch.stack([processor.preprocess_images(image)[0] for image in eval_set["degraded"]])
    clean = torch.stack([processor.preprocess_images(image)[0] for image in eval_set["clean"]])
    expected = torch.nn.functional.mse_loss(model.encode_images(degraded), model.encode_images(clean)).item()
    assert input_feature_mse(model, processor, eval_set, "denoise", batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert expected > 0
    unchanged = eval_set.map(lambda row: {"degraded": row["clean"]})
    assert input_feature_mse(model, processor, unchanged, "denoise") == 0.0


def test_feature_errors_are_the_vision_loss_and_the_generated_error_by_position(tmp_path):
    model, processor = build_tiny(task_names=("denoise",))
    validation = bundled_corpus()["validation"].select(range(5))
    eval_set = materialize_eval_set(validation, ["denoise"], 32, str(tmp_path / "eval"), seed=1)
    clean = torch.stack([processor.preprocess_images(image)[0] for image in eval_set["clean"]])
    prompts = processor(images=list(eval_set["degraded"]), task="denoise")
    generated = model.generate(**prompts).visual_features
    expected_by_position = (generated - model.encode_images(clean)).pow(2).mean(dim=(0, 2))
    errors = feature_errors(model, processor, eval_set, "denoise", batch_size=2)
    assert errors["generated_mse_by_position"] == pytest.approx(expected_by_position.tolist(), abs=1e-4)
    assert len(errors["generated_mse_by_position"]) == model.config.num_visual_tokens
    assert errors["generated_mse"] == pytest.approx(expected_by_position.mean().item(), rel=1e-5)
    teacher_forced = model(**processor(images=list(eval_set["degraded"]), targets=list(eval_set["clean"]),
                                       task="denoise")).vision_loss.item()
    assert errors["teacher_forced_mse"] == pytest.approx(teacher_forced, rel=1e-5)
    assert errors["gap"] == pytest.approx(errors["generated_mse"] - errors["teacher_forced_mse"])
    assert errors["generated_mse"] > 0


def test_evaluation_tables_grids_and_card(tmp_path, monkeypatch):
    model, processor = build_tiny(task_names=("denoise", "flip"))
    validation = bundled_corpus()["validation"].select(range(6))
    eval_set = materialize_eval_set(validation, ["denoise", "flip"], 32, str(tmp_path / "eval"), seed=1)
    methods = {
        "Input": lambda degraded, task: degraded,
        "MAE-r": lambda degraded, task: mae_reconstruct(model, degraded),
        "LM4LV": lambda degraded, task: restore(model, processor, degraded, task),
    }
    results, examples = evaluate_restoration(eval_set, methods, batch_size=4, grid_samples=2)
    assert set(results) == {"denoise", "flip"}
    for task in results:
        count = sum(1 for t in eval_set["task"] if t == task)
        assert results[task]["LM4LV"]["psnr"]["count"] == count
        assert len(examples[task]) == min(2, count) and len(examples[task][0]) == 4  # degraded, MAE-r, LM4LV, clean
    table = results_markdown(results)
    assert table.splitlines()[0].startswith("| Task | Input PSNR / SSIM | MAE-r PSNR / SSIM | LM4LV PSNR / SSIM")
    gain = results["flip"]["LM4LV"]["psnr"]["mean"] - results["flip"]["MAE-r"]["psnr"]["mean"]
    assert f"{gain:+.2f} dB" in table
    two_gains = results_markdown(results, ours=("LM4LV", "Input", "absent")).splitlines()
    assert two_gains[0].endswith("| Gain (LM4LV - MAE-r) | Gain (Input - MAE-r) |")
    assert two_gains[1].count("---") == 6 and all(row.count("|") == 7 for row in two_gains)
    paths = write_results(results, examples, str(tmp_path / "results"), list(methods))
    assert json.loads(open(paths["json"]).read())["flip"]["Input"]["psnr"]["count"] > 0
    assert os.path.getsize(paths["grid_flip"]) > 0

    card = build_model_card(model, "someone/lm4lv-tiny", results)
    assert card.data.library_name == "transformers"
    assert "lm4lv" in card.data.tags and "denoise" in card.data.tags
    values = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert values[("denoise", "psnr")] == round(results["denoise"]["LM4LV"]["psnr"]["mean"], 4)
    assert "| denoise |" in card.text and "someone/lm4lv-tiny" in card.text

    uploaded = {}

    def fake_upload_folder(self, repo_id, folder_path, commit_message, **kwargs):
        uploaded["repo"] = repo_id
        uploaded["files"] = sorted(os.listdir(folder_path))
        uploaded["card"] = open(os.path.join(folder_path, "README.md")).read()
        return "https://hub.invalid/commit/1"

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", fake_upload_folder)
    assert push_to_hub(model, processor, "someone/lm4lv-tiny", results) == "https://hub.invalid/commit/1"
    assert uploaded["repo"] == "someone/lm4lv-tiny"
    for name in ("README.md", "config.json", "model.safetensors", "processor_config.json", "tokenizer.json"):
        assert name in uploaded["files"], uploaded["files"]
    assert "eval_results" not in uploaded["card"] or "model-index" in uploaded["card"]
    assert "model-index" in uploaded["card"]


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


def test_mae_finetune_script_from_scratch(tmp_path, capsys):
    from lm4lv.commands.mae_finetune import main as mae_main
    from lm4lv.modeling_lm4lv import MAEVisionModule

    mae_main(["--from_scratch", "--mode", "masked", "--then_decoder", "--steps", "3", "--batch_size", "8",
              "--warmup_steps", "1", "--max_images", "16", "--output_dir", str(tmp_path / "mae")])
    out = capsys.readouterr().out
    assert "before: PSNR" in out and "after:  PSNR" in out
    report = json.loads((tmp_path / "mae" / "reconstruction.json").read_text())
    assert report["stages"] == ["masked", "decoder"]
    model = MAEVisionModule.from_pretrained(tmp_path / "mae")
    assert model.config.mask_ratio == 0.0  # saved ready for unmasked use


def test_decoder_only_training_freezes_the_encoder():
    from lm4lv.trainers.mae_training import train_vision_module

    model, _ = build_tiny()
    mae = model.vision_model
    encoder = {k: v.clone() for k, v in mae.vit.state_dict().items()}
    decoder = {k: v.clone() for k, v in mae.decoder.state_dict().items()}
    images = torch.rand(8, 3, 32, 32)
    losses = train_vision_module(mae, images, mode="decoder", steps=15, batch_size=8, learning_rate=3e-3,
                                 warmup_steps=1, progress=False)
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, mae.vit.state_dict()[k]) for k, v in encoder.items())
    assert any(not torch.equal(v, mae.decoder.state_dict()[k]) for k, v in decoder.items())
    assert not any(p.requires_grad for p in mae.parameters())  # frozen again afterwards


def test_lpips_unavailable_is_a_clear_error(monkeypatch):
    import builtins

    from lm4lv.trainers.mae_training import train_vision_module

    real_import = builtins.__import__

    def no_lpips(name, *args, **kwargs):
        if name == "lpips":
            raise ImportError("No module named 'lpips'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lpips)
    model, _ = build_tiny()
    with pytest.raises(RuntimeError, match="LPIPS needs the optional `lpips` package.*lpips_weight=0"):
        train_vision_module(model.vision_model, torch.rand(4, 3, 32, 32), lpips_weight=1.0, steps=1)


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


@pytest.mark.parametrize("variable, engine",
                         [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_a_requested_engine_that_did_not_start_stops_training(variable, engine, monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from lm4lv.trainers.engines import check_distributed_engine

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

    from lm4lv.trainers.engines import check_distributed_engine

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="started 2 processes \\(WORLD_SIZE\\) but this one trains as 1"):
        check_distributed_engine(SimpleNamespace(distributed_type=DistributedType.NO, num_processes=1))


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


def test_gpu_training_arguments_turn_on_tf32_and_non_blocking_copies(monkeypatch, tmp_path):
    """On a GPU with TF32 the arguments ask for it and for non-blocking copies; on the CPU, or when the user chose,
    they stay as given (the GPU's answers are faked, and transformers' own checks skipped, since CI has no GPU)."""
    import transformers

    from lm4lv.trainers import trainer

    cpu = LM4LVTrainingArguments(output_dir=str(tmp_path), use_cpu=True)
    assert cpu.tf32 is None and not cpu.accelerator_config.non_blocking
    monkeypatch.setattr(trainer, "is_torch_tf32_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(transformers.TrainingArguments, "__post_init__", lambda self: None)
    gpu = LM4LVTrainingArguments(output_dir=str(tmp_path))
    assert gpu.tf32 is True and gpu.accelerator_config == {"non_blocking": True}
    chosen = LM4LVTrainingArguments(output_dir=str(tmp_path), tf32=False, accelerator_config={"non_blocking": False})
    assert chosen.tf32 is False and chosen.accelerator_config == {"non_blocking": False}
    assert LM4LVTrainingArguments(output_dir=str(tmp_path), use_cpu=True).tf32 is None


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
