"""The `lm4lv` command line. Arguments and files are checked before any model loads: usage errors exit with status
2, failures with status 1 and one line on stderr (no traceback unless --debug)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lm4lv.cli import COMMANDS, main


@pytest.fixture(scope="module")
def checkpoint_dir(base_model_dirs, tmp_path_factory):
    """A trainable-only checkpoint with its processor, as `lm4lv train` writes it."""
    from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
    from lm4lv.processing import LM4LVProcessor

    from conftest import tiny_tokenizer

    llm, vision = base_model_dirs
    folder = tmp_path_factory.mktemp("ckpt")
    model = LM4LVForConditionalGeneration.from_base_models(llm, vision, task_names=["denoise", "flip"],
                                                           task_token_length=3)
    model.save_pretrained(folder)
    LM4LVProcessor.from_config(model.config, tiny_tokenizer()).save_pretrained(folder)
    return str(folder)


def test_restore_command(tmp_path, checkpoint_dir):
    Image.new("LA", (50, 37), (120, 255)).save(tmp_path / "in.png")  # gray + alpha: converted to RGB
    main(["restore", "--model", checkpoint_dir, "--task", "denoise", str(tmp_path / "in.png"),
          "-o", str(tmp_path / "out.png")])
    assert Image.open(tmp_path / "out.png").size == (50, 37)


def test_evaluate_command(tmp_path, checkpoint_dir, capsys):
    main(["evaluate", "--model", checkpoint_dir, "--num_samples", "3", "--output_dir", str(tmp_path)])
    table = (tmp_path / "results.md").read_text()
    assert "| denoise |" in table and "| flip |" in table  # every task scored on the same 3 images
    assert (tmp_path / "grid_flip.png").exists() and (tmp_path / "results.json").exists()
    assert "Gain (LM4LV - MAE-r)" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: lm4lv" in capsys.readouterr().out


def test_top_level_help(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in COMMANDS)


def test_the_evaluation_example_script_runs_on_the_installed_package(tmp_path, checkpoint_dir):
    import os
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                          "evaluate_restoration.py")
    result = subprocess.run([sys.executable, script, checkpoint_dir, "flip", "3"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| flip |" in result.stdout and "Gain (LM4LV - MAE-r)" in result.stdout


@pytest.fixture
def files(tmp_path):
    """A checkpoint folder with a config but no weights (loading it would fail), a good image and a corrupt one."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "lm4lv"}))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return tmp_path


@pytest.mark.parametrize("arguments, message", [
    (["restore", "--model", "{ckpt}", "--task", "denoise", "{dir}/missing.png", "-o", "{dir}/o.png"],
     "no such file: {dir}/missing.png"),
    (["restore", "--model", "{dir}/no-such-ckpt", "--task", "denoise", "{dir}/good.png", "-o", "{dir}/o.png"],
     "no such checkpoint folder: {dir}/no-such-ckpt"),
    (["restore", "--model", "{dir}", "--task", "denoise", "{dir}/good.png", "-o", "{dir}/o.png"],
     "has no config.json: not a checkpoint folder"),
    (["restore", "--model", "{ckpt}", "--task", "denoise", "--batch_size", "-1", "{dir}/good.png", "-o", "o.png"],
     "argument --batch_size: must be >= 1, got -1"),
    (["restore", "--model", "{ckpt}", "--task", "denoise", "--overlap", "x", "{dir}/good.png", "-o", "o.png"],
     "argument --overlap: expected an integer, got 'x'"),
    (["restore", "--model", "{ckpt}", "--task", "denoise", "{dir}/good.png", "-o", "{dir}/nowhere/o.png"],
     "the output's folder does not exist"),
    (["evaluate", "--model", "{ckpt}", "--num_samples", "0"], "argument --num_samples: must be >= 1, got 0"),
    (["evaluate", "--model", "{ckpt}", "--eval_set", "{dir}/no-such-set"], "--eval_set: no such folder"),
    (["ablate", "--max_steps", "0"], "argument --max_steps: must be >= 1, got 0"),
    (["app", "--model", "{ckpt}", "--port", "70000"], "argument --port: must be in [1, 65535], got 70000"),
])
def test_usage_errors_exit_2_before_loading_anything(files, arguments, message, capsys):
    def fill(text):
        return text.format(dir=files, ckpt=files / "ckpt")

    with pytest.raises(SystemExit) as exit_info:
        main([fill(argument) for argument in arguments])
    assert exit_info.value.code == 2
    assert fill(message) in capsys.readouterr().err


