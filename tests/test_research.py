"""Research suite: the paper's ablations as pluggable components (ViT-LLM, experts, random-init LLM, diffusers
vision modules) and the one-command comparison table."""

import json
import os

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, ViTMAEConfig

from lm4lv.modeling_lm4lv import (
    DiffusersAutoencoderConfig,
    DiffusersVisionModule,
    LM4LVConfig,
    LM4LVExpertConfig,
    LM4LVExpertModel,
    LM4LVForConditionalGeneration,
    LM4LVViTLLMConfig,
    LM4LVViTLLMModel,
    MAEVisionModule,
    load_vision_module,
)
from lm4lv.modeling_lm4lv.modeling_vit_llm import prompt_part
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.data import bundled_corpus
from lm4lv.processing.images import to_tensor
from lm4lv.research.ablation import ABLATION_METHODS, MULTI_TASK, run_ablation
from lm4lv.trainers import LM4LVTrainingArguments
from lm4lv.trainers.evaluation import load_restoration_model
from lm4lv.trainers.mae_training import reconstruction_quality, train_vision_module
from lm4lv.trainers.training import DataArguments, ModelArguments, train

from conftest import build_tiny, random_images, save_base_models, tiny_text_config, tiny_tokenizer, tiny_vision_config


def tiny_autoencoder_config(kind: str = "AutoencoderKL") -> DiffusersAutoencoderConfig:
    """32x32 images -> 4x4 latents of 8 channels (16 visual tokens)."""
    config = dict(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[8, 16, 16, 16], layers_per_block=1,
        latent_channels=8, norm_num_groups=4, sample_size=32,
    )
    if kind == "VQModel":
        config.update(num_vq_embeddings=32, vq_embed_dim=8)
    return DiffusersAutoencoderConfig(autoencoder_class=kind, autoencoder_config=config, image_size=32)


def build_config(config_class=LM4LVConfig, **kwargs) -> LM4LVConfig:
    kwargs.setdefault("vision_config", tiny_vision_config())
    return config_class(text_config=kwargs.pop("text_config", tiny_text_config()), task_names=["denoise"],
                        task_token_length=3, **kwargs)


def build_model(config):
    """Model + processor with non-zero adapters and task tokens, in eval mode."""
    torch.manual_seed(0)
    processor = LM4LVProcessor.from_config(config, tiny_tokenizer())
    model_class = {LM4LVExpertConfig: LM4LVExpertModel, LM4LVViTLLMConfig: LM4LVViTLLMModel}.get(
        type(config), LM4LVForConditionalGeneration)
    model = model_class(config).eval()
    if model_class is not LM4LVExpertModel:
        torch.nn.init.normal_(model.task_prompt_embeddings, std=0.02)
    return model, processor


