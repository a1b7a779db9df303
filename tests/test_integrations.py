"""Ecosystem integrations: task tokens as peft prompt-tuning embeddings, LoRA on the LLM through peft, timm
vision encoders."""

import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from peft import PeftModel, PromptTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from lm4lv.modeling_lm4lv import LM4LVConfig, LM4LVForConditionalGeneration
from lm4lv.processing import LM4LVProcessor

from conftest import random_images

INIT_TEXT = "Remove the noise"


def from_base(base_model_dirs, **kwargs):
    llm, vision = base_model_dirs
    torch.manual_seed(0)
    model = LM4LVForConditionalGeneration.from_base_models(llm, vision, task_names=["denoise", "deblur"],
                                                           task_token_length=3, **kwargs).eval()
    return model, LM4LVProcessor.from_config(model.config, AutoTokenizer.from_pretrained(llm))


# ---------------------------------------------------------------- task tokens = prompt-tuning embeddings


def test_text_initialisation_uses_the_llm_embeddings_of_the_text(base_model_dirs):
    model, processor = from_base(base_model_dirs, task_token_init="text", task_token_init_text=INIT_TEXT)
    ids = processor.tokenizer.encode(INIT_TEXT, add_special_tokens=False)
    expected_ids = (ids * 3)[:3]  # repeated or cut to task_token_length, as peft does
    expected = model.get_input_embeddings().weight[expected_ids]
    for task in range(2):
        assert torch.equal(model.task_prompt_embeddings[task], expected)
    with pytest.raises(StrictDataclassError, match="task_token_init='text' needs task_token_init_text"):
        LM4LVConfig(task_token_init="text")


def test_task_tokens_export_to_peft_and_load_with_peft(base_model_dirs, tmp_path):
    model, _ = from_base(base_model_dirs, task_token_init="random")
    model.save_task_prompt(tmp_path / "deblur", "deblur")
    config = json.loads((tmp_path / "deblur" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 3
    llm = AutoModelForCausalLM.from_pretrained(base_model_dirs[0])
    peft_model = PeftModel.from_pretrained(llm, tmp_path / "deblur")  # peft's own loader
    loaded = peft_model.prompt_encoder["default"].embedding.weight
    assert torch.equal(loaded, model.task_prompt_embeddings[1])
    assert not torch.equal(loaded, model.task_prompt_embeddings[0])


def test_task_tokens_import_from_a_peft_prompt_tuning_adapter(base_model_dirs, tmp_path):
    llm = AutoModelForCausalLM.from_pretrained(base_model_dirs[0])
    peft_config = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3, token_dim=64,
                                     num_transformer_submodules=1)
    torch.manual_seed(1)
    peft_model = get_peft_model(llm, peft_config)
    peft_model.save_pretrained(tmp_path / "peft")  # written by peft itself
    model, processor = from_base(base_model_dirs)
    before = model.generate(**processor(images=random_images(1), task="denoise")).visual_features
    model.load_task_prompt(tmp_path / "peft", "denoise")
    assert torch.equal(model.task_prompt_embeddings[0], peft_model.prompt_encoder["default"].embedding.weight)
    assert torch.count_nonzero(model.task_prompt_embeddings[1]) == 0  # the other task is untouched
    after = model.generate(**processor(images=random_images(1), task="denoise")).visual_features
    assert not torch.allclose(before, after)


def test_task_prompt_import_errors(base_model_dirs, tmp_path):
    model, _ = from_base(base_model_dirs)
    other, _ = from_base(base_model_dirs)
    other.config.task_token_length = 3
    model.save_task_prompt(tmp_path / "ok", "denoise")
    config_path = tmp_path / "ok" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps(config | {"peft_type": "LORA"}))
    with pytest.raises(ValueError, match="LORA adapter, not PROMPT_TUNING"):
        model.load_task_prompt(tmp_path / "lora", "denoise")
    with pytest.raises(ValueError, match="Unknown task 'rotate'"):
        model.load_task_prompt(tmp_path / "ok", "rotate")
    longer = LM4LVForConditionalGeneration(LM4LVConfig(
        text_config=model.config.text_config, vision_config=model.config.vision_config, task_token_length=5))
    with pytest.raises(ValueError, match=r"prompt embeddings of shape \(3, 64\).*\(5, 64\)"):
        longer.load_task_prompt(tmp_path / "ok", "denoise")


# ---------------------------------------------------------------- LoRA on the LLM


def test_lora_adapters_train_save_load_and_merge(base_model_dirs, tmp_path):
    model, processor = from_base(base_model_dirs, lora_r=4)
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    lora = {name: p for name, p in trainable.items() if "lora_" in name}
    # LLaMA: q_proj (64 -> 64) and v_proj (64 -> 32) in 2 layers, A: r x in, B: out x r
    assert sum(p.numel() for p in lora.values()) == 2 * ((4 * 64 + 64 * 4) + (4 * 64 + 32 * 4))
    assert set(trainable) - set(lora) == {"in_adapter.weight", "in_adapter.bias", "out_adapter.weight",
                                          "out_adapter.bias", "task_prompt_embeddings"}
    images = random_images(2)
    batch = processor(images=images, targets=images, task="denoise")
    optimizer = torch.optim.Adam(trainable.values(), lr=1e-2)
    for _ in range(3):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.count_nonzero(p) for name, p in lora.items() if "lora_B" in name)  # B starts at zero
    model.eval()
    prompt = processor(images=images, task="denoise")
    expected = model.generate(**prompt).visual_features

    model.save_pretrained(tmp_path / "trainable")
    reloaded = LM4LVForConditionalGeneration.from_pretrained(tmp_path / "trainable").eval()
    assert torch.equal(reloaded.generate(**prompt).visual_features, expected)

    reloaded.merge_lora_adapters()
    assert not any("lora_" in name for name, _ in reloaded.named_parameters())
    torch.testing.assert_close(reloaded.generate(**prompt).visual_features, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="save with save_full=True"):
        reloaded.save_pretrained(tmp_path / "merged")
    reloaded.save_pretrained(tmp_path / "merged", save_full=True)
    merged = LM4LVForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    torch.testing.assert_close(merged.generate(**prompt).visual_features, expected, atol=1e-5, rtol=1e-4)