def test_a_bad_file_is_reported_before_the_model_loads_in_one_line(files, capsys):
    arguments = ["restore", "--model", str(files / "ckpt"), "--task", "denoise", str(files / "corrupt.png"), "-o",
                 str(files / "o.png")]
    assert main(arguments) == 1
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.strip()]
    assert lines[0].startswith(f"lm4lv restore: error: {files / 'corrupt.png'}: cannot read image")
    assert "Traceback" not in error and "weights" not in error  # the weightless checkpoint was never loaded
    assert "--debug" in lines[-1]
    with pytest.raises(ValueError, match="cannot read image"):  # --debug: the exception itself, traceback and all
        main([*arguments, "--debug"])


def test_a_failure_after_loading_exits_1_with_one_line(files, capsys):
    assert main(["restore", "--model", str(files / "ckpt"), "--task", "denoise", str(files / "good.png"), "-o",
                 str(files / "o.png")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("lm4lv restore: error: ") and "Traceback" not in error


def test_a_hub_id_while_offline_is_a_usage_error_naming_it(files, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit) as exit_info:
        main(["restore", "--model", "no-org/no-model", "--task", "denoise", str(files / "good.png"), "-o",
              str(files / "o.png")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "The checkpoint 'no-org/no-model' is not a local folder, so it was taken as a Hub id, but offline" in error
    assert "Traceback" not in error


def png_header(path, width: int, height: int):
    """A PNG whose header claims `width` x `height` pixels (its data is a few bytes: nothing must decode it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("arguments, message", [
    (["{image}", "-o", "{dir}/out.txt"], "argument -o/--output: {dir}/out.txt: .txt is not an image format this "
                                         "can write; end the name with .png (lossless) or .jpg"),
    (["{image}", "-o", "{dir}/o.png", "--task", "sharpen"],
     "--task sharpen: the checkpoint {ckpt} was trained for ['denoise', 'flip']"),
    (["{image}", "-o", "{dir}/o.png", "--overlap", "32"],
     "--overlap must be less than the model's input size 32, got 32"),
    (["{dir}/huge.png", "-o", "{dir}/o.png"],
     "{dir}/huge.png is 100000x100000 pixels (10000 MP); lm4lv restore takes at most 67 MP: crop or downscale it"),
    (["{dir}/big.png", "-o", "{dir}/o.png"],
     "{dir}/big.png is 11000x11000 pixels (121 MP); lm4lv restore takes at most 67 MP: crop or downscale it first"),
    (["{image}", "-o", "{dir}/o.png", "--task", "flip"],
     "--task flip acts on the whole image: give a 32x32 image (got 50x40); other tasks restore any size tile by tile"),
    pytest.param(["{image}", "-o", "{dir}/o.png", "--device", "cuda"],
                 "argument --device: cuda: no CUDA device is available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_restore_refuses_bad_arguments_naming_the_cause_before_the_model_loads(checkpoint_dir, tmp_path, arguments,
                                                                               message, capsys, monkeypatch):
    from lm4lv.commands import restore

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "in.png")
    png_header(tmp_path / "huge.png", 100000, 100000)
    png_header(tmp_path / "big.png", 11000, 11000)
    monkeypatch.setattr(restore, "load_restoration_model_from_args", lambda args: pytest.fail("the model loaded"))

    def fill(text):
        return text.format(dir=tmp_path, ckpt=checkpoint_dir, image=tmp_path / "in.png")

    command = ["restore", "--model", checkpoint_dir, "--task", "denoise", *map(fill, arguments)]
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2
    assert fill(message) in capsys.readouterr().err


def test_restore_takes_a_checkpoint_saved_without_its_processor(base_model_dirs, tmp_path):
    """`model.save_pretrained(folder)` alone, as the README's API section shows: the processor is rebuilt from the
    config and the base LLM's tokenizer."""
    from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration

    llm, vision = base_model_dirs
    LM4LVForConditionalGeneration.from_base_models(llm, vision, task_token_length=3).save_pretrained(tmp_path / "ckpt")
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "in.png")
    assert main(["restore", "--model", str(tmp_path / "ckpt"), "--task", "denoise", str(tmp_path / "in.png"), "-o",
                 str(tmp_path / "out.png")]) == 0
    assert Image.open(tmp_path / "out.png").size == (50, 40)


@pytest.mark.parametrize("content, message", [
    ({}, "{dataset} is an empty folder: put images in it (.png"),
    ({"a.png": b"not a png"}, "No readable images in {dataset}"),
    ({"README.txt": b"hello"}, "The dataset has no column 'image' (its columns: ['text']): give a folder of images"),
])
def test_train_refuses_a_dataset_without_images_naming_it_before_the_model_loads(base_model_dirs, tmp_path, content,
                                                                                  message, capsys, monkeypatch):
    from lm4lv.trainers import training

    llm, vision = base_model_dirs
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    for name, data in content.items():
        (dataset / name).write_bytes(data)
    monkeypatch.setattr(training, "build_model_and_processor", lambda *args: pytest.fail("the model loaded"))
    assert main(["train", "--llm", llm, "--vision", vision, "--dataset", str(dataset), "--output_dir",
                 str(tmp_path / "out"), "--max_steps", "1", "--use_cpu"]) == 1
    assert message.format(dataset=dataset) in capsys.readouterr().err


def test_train_takes_the_generated_training_images(base_model_dirs, tmp_path, monkeypatch):
    """`--training_images mix` trains on augmented crops and dead-leaves images made at the vision module's size."""
    from lm4lv.trainers import training

    seen = {}
    original = training.training_images

    def recorded(source, num_images, image_size, seed):
        seen.update(source=source, num_images=num_images, image_size=image_size)
        return original(source, num_images, image_size, seed)

    monkeypatch.setattr(training, "training_images", recorded)
    llm, vision = base_model_dirs
    assert main(["train", "--llm", llm, "--vision", vision, "--training_images", "mix", "--num_training_images", "8",
                 "--output_dir", str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "2",
                 "--use_cpu", "--report_to", "none", "--save_strategy", "no"]) == 0
    assert seen == {"source": "mix", "num_images": 8, "image_size": 32}
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_the_commands_help_imports_no_torch_and_the_command_restores(checkpoint_dir, tmp_path):
    """As the `lm4lv` console script runs (argv[0] named lm4lv): `--help` and `restore --help` import no torch, and a
    restore imports (and registers) what it needs."""
    import subprocess
    import sys

    script = ("import sys\nsys.argv = ['lm4lv', *sys.argv[1:]]\nfrom lm4lv.cli import main\n"
              "try:\n    status = main(sys.argv[1:])\nexcept SystemExit as exit:\n    status = exit.code\n"
              "print('torch imported:', 'torch' in sys.modules, 'status:', status)")
    for command in (["--help"], ["restore", "--help"]):
        run = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, check=True)
        assert run.stdout.strip().endswith("torch imported: False status: 0"), run.stdout[-300:] + run.stderr
    Image.new("RGB", (40, 36), (90, 120, 30)).save(tmp_path / "in.png")
    restore = ["restore", "--model", checkpoint_dir, "--task", "denoise", str(tmp_path / "in.png"), "-o",
               str(tmp_path / "out.png")]
    run = subprocess.run([sys.executable, "-c", script, *restore], capture_output=True, text=True, check=True)
    assert "status: 0" in run.stdout and Image.open(tmp_path / "out.png").size == (40, 36), run.stderr[-500:]
