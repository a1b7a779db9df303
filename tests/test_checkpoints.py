"""Checkpoints: trainable-only and full saves, Auto classes, remote-code export, and safe loading (a checkpoint is
recognised by its content, incomplete or non-finite weights raise naming the tensor, broken files raise naming the file,
base-model paths resolve predictably)."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from lm4lv.modeling_lm4lv import (
    LM4LVConfig,
    LM4LVForConditionalGeneration,
    MAEVisionModule,
    export_remote_code,
    hub_files,
)
from lm4lv.processing import LM4LVProcessor

from conftest import build_tiny, random_images, save_base_models, tiny_text_config, tiny_tokenizer


@pytest.fixture
def trained_from_base(tmp_path):
    reference, _ = build_tiny()
    llm_dir, vision_dir = save_base_models(reference, tmp_path)
    model = LM4LVForConditionalGeneration.from_base_models(llm_dir, vision_dir, task_names=["denoise"],
                                                           task_token_length=3, task_token_init="random")
    with torch.no_grad():  # stand-in for training
        model.in_adapter.weight.normal_(std=0.05)
        model.out_adapter.bias.uniform_()
    processor = LM4LVProcessor.from_config(model.config, tiny_tokenizer())
    return model, processor


def test_from_base_models_uses_pretrained_weights(trained_from_base, tmp_path):
    model, _ = trained_from_base
    llm = AutoModelForCausalLM.from_pretrained(tmp_path / "llm")
    assert torch.equal(model.language_model.lm_head.weight, llm.lm_head.weight)
    mae = MAEVisionModule.from_pretrained(tmp_path / "mae")
    assert torch.equal(model.vision_model.vit.embeddings.cls_token, mae.vit.embeddings.cls_token)
    assert model.config.text_model_name_or_path == str(tmp_path / "llm")
    assert model.config.image_start_token_ids == tiny_tokenizer().encode("<Img>", add_special_tokens=False)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(model.trainable_state_dict())


def test_trainable_only_checkpoint_round_trip(trained_from_base, tmp_path):
    model, processor = trained_from_base
    model.save_pretrained(tmp_path / "ckpt")
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as handle:
        assert set(handle.keys()) == set(model.trainable_state_dict())
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]
    reloaded = LM4LVForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    batch = processor(images=random_images(2))
    assert torch.equal(model.generate(**batch).pixel_values, reloaded.generate(**batch).pixel_values)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


def test_full_checkpoint_round_trip_and_auto_classes(trained_from_base, tmp_path):
    model, processor = trained_from_base
    model.save_pretrained(tmp_path / "full", save_full=True)
    assert AutoConfig.from_pretrained(tmp_path / "full").model_type == "lm4lv"
    reloaded = AutoModel.from_pretrained(tmp_path / "full")
    assert isinstance(reloaded, LM4LVForConditionalGeneration)
    batch = processor(images=random_images(2))
    assert torch.equal(model.generate(**batch).pixel_values, reloaded.generate(**batch).pixel_values)
    assert {n for n, p in reloaded.named_parameters() if p.requires_grad} == set(model.trainable_state_dict())


@pytest.mark.parametrize("save_full", [False, True])
def test_bfloat16_llm_loading_keeps_trainables_float32(trained_from_base, tmp_path, save_full):
    from lm4lv.trainers.evaluation import load_restoration_model

    model, processor = trained_from_base
    model.save_pretrained(tmp_path / "ckpt", save_full=save_full)
    reloaded = load_restoration_model(str(tmp_path / "ckpt"), llm_dtype="bfloat16", device="cpu")
    assert reloaded.language_model.lm_head.weight.dtype == torch.bfloat16
    assert {tensor.dtype for tensor in reloaded.trainable_state_dict().values()} == {torch.float32}
    assert next(reloaded.vision_model.parameters()).dtype == torch.float32
    assert torch.equal(reloaded.in_adapter.weight, model.in_adapter.weight)
    batch = processor(images=random_images(2))
    generated = reloaded.generate(**batch)
    assert generated.has_image.all() and torch.isfinite(generated.pixel_values).all()


def test_processor_round_trip(trained_from_base, tmp_path):
    model, processor = trained_from_base
    processor.save_pretrained(tmp_path / "proc")
    with pytest.raises(ValueError, match="model's config"):  # a processor alone does not know the tasks
        LM4LVProcessor.from_pretrained(tmp_path / "proc")
    saved = json.loads((tmp_path / "proc" / "processor_config.json").read_text())
    assert "task_names" not in json.dumps(saved) and "model_config" not in json.dumps(saved)
    model.save_pretrained(tmp_path / "proc")  # a checkpoint: the model's config.json is the processor's source
    reloaded = LM4LVProcessor.from_pretrained(tmp_path / "proc")
    images = random_images(2)
    a, b = processor(images=images, targets=images), reloaded(images=images, targets=images)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert reloaded.task_names == processor.task_names


def test_remote_code_export_loads_without_the_package(trained_from_base, tmp_path):
    model, processor = trained_from_base
    export_remote_code(model, tmp_path / "hub")
    assert "auto_map" not in model.config.to_dict()
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_lm4lv.LM4LVForConditionalGeneration"
    batch = processor(images=random_images(1))
    torch.save({k: v for k, v in batch.items()}, tmp_path / "batch.pt")
    expected = model.generate(**batch).pixel_values
    script = f"""