def test_lora_off_by_default_keeps_the_llm_frozen(base_model_dirs):
    model, _ = from_base(base_model_dirs)
    assert model.config.lora_r == 0
    assert not any(p.requires_grad for p in model.language_model.parameters())
    with pytest.raises(ValueError, match="no LoRA adapters"):
        model.merge_lora_adapters()


# ---------------------------------------------------------------- timm encoders


TIMM_KWARGS = {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8}


def timm_or_skip():
    from lm4lv.modeling_lm4lv.vision import import_timm

    try:
        return import_timm()
    except ImportError as error:
        pytest.skip(f"timm is not usable here: {error}")


def test_timm_unavailable_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "timm":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    from lm4lv.modeling_lm4lv import TimmVisionConfig, TimmVisionModule

    with pytest.raises(ImportError, match="timm vision module needs timm and a torchvision that matches torch"):
        TimmVisionModule(TimmVisionConfig())


def test_timm_encoder_with_a_trained_mae_decoder(tmp_path, base_model_dirs):
    timm = timm_or_skip()
    from safetensors.torch import save_file

    from lm4lv.modeling_lm4lv import TimmVisionModule, load_vision_module
    from lm4lv.processing.data import bundled_corpus
    from lm4lv.processing.images import to_tensor
    from lm4lv.trainers.mae_training import reconstruction_quality, train_vision_module

    torch.manual_seed(0)
    pretrained = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=32,
                                   **TIMM_KWARGS).eval()
    save_file(pretrained.state_dict(), tmp_path / "timm.safetensors")  # a local "pretrained" timm checkpoint
    vision = TimmVisionModule.from_timm("vit_base_patch16_224", str(tmp_path / "timm.safetensors"), image_size=32,
                                        timm_kwargs=TIMM_KWARGS, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                        decoder_num_attention_heads=2, decoder_intermediate_size=64).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    features = vision.encode(pixel_values)
    assert features.shape == (2, 17, 32)
    assert torch.equal(features, pretrained.forward_features(pixel_values))  # the checkpoint's encoder, unchanged
    assert vision.decode(features).shape == (2, 3, 32, 32)

    corpus = bundled_corpus()
    train_images = torch.stack([to_tensor(i) for i in corpus["train"].select(range(64))["image"]])
    validation = torch.stack([to_tensor(i) for i in corpus["validation"].select(range(16))["image"]])
    before = reconstruction_quality(vision, validation)
    encoder_before = {k: v.clone() for k, v in vision.encoder.state_dict().items()}
    train_vision_module(vision, train_images, mode="decoder", steps=40, batch_size=16, learning_rate=3e-3,
                        warmup_steps=5, progress=False)
    after = reconstruction_quality(vision, validation)
    assert after["psnr"] > before["psnr"] + 3, (before, after)
    assert all(torch.equal(v, encoder_before[k]) for k, v in vision.encoder.state_dict().items())

    vision.save_pretrained(tmp_path / "timm-lm4lv")
    reloaded = load_vision_module(str(tmp_path / "timm-lm4lv"))
    assert type(reloaded) is TimmVisionModule
    assert torch.equal(reloaded.reconstruct(pixel_values), vision.reconstruct(pixel_values))

    model = LM4LVForConditionalGeneration.from_base_models(base_model_dirs[0], str(tmp_path / "timm-lm4lv"),
                                                           task_token_length=3)
    processor = LM4LVProcessor.from_config(model.config, AutoTokenizer.from_pretrained(base_model_dirs[0]))
    generated = model.eval().generate(**processor(images=random_images(2), task="denoise"))
    assert generated.visual_features.shape == (2, 17, 32) and generated.has_image.all()


def test_restore_command_merges_lora_on_request(base_model_dirs, tmp_path):
    import numpy as np
    from PIL import Image

    from lm4lv.commands.restore import main as restore_main

    model, processor = from_base(base_model_dirs, lora_r=2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.05)  # a trained-looking adapter, so merging has something to fold in
    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), np.uint8)).save(tmp_path / "in.png")
    outputs = {}
    for flags in ([], ["--merge_lora"]):
        path = tmp_path / f"out{len(flags)}.png"
        restore_main(["--model", str(tmp_path / "ckpt"), "--task", "denoise", str(tmp_path / "in.png"), "-o",
                      str(path), *flags])
        outputs[len(flags)] = np.asarray(Image.open(path), dtype=np.int16)
    assert outputs[0].shape == (40, 48, 3)
    assert np.abs(outputs[0] - outputs[1]).max() <= 1  # merged == unmerged up to uint8 rounding


def test_lora_adapters_stay_float32_on_a_bf16_llm(base_model_dirs):
    model, processor = from_base(base_model_dirs, lora_r=2, dtype=torch.bfloat16)
    assert {p.dtype for p in model.language_model.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    images = random_images(2)
    model(**processor(images=images, targets=images, task="denoise")).loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32
               for name, p in model.named_parameters() if "lora_B" in name)
