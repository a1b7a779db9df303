"""The `lm4lv` command line."""

import pytest
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