import sys
sys.modules["lm4lv"] = None  # this package cannot be imported here
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(tmp_path / "hub")!r}, trust_remote_code=True)
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
batch = torch.load({str(tmp_path / "batch.pt")!r})
torch.save(model.generate(**batch).pixel_values, {str(tmp_path / "out.pt")!r})
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, env=env, timeout=300)
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)


def test_pickle_only_checkpoint_is_refused(tmp_path):
    model, _ = build_tiny()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="only pickle weights"):
        LM4LVForConditionalGeneration.from_pretrained(tmp_path)


def test_missing_weights_are_reported(tmp_path):
    model, _ = build_tiny()
    model.config.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing weights"):
        LM4LVForConditionalGeneration.from_pretrained(tmp_path)


def test_checkpoint_onto_other_base_model_is_refused(trained_from_base, tmp_path):
    model, _ = trained_from_base
    model.save_pretrained(tmp_path / "ckpt")
    other = AutoModelForCausalLM.from_config(tiny_text_config("llama").__class__(
        **{**tiny_text_config("llama").to_dict(), "hidden_size": 32, "intermediate_size": 64}))
    other.save_pretrained(tmp_path / "other_llm")
    tiny_tokenizer().save_pretrained(tmp_path / "other_llm")
    with pytest.raises(ValueError, match="LLM hidden_size=64 but the loaded base model has 32"):
        LM4LVForConditionalGeneration.from_pretrained(tmp_path / "ckpt", llm=str(tmp_path / "other_llm"))
    # weights that do not fit the config (e.g. hand-edited config) are refused with the parameter named
    config = LM4LVConfig.from_pretrained(tmp_path / "ckpt")
    config.text_config.hidden_size = 32
    config.text_config.intermediate_size = 64
    mismatch = r"in_adapter\.\w+ has shape \(64,.*\) but this model expects \(32,.*other hidden sizes"
    with pytest.raises(ValueError, match=mismatch):
        LM4LVForConditionalGeneration.from_pretrained(tmp_path / "ckpt", llm=str(tmp_path / "other_llm"), config=config)


def test_save_pretrained_takes_gathered_trainable_weights_and_refuses_shards(tmp_path):
    """Under a sharding engine the Trainer gathers the trainable weights and passes them as state_dict; without it,
    sharded parameters are refused instead of saving one process's shard."""
    from safetensors.torch import load_file

    model, _ = build_tiny()
    gathered = {name: torch.full_like(tensor, 0.5) for name, tensor in model.trainable_state_dict().items()}
    model.save_pretrained(tmp_path / "gathered", state_dict={**gathered, "frozen.weight": torch.zeros(1)})
    saved = load_file(tmp_path / "gathered" / "model.safetensors")
    assert saved.keys() == gathered.keys() and all(torch.equal(saved[name], gathered[name]) for name in saved)
    incomplete = {name: tensor for name, tensor in gathered.items() if name != "out_adapter.bias"}
    with pytest.raises(ValueError, match=r"state_dict lacks trainable parameters \['out_adapter.bias'\]"):
        model.save_pretrained(tmp_path / "incomplete", state_dict=incomplete)
    model.in_adapter.weight.ds_id = 0  # how DeepSpeed ZeRO-3 marks a partitioned parameter
    with pytest.raises(ValueError, match="The trainable parameters are sharded"):
        model.save_pretrained(tmp_path / "sharded")
    assert not (tmp_path / "sharded").exists()


@pytest.mark.parametrize("save_full", [False, True])
def test_a_parameter_the_user_unfroze_round_trips_through_both_formats(trained_from_base, tmp_path, save_full):
    model, _ = trained_from_base
    norm = model.language_model.model.norm.weight
    norm.requires_grad_(True)
    with torch.no_grad():
        norm.add_(0.5)  # stand-in for training it
    model.save_pretrained(tmp_path / "ckpt", save_full=save_full)
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as handle:
        assert "language_model.model.norm.weight" in handle.keys()
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["unfrozen_parameters"] == ["language_model.model.norm.weight"]
    reloaded = LM4LVForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(reloaded.language_model.model.norm.weight, norm)
    assert reloaded.language_model.model.norm.weight.requires_grad
    assert set(reloaded.trainable_state_dict()) == set(model.trainable_state_dict())