def loss_falls(model, batch, steps: int = 20, lr: float = 1e-2) -> tuple[float, float]:
    """(first, last) vision loss (the MSE on visual features) over `steps` Adam steps on one batch, training only
    what requires grad."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        output = model(**batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.vision_loss.item())
    model.eval()
    return losses[0], losses[-1]


# ---------------------------------------------------------------- ViT-LLM (parallel, non-autoregressive)


def backbone_image_outputs(model, features, bidirectional: bool, zero_positions: bool):
    """Final hidden states at the image positions of a prompt holding `features`, under a chosen mask/positions."""
    from transformers.masking_utils import create_bidirectional_mask

    processor = LM4LVProcessor.from_config(model.config, tiny_tokenizer())
    batch = processor(images=torch.rand(1, 3, 32, 32), task="denoise")
    embeds = model.build_inputs_embeds(batch["input_ids"], features, batch["task_ids"])
    mask = batch["attention_mask"]
    if bidirectional:
        mask = create_bidirectional_mask(config=model.language_model.config, inputs_embeds=embeds,
                                         attention_mask=mask, allow_is_bidirectional_skip=False)
    positions = torch.zeros_like(batch["input_ids"]) if zero_positions else torch.arange(embeds.shape[1])[None]
    hidden = model.text_backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
    return hidden[batch["input_ids"] == model.config.image_token_id].view(1, features.shape[1], -1)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_vit_llm_has_no_causal_mask_and_no_positions(kind):
    model, processor = build_model(build_config(LM4LVViTLLMConfig, text_config=tiny_text_config(kind)))
    features = torch.randn(1, model.config.num_visual_tokens, model.config.vision_hidden_size)
    permutation = torch.randperm(features.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # no causal mask and no positional information <=> permuting the image tokens permutes the outputs
        outputs = backbone_image_outputs(model, features, bidirectional=True, zero_positions=True)
        permuted = backbone_image_outputs(model, features[:, permutation], bidirectional=True, zero_positions=True)
        torch.testing.assert_close(permuted, outputs[:, permutation], atol=1e-5, rtol=1e-5)
        # either ingredient alone breaks the symmetry, so the check above can fail
        for bidirectional, zero_positions in ((False, True), (True, False)):
            a = backbone_image_outputs(model, features, bidirectional, zero_positions)
            b = backbone_image_outputs(model, features[:, permutation], bidirectional, zero_positions)
            assert (b - a[:, permutation]).abs().max() > 1e-3
        # and the model's own parallel pass is exactly the symmetric one
        model.encode_images = lambda pixel_values: features
        batch = processor(images=torch.rand(1, 3, 32, 32), task="denoise")
        generated = model.generate(**batch)
    torch.testing.assert_close(generated.visual_features, model.out_adapter(outputs), atol=1e-5, rtol=1e-5)
    assert torch.equal(generated.sequences, batch["input_ids"])  # one pass: nothing is generated token by token


def test_vit_llm_trains_on_the_prompt_part_of_an_lm4lv_training_batch():
    model, processor = build_model(build_config(LM4LVViTLLMConfig))
    images = random_images(4)
    batch = processor(images=images, targets=images.flip(-1), task="denoise")
    prompt = processor(images=images, task="denoise")
    # the same training batch as LM4LV's; the one pass reads only the prompt before the answer the labels mark
    input_ids, attention_mask = prompt_part(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert torch.equal(input_ids, prompt["input_ids"]) and torch.equal(attention_mask, prompt["attention_mask"])
    with torch.no_grad():
        trained_on = model(**batch).last_hidden_state
        prompt_only = model(**prompt, target_pixel_values=batch["target_pixel_values"]).last_hidden_state
    assert torch.equal(trained_on, prompt_only)
    first, last = loss_falls(model, batch)
    assert last < 0.5 * first
    generated = model.generate(**processor(images=images, task="denoise"))
    assert generated.pixel_values.shape == (4, 3, 32, 32) and generated.has_image.all()


# ---------------------------------------------------------------- experts replacing the LLM


@pytest.mark.parametrize("expert", ["mlp", "transformer"])
def test_experts_match_lm4lv_trainable_parameter_count(expert):
    config = LM4LVExpertConfig(text_config=tiny_text_config().to_dict() | {"hidden_size": 256},
                               vision_config=tiny_vision_config(), task_names=["denoise"], task_token_length=3,
                               expert=expert)
    lm4lv = LM4LVForConditionalGeneration(build_config(text_config=config.text_config))
    lm4lv_count = sum(p.numel() for p in lm4lv.parameters() if p.requires_grad)
    assert config.lm4lv_trainable_parameters == lm4lv_count == 17440
    count = sum(p.numel() for p in LM4LVExpertModel(config).parameters() if p.requires_grad)
    assert abs(count - lm4lv_count) / lm4lv_count < 0.01, (count, lm4lv_count)


@pytest.mark.parametrize("expert", ["linear", "mlp", "transformer"])
def test_experts_train_generate_and_round_trip(expert, tmp_path):
    model, processor = build_model(LM4LVExpertConfig(
        text_config=tiny_text_config(), vision_config=tiny_vision_config(), task_names=["denoise"],
        task_token_length=3, expert=expert))
    assert not hasattr(model, "language_model")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("vision_model.") for n in trainable)
    images = random_images(4)
    batch = processor(images=images, targets=images, task="denoise")  # identity: within reach of a linear map
    first, last = loss_falls(model, batch, steps=30)
    assert last < 0.5 * first, (first, last)
    prompt = processor(images=images, task="denoise")
    generated = model.generate(**prompt)
    assert generated.visual_features.shape == (4, 17, 32) and generated.pixel_values.shape == (4, 3, 32, 32)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert type(reloaded) is LM4LVExpertModel and reloaded.config.expert == expert
    assert torch.equal(reloaded.generate(**prompt).pixel_values, generated.pixel_values)


def test_transformer_expert_is_bidirectional_and_per_token_experts_are_not():
    features = torch.randn(1, 17, 32)
    changed = features.clone()
    changed[:, -1] = torch.randn(32)
    for expert, mixes_tokens in (("transformer", True), ("mlp", False), ("linear", False)):
        model, _ = build_model(LM4LVExpertConfig(text_config=tiny_text_config(), vision_config=tiny_vision_config(),
                                                 task_names=["denoise"], expert=expert))
        with torch.no_grad():
            first_token_moved = (model.restore_features(changed) - model.restore_features(features))[:, 0].abs().max()
        assert (first_token_moved > 1e-6) == mixes_tokens, expert


# ---------------------------------------------------------------- training scripts select the method


@pytest.mark.parametrize("method", ["random_init_llm", "vit_llm", "linear"])
def test_run_restoration_trains_each_method(method, tmp_path):
    llm, vision = save_base_models(build_tiny(seed=1)[0], tmp_path)  # not seed 0, which the random-init LLM uses
    output_dir = tmp_path / method
    args = LM4LVTrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=2, max_steps=2,
                                  use_cpu=True, disable_tqdm=True, save_strategy="no", report_to=[])
    trainer = train(ModelArguments(llm=llm, vision=vision, method=method, task_token_length=2),
                    DataArguments(task="denoise"), args)
    reloaded = load_restoration_model(str(output_dir)).eval()
    processor = LM4LVProcessor.from_pretrained(output_dir)
    prompt = processor(images=random_images(2), task="denoise")
    torch.testing.assert_close(reloaded.generate(**prompt).pixel_values,
                               trainer.model.eval().generate(**prompt).pixel_values)
    if method == "random_init_llm":  # a seeded random LLM written next to the checkpoint, and named by it
        base = AutoModelForCausalLM.from_pretrained(llm)
        assert reloaded.config.text_model_name_or_path == str(output_dir / "random_init_llm")
        weight = "model.layers.0.self_attn.q_proj.weight"
        assert not torch.equal(reloaded.language_model.state_dict()[weight], base.state_dict()[weight])
    if method == "vit_llm":
        assert type(reloaded) is LM4LVViTLLMModel and type(reloaded.config) is LM4LVViTLLMConfig


# ---------------------------------------------------------------- diffusers autoencoders as vision modules


@pytest.mark.parametrize("kind", ["AutoencoderKL", "VQModel"])
def test_diffusers_vision_module_interface_and_round_trip(kind, tmp_path):
    torch.manual_seed(0)
    vision = DiffusersVisionModule(tiny_autoencoder_config(kind)).eval()
    pixel_values = torch.rand(2, 3, 32, 32) * 2 - 1
    features = vision.encode(pixel_values)
    assert features.shape == (2, 16, 8) and vision.decode(features).shape == (2, 3, 32, 32)
    vision.save_pretrained(tmp_path)
    reloaded = load_vision_module(str(tmp_path))
    assert type(reloaded) is DiffusersVisionModule and reloaded.config.autoencoder_class == kind
    assert torch.equal(reloaded.reconstruct(pixel_values), vision.reconstruct(pixel_values))
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        vision.encode(torch.rand(2, 3, 16, 16))


@pytest.mark.parametrize("kind", ["mae", "AutoencoderKL"])
def test_each_vision_module_learns_the_identity(kind):
    """The reconstruction check every vision module must pass before LM4LV can use it."""
    torch.manual_seed(0)
    vision = (MAEVisionModule(ViTMAEConfig(**tiny_vision_config().to_dict())) if kind == "mae"
              else DiffusersVisionModule(tiny_autoencoder_config()))
    corpus = bundled_corpus()
    train_images = torch.stack([to_tensor(i) for i in corpus["train"].select(range(64))["image"]])
    validation = torch.stack([to_tensor(i) for i in corpus["validation"].select(range(16))["image"]])
    before = reconstruction_quality(vision, validation)
    train_vision_module(vision, train_images, mode="autoencoder", steps=60, batch_size=16, learning_rate=3e-3,
                        warmup_steps=5, progress=False)
    after = reconstruction_quality(vision, validation)
    assert after["psnr"] > before["psnr"] + 3, (before, after)


def test_lm4lv_trains_on_a_diffusers_autoencoder():
    model, processor = build_model(build_config(vision_config=tiny_autoencoder_config()))
    assert model.config.num_visual_tokens == 16 and list(processor.image_processor.image_mean) == [0.5, 0.5, 0.5]
    images = random_images(4)
    batch = processor(images=images, targets=images, task="denoise")
    first, last = loss_falls(model, batch)
    assert last < 0.5 * first
    generated = model.generate(**processor(images=images, task="denoise"))
    assert generated.visual_features.shape == (4, 16, 8) and generated.has_image.all()


# ---------------------------------------------------------------- the one-command comparison


def test_run_ablation_writes_one_table_for_every_method(base_model_dirs, tmp_path):
    llm, vision = base_model_dirs
    autoencoder = tmp_path / "kl"
    DiffusersVisionModule(tiny_autoencoder_config()).save_pretrained(autoencoder)
    out = tmp_path / "ablation"
    results = run_ablation(llm, vision, list(ABLATION_METHODS), ["rotate"], str(out), max_steps=2, eval_samples=2,
                           autoencoder_kl=str(autoencoder))
    table = (out / "ablation.md").read_text()
    for label, *_ in ABLATION_METHODS.values():
        assert f"| {label} |" in table
    assert "| MAE-r |" in table and "| AutoencoderKL-r |" in table and "| Input |" in table
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["methods"].keys() == results["methods"].keys()
    lm4lv, lora = saved["methods"]["LM4LV"], saved["methods"]["LoRA r=8"]
    assert lm4lv["trainable_parameters"] == 2 * 32 * 64 + 32 + 64 + 10 * 64
    assert lora["trainable_parameters"] > lm4lv["trainable_parameters"]
    for entry in saved["methods"].values():
        assert entry["tasks"]["rotate"]["steps"] == 2 and entry["tasks"]["rotate"]["psnr"]["count"] == 2
    assert (out / "grid_rotate.png").exists()


def test_the_multi_task_method_trains_one_model_on_every_task_and_scores_it_on_each(base_model_dirs, tmp_path):
    llm, vision = base_model_dirs
    out = tmp_path / "ablation"
    run_ablation(llm, vision, ["lm4lv", MULTI_TASK], ["identity", "rotate"], str(out), max_steps=2, eval_samples=2)
    saved = json.loads((out / "ablation.json").read_text())
    lm4lv, multi_task = saved["methods"]["LM4LV"], saved["methods"]["LM4LV, one model for all tasks"]
    assert multi_task["tasks"]["identity"]["steps"] == multi_task["tasks"]["rotate"]["steps"] == 4  # 2 x 2 tasks
    assert multi_task["trainable_parameters"] == lm4lv["trainable_parameters"] + 10 * 64  # the second task's tokens
    assert multi_task["tasks"]["rotate"]["train_seconds"] == 0.0  # one model, trained once (at the first task)
    assert lm4lv["tasks"]["identity"]["steps"] == lm4lv["tasks"]["rotate"]["steps"] == 2  # one model per task
    assert (out / "grid_identity.png").exists() and (out / "grid_rotate.png").exists()


def test_ablation_seed_changes_the_training_not_the_held_out_crops(base_model_dirs, tmp_path):
    llm, vision = base_model_dirs
    runs = {seed: run_ablation(llm, vision, ["lm4lv"], ["denoise"], str(tmp_path / str(seed)), max_steps=2,
                               eval_samples=2, seed=seed) for seed in (0, 1)}
    assert [runs[seed]["settings"]["seed"] for seed in (0, 1)] == [0, 1]
    assert "seed 1;" in (tmp_path / "1" / "ablation.md").read_text()
    assert runs[0]["baselines"] == runs[1]["baselines"]  # the same held-out crops, so the same Input and MAE-r
    first, second = (runs[seed]["methods"]["LM4LV"]["tasks"]["denoise"]["final_loss"] for seed in (0, 1))
    assert first != second


@pytest.mark.parametrize("variant", ["random_init_llm", "lora"])
def test_llm_variants_train(variant, base_model_dirs, tmp_path):
    from lm4lv.trainers.training import random_init_llm

    llm, vision = base_model_dirs
    kwargs = {"lora_r": 4} if variant == "lora" else {}
    if variant == "random_init_llm":
        llm = random_init_llm(llm, str(tmp_path / "random"), seed=3)
    torch.manual_seed(0)
    model = LM4LVForConditionalGeneration.from_base_models(llm, vision, task_token_length=3, **kwargs)
    processor = LM4LVProcessor.from_config(model.config, tiny_tokenizer())
    images = random_images(4)
    first, last = loss_falls(model, processor(images=images, targets=images.flip(-1), task="denoise"))
    assert last < 0.5 * first, (first, last)


# ---------------------------------------------------------------- every model's entry points refuse unknown arguments


@pytest.mark.parametrize("config_class", [LM4LVConfig, LM4LVViTLLMConfig, LM4LVExpertConfig])
def test_forward_and_generate_take_the_batches_and_refuse_unknown_arguments(config_class):
    """LM4LV and both baselines take the same training and prompt batches, and a misspelt or foreign argument is an
    error, not silently ignored."""
    from lm4lv.trainers import LM4LVDataCollator

    model, processor = build_model(build_config(config_class))
    images = random_images(2)
    batch = LM4LVDataCollator(processor)(
        [{"degraded": d, "clean": c, "task": "denoise"} for d, c in zip(images, random_images(2, seed=1))]
    )
    assert torch.isfinite(model(**batch).loss)
    prompt = processor(images=images, task="denoise")
    assert model.generate(**prompt).has_image.all()
    with pytest.raises(TypeError, match="num_items_in_batch"):
        model(**batch, num_items_in_batch=4)
    with pytest.raises(TypeError, match="temperature"):
        model.generate(**prompt, temperature=0.7)


def test_the_cached_vision_modules_take_whole_step_counts(tmp_path):
    from lm4lv.research.offline_default import prepare_vision_module

    with pytest.raises(ValueError, match="steps must be a positive integer"):
        prepare_vision_module(str(tmp_path), "mae", None, 3.5, None, None)
    assert not os.listdir(tmp_path)


def test_write_ablation_never_leaves_a_half_written_file(tmp_path):
    from lm4lv.research.ablation import write_ablation

    (tmp_path / "ablation.json").write_text("previous")
    with pytest.raises(TypeError):
        write_ablation({"settings": {}, "unserialisable": {1, 2}}, ["denoise"], str(tmp_path))
    assert (tmp_path / "ablation.json").read_text() == "previous"


def test_the_pretrained_runs_table_trend_and_card_results_read_the_scores():
    from lm4lv.research.pretrained_run import BATCH_SIZE, SET_NAMES, card_results, learning_table, log_trend

    crops = SET_NAMES["denoise"]

    def scores(lm4lv_psnr):
        return {crops: {"Input": {"psnr": 24.0, "ssim": 0.4}, "MAE-r": {"psnr": 27.0, "ssim": 0.6},
                        "LM4LV": {"psnr": lm4lv_psnr, "ssim": 0.5}}}

    by_step = {"1000": scores(25.0), "2000": scores(25.5), "4000": scores(26.0)}
    table = learning_table(by_step).splitlines()
    assert table[0].startswith(f"| set | LM4LV, 1,000 steps ({1000 * BATCH_SIZE:,} samples) | LM4LV, 2,000 steps")
    cells = "25.00 / 0.5000 | 25.50 / 0.5000 | 26.00 / 0.5000 | 24.00 / 0.4000 | 27.00 / 0.6000 | -"
    assert table[2] == f"| {crops} | {cells} |"
    trend = log_trend(by_step)
    assert trend["db_per_doubling"] == pytest.approx(0.5)
    assert trend["samples_at_mae_r"] == pytest.approx(16000 * BATCH_SIZE)
    assert card_results(by_step["4000"])[f"denoise ({crops})"]["LM4LV"]["psnr"]["mean"] == 26.0
