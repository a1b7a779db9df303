"""`lm4lv` commands check their arguments and files before loading any model: usage errors exit with status 2,
failures with status 1 and one line on stderr (no traceback unless --debug)."""

import json

import numpy as np
import pytest
from PIL import Image

from lm4lv.cli import main


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
