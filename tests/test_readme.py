"""The README's API example runs as written (with tiny local base models in place of its two locations), and the
folder it saves works with the restoration pipeline and `lm4lv restore`."""

import os
import re

import numpy as np
from PIL import Image

import lm4lv  # noqa: F401  (registers the pipeline task)
from lm4lv.cli import main

from conftest import random_images

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def api_example() -> str:
    """The first Python block of the README's "The API" section."""
    section = open(README, encoding="utf-8").read().split("\n## The API\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_api_example_runs_and_its_checkpoint_restores(base_model_dirs, tmp_path, monkeypatch):
    from transformers import pipeline

    llm, vision = base_model_dirs
    code = api_example()
    locations = '"meta-llama/Llama-2-7b-chat-hf", "path/to/decoder-finetuned-vit-mae-large"'
    assert locations in code
    monkeypatch.chdir(tmp_path)
    namespace = {"degraded": random_images(2), "clean": random_images(2, seed=1)}
    exec(code.replace(locations, f"{llm!r}, {vision!r}"), namespace)
    assert len(namespace["restored"]) == 2 and namespace["out"].loss.isfinite()
    assert sorted(os.listdir("ckpt")) == ["config.json", "model.safetensors"]

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save("in.png")
    assert pipeline("image-restoration", model="ckpt")("in.png", task="denoise").size == (50, 40)
    assert main(["restore", "--model", "ckpt", "--task", "deblur", "in.png", "-o", "out.png"]) == 0
    assert Image.open("out.png").size == (50, 40)
