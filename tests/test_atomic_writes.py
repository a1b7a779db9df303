"""Nothing a user had is lost when a write fails part-way (here: a writer that writes half its bytes, then raises
ENOSPC): checkpoints, `lm4lv restore` outputs and evaluation reports are replaced completely or not at all."""

import errno
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration


def disk_full_after_half(write):
    """Wrap a `write(data, path, ...)`-style writer: it writes to `path` through the real writer, truncates the file
    to half its size and raises ENOSPC, as a full disk would."""

    def failing(*args, **kwargs):
        write(*args, **kwargs)
        path = next(a for a in args if isinstance(a, (str, os.PathLike)))
        size = os.path.getsize(path)
        with open(path, "r+b") as handle:
            handle.truncate(size // 2)
        raise OSError(errno.ENOSPC, "No space left on device")

    return failing


@pytest.fixture
def model(base_model_dirs):
    llm, vision = base_model_dirs
    torch.manual_seed(0)
    return LM4LVForConditionalGeneration.from_base_models(llm, vision, task_token_length=3)


@pytest.mark.parametrize("save_full", [False, True])
def test_a_failed_save_leaves_the_previous_checkpoint_loadable(model, tmp_path, monkeypatch, save_full):
    import safetensors.torch
    import transformers.modeling_utils

    import lm4lv.modeling_lm4lv.checkpointing as checkpointing

    model.save_pretrained(tmp_path, save_full=save_full)
    before = sorted(os.listdir(tmp_path))
    old_weights = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    with torch.no_grad():
        model.out_adapter.weight.add_(1.0)  # the new weights differ, and so does the new config
    model.config.vision_loss_weight = 2.0
    failing = disk_full_after_half(safetensors.torch.save_file)
    monkeypatch.setattr(checkpointing, "save_file", failing)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", failing)
    with pytest.raises(OSError, match="No space left"):
        model.save_pretrained(tmp_path, save_full=save_full)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == before  # no staging folder or temporary file left
    reloaded = LM4LVForConditionalGeneration.from_pretrained(tmp_path)
    assert reloaded.config.vision_loss_weight == 1.0  # the old config, which describes the old weights
    for name, tensor in old_weights.items():
        assert torch.equal(reloaded.trainable_state_dict()[name], tensor), name


def test_a_failed_restore_keeps_the_previous_output(base_model_dirs, model, tmp_path, monkeypatch, capsys):
    from lm4lv.cli import main
    from lm4lv.processing import LM4LVProcessor

    from conftest import tiny_tokenizer

    model.save_pretrained(tmp_path / "ckpt")
    LM4LVProcessor.from_config(model.config, tiny_tokenizer()).save_pretrained(tmp_path / "ckpt")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    output = tmp_path / "out.png"
    Image.new("RGB", (7, 7), (1, 2, 3)).save(output)  # what the user had
    previous = output.read_bytes()
    monkeypatch.setattr(Image.Image, "save", disk_full_after_half(Image.Image.save))
    status = main(["restore", "--model", str(tmp_path / "ckpt"), "--task", "denoise", str(tmp_path / "in.png"),
                   "-o", str(output)])
    assert status == 1 and "No space left on device" in capsys.readouterr().err
    assert output.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "in.png", "out.png"]


def test_a_failed_report_write_keeps_the_previous_files(tmp_path, monkeypatch):
    import lm4lv.trainers.evaluation as evaluation

    results = {"denoise": {"Input": {"psnr": {"mean": 20.0, "median": 20.0, "count": 1},
                                     "ssim": {"mean": 0.5, "median": 0.5, "count": 1}}}}
    examples = {"denoise": [[torch.rand(3, 32, 32), torch.rand(3, 32, 32)]]}
    evaluation.write_results(results, examples, str(tmp_path), ["Input"])
    previous = {name: (tmp_path / name).read_bytes() for name in ("results.json", "results.md", "grid_denoise.png")}
    results["denoise"]["Input"]["psnr"]["mean"] = 30.0
    monkeypatch.setattr(Image.Image, "save", disk_full_after_half(Image.Image.save))
    with pytest.raises(OSError, match="No space left"):
        evaluation.write_results(results, examples, str(tmp_path), ["Input"])
    assert (tmp_path / "grid_denoise.png").read_bytes() == previous["grid_denoise.png"]
    assert '"mean": 30.0' in (tmp_path / "results.json").read_text()  # written completely before the grid failed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(previous)