def test_trainable_only_save_refuses_keywords_it_does_not_use(trained_from_base, tmp_path):
    model, _ = trained_from_base
    with pytest.raises(TypeError, match=r"takes no \['safe_serialization', 'variant'\].*save_full=True"):
        model.save_pretrained(tmp_path / "ckpt", variant="fp16", safe_serialization=True)
    assert not (tmp_path / "ckpt").exists()


def test_trainable_only_save_pushes_to_the_hub(trained_from_base, tmp_path, monkeypatch):
    """`push_to_hub=True` uploads the trainable-only files (the Hub calls are replaced by recorders)."""
    from transformers.utils import hub

    model, _ = trained_from_base
    uploads = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

    def upload(self, working_dir, repo_id, files_timestamps, **kwargs):
        uploads.append((repo_id, sorted(os.listdir(working_dir)), kwargs.get("commit_message")))

    monkeypatch.setattr(hub, "hf_api", lambda: FakeApi())
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *args, **kwargs: type(
        "Card", (), {"save": lambda self, path: open(path, "w").close()})())
    monkeypatch.setattr(hub.PushToHubMixin, "_upload_modified_files", upload)
    model.save_pretrained(tmp_path / "ckpt", push_to_hub=True, repo_id="someone/lm4lv-test", commit_message="hi")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]
    assert uploads == [("someone/lm4lv-test", ["README.md", "config.json", "model.safetensors"], "hi")]


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
    with pytest.raises(ValueError, match=f"{name!r} is a frozen base-model weight"):
        LM4LVForConditionalGeneration.from_pretrained(folder)  # mostly trainable tensors: named, not "incomplete"
    with pytest.raises(ValueError, match=f"{name!r} is a frozen base-model weight"):
        model.load_trainable_weights(str(folder / "model.safetensors"))  # the Trainer's resume path


def test_a_trainable_file_with_an_unknown_tensor_names_it(saved, tmp_path):
    folder = copy_of(saved, "trainable", tmp_path)
    rewrite_weights(folder, lambda tensors: tensors.update({"my_extra.weight": torch.zeros(3)}))
    with pytest.raises(ValueError, match="unknown parameter 'my_extra.weight' for this model"):
        LM4LVForConditionalGeneration.from_pretrained(folder)


def test_integer_weights_are_refused_naming_the_tensor(saved, tmp_path):
    for kind in ("trainable", "full"):
        folder = copy_of(saved, kind, tmp_path)
        rewrite_weights(folder, lambda tensors: tensors.update(
            {"in_adapter.bias": tensors["in_adapter.bias"].round().to(torch.int64)}))
        message = "in_adapter.bias is stored as I64; weights must be floating point"
        with pytest.raises(ValueError, match=message):
            LM4LVForConditionalGeneration.from_pretrained(folder)


@pytest.mark.parametrize("what", ["LLM", "vision module", "expert checkpoint"])
def test_folders_of_pickle_weights_are_refused_naming_the_file(saved, base_model_dirs, tmp_path, what):
    """Every load the package does reads safetensors only: a base model or expert folder holding only
    `pytorch_model.bin` is refused, naming the file and how to convert it, before torch reads it."""
    from lm4lv.modeling_lm4lv import LM4LVExpertModel, load_vision_module

    llm, vision = base_model_dirs
    source = {"LLM": llm, "vision module": vision, "expert checkpoint": vision}[what]
    folder = tmp_path / "pickled"
    shutil.copytree(source, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")  # no pickle is ever read: any bytes do
    message = f"The {what} folder {folder} holds only pickle weights \\(pytorch_model.bin\\); LM4LV loads safetensors"
    with pytest.raises(ValueError, match=message):
        if what == "LLM":
            LM4LVForConditionalGeneration.from_base_models(str(folder), vision)
        elif what == "vision module":
            load_vision_module(str(folder))
        else:
            LM4LVExpertModel.from_pretrained(str(folder))


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

    from lm4lv.processing import LM4LVProcessor

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)

    def unreachable(address, timeout):
        assert timeout <= 5
        raise OSError("Name or service not known")

    monkeypatch.setattr(hub_files.socket, "create_connection", unreachable)
    reason = "offline mode is on" if offline else "cannot be reached"
    for load, what in [(LM4LVForConditionalGeneration.from_pretrained, "checkpoint"),
                       (LM4LVProcessor.from_pretrained, "checkpoint"),
                       (lambda hub_id: LM4LVForConditionalGeneration.from_base_models(hub_id, "/no/mae"), "LLM")]:
        start = time.monotonic()
        with pytest.raises(OSError, match=f"The {what} 'no-org/no-model' is not a local folder, so it was taken as a "
                                          f"Hub id, but .*{reason}.*: pass the path of a local folder"):
            load("no-org/no-model")
        assert time.monotonic() - start < 5
