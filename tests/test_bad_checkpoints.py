"""Loading refuses what would give a silent wrong result: a checkpoint is recognised by its content, incomplete or
non-finite weights raise naming the tensor, broken files raise naming the file, base-model paths resolve predictably."""

import json
import os
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration


@pytest.fixture(scope="module")
def saved(base_model_dirs, tmp_path_factory):
    """A trainable-only and a full checkpoint of one model, and the model."""
    llm, vision = base_model_dirs
    torch.manual_seed(0)
    model = LM4LVForConditionalGeneration.from_base_models(llm, vision, task_token_length=3)
    folder = tmp_path_factory.mktemp("saved")
    model.save_pretrained(folder / "trainable")
    model.save_pretrained(folder / "full", save_full=True)
    return model, folder


def copy_of(saved, kind: str, tmp_path):
    shutil.copytree(saved[1] / kind, tmp_path / kind)
    return tmp_path / kind


def rewrite_weights(folder, change):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)  # no lm4lv metadata tag: as another tool would re-save it


def test_a_trainable_only_file_without_the_tag_is_recognised_by_its_content(saved, tmp_path):
    model, _ = saved
    folder = copy_of(saved, "trainable", tmp_path)
    rewrite_weights(folder, lambda tensors: None)
    loaded = LM4LVForConditionalGeneration.from_pretrained(folder)
    for name, tensor in model.trainable_state_dict().items():
        assert torch.equal(loaded.trainable_state_dict()[name], tensor), name
    # the frozen LLM came from the base model folder, not from a random init
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)


@pytest.mark.parametrize("kind, name, value, message", [
    ("trainable", "out_adapter.weight", float("nan"), "out_adapter.weight holds NaN or inf"),
    ("trainable", "task_prompt_embeddings", float("inf"), "task_prompt_embeddings holds NaN or inf"),
    ("full", "in_adapter.bias", float("nan"), "in_adapter.bias holds NaN or inf"),
])
def test_non_finite_weights_are_refused_naming_the_tensor(saved, tmp_path, kind, name, value, message):
    folder = copy_of(saved, kind, tmp_path)

    def poison(tensors):
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = value

    rewrite_weights(folder, poison)
    with pytest.raises(ValueError, match=message):
        LM4LVForConditionalGeneration.from_pretrained(folder)


def test_a_full_checkpoint_missing_a_weight_raises(saved, tmp_path):
    folder = copy_of(saved, "full", tmp_path)
    rewrite_weights(folder, lambda tensors: tensors.pop("in_adapter.weight"))
    message = r"not a complete checkpoint of this model: missing keys \['in_adapter.weight'\]"
    with pytest.raises(ValueError, match=message):
        LM4LVForConditionalGeneration.from_pretrained(folder)


def test_a_trainable_file_may_not_replace_frozen_weights(saved, tmp_path):
    model, _ = saved
    folder = copy_of(saved, "trainable", tmp_path)
    name = next(n for n in model.state_dict() if n.endswith("embed_tokens.weight"))
    rewrite_weights(folder, lambda tensors: tensors.update({name: torch.zeros_like(model.state_dict()[name])}))
    with pytest.raises(ValueError, match="not a complete checkpoint of this model: missing keys"):
        LM4LVForConditionalGeneration.from_pretrained(folder)  # by content it is no trainable-only file
    with pytest.raises(ValueError, match=f"{name!r} is a frozen base-model weight"):
        model.load_trainable_weights(str(folder / "model.safetensors"))  # the Trainer's resume path


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage", b"truncated"])
def test_broken_weight_files_raise_naming_the_file(saved, tmp_path, content):
    folder = copy_of(saved, "trainable", tmp_path)
    (folder / "model.safetensors").write_bytes(content)
    with pytest.raises(ValueError, match=f"{folder / 'model.safetensors'}: not a readable safetensors file"):
        LM4LVForConditionalGeneration.from_pretrained(folder)


def test_an_index_without_weight_map_raises_naming_the_file(saved, tmp_path):
    folder = copy_of(saved, "full", tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match="model.safetensors.index.json: no weight_map"):
        LM4LVForConditionalGeneration.from_pretrained(folder)


def test_relative_base_model_paths_resolve_against_the_checkpoint(saved, base_model_dirs, tmp_path, monkeypatch):
    model, _ = saved
    llm, vision = base_model_dirs
    folder = copy_of(saved, "trainable", tmp_path)
    shutil.copytree(llm, folder / "base_llm")
    config = json.loads((folder / "config.json").read_text())
    config["text_model_name_or_path"] = "./base_llm"
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path.parent)  # another working directory
    loaded = LM4LVForConditionalGeneration.from_pretrained(folder)
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)

    config["text_model_name_or_path"] = os.path.join(str(tmp_path), "no-such-llm")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="The base LLM named in .*, .*no-such-llm, does not exist: pass its"):
        LM4LVForConditionalGeneration.from_pretrained(folder)


@pytest.mark.parametrize("content, message", [
    ([1, 2], "config.json holds a JSON list, not an object of config fields"),
    ("a string", "config.json holds a JSON str, not an object of config fields"),
    ("without text_config", "config.json has no text_config: an LM4LV config holds the base LLM's config"),
    ("without vision_config", "config.json has no vision_config: an LM4LV config holds the base LLM's config"),
])
def test_a_config_json_that_is_no_lm4lv_config_raises_naming_the_file(saved, tmp_path, content, message):
    folder = copy_of(saved, "trainable", tmp_path)
    if isinstance(content, str) and content.startswith("without "):
        config = json.loads((folder / "config.json").read_text())
        config.pop(content.removeprefix("without "))
        content = config
    (folder / "config.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=f"{folder}'s {message}"):
        LM4LVForConditionalGeneration.from_pretrained(folder)


@pytest.mark.parametrize("offline", [True, False])
def test_a_hub_id_without_the_hub_fails_within_seconds_naming_it(monkeypatch, offline):
    from huggingface_hub import constants

    from lm4lv.modeling_lm4lv import checkpointing
    from lm4lv.processing import LM4LVProcessor

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)

    def unreachable(address, timeout):
        assert timeout <= 5
        raise OSError("Name or service not known")

    monkeypatch.setattr(checkpointing.socket, "create_connection", unreachable)
    reason = "offline mode is on" if offline else "cannot be reached"
    for load, what in [(LM4LVForConditionalGeneration.from_pretrained, "checkpoint"),
                       (LM4LVProcessor.from_pretrained, "checkpoint"),
                       (lambda hub_id: LM4LVForConditionalGeneration.from_base_models(hub_id, "/no/mae"), "LLM")]:
        start = time.monotonic()
        with pytest.raises(OSError, match=f"The {what} 'no-org/no-model' is not a local folder, so it was taken as a "
                                          f"Hub id, but .*{reason}.*: pass the path of a local folder"):
            load("no-org/no-model")
        assert time.monotonic() - start < 5
