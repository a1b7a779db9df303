"""Sample-efficiency levers (documented options; the paper's defaults leave them off): the weight of the text loss on
the forced image delimiters, an in_adapter initialised into the token embeddings' principal subspace, a ridge-fitted
out_adapter, noise on the teacher-forced answer features, a pixel loss through the frozen decoder and an identity
curriculum."""

import pytest
import torch
from torch import nn

from lm4lv.modeling_lm4lv.initialization import init_in_adapter_from_features, init_out_adapter_by_ridge
from lm4lv.modeling_lm4lv.loss_lm4lv import delimiter_positions
from lm4lv.processing.data import bundled_corpus
from lm4lv.processing.images import to_tensor
from lm4lv.trainers import LM4LVDataCollator, LM4LVTrainer, LM4LVTrainingArguments
from lm4lv.trainers.training import DataArguments, ModelArguments, train

from conftest import build_tiny, random_images, save_base_models


def training_batch(processor, count: int = 2):
    images = random_images(count)
    return processor(images=images, targets=images.flip(-1), task="denoise")


def train_without_learning(llm, vision, output_dir, max_steps: int, **model_options):
    """`train()` on the tiny models with learning rate 0, so the initialisation is what the run ends with."""
    args = LM4LVTrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=4, max_steps=max_steps,
                                  learning_rate=0.0, use_cpu=True, disable_tqdm=True, save_strategy="no",
                                  logging_steps=1, report_to=[])
    return train(ModelArguments(llm=llm, vision=vision, task_token_length=2, **model_options),
                 DataArguments(task="denoise"), args)


def test_delimiter_positions_are_the_answers_image_delimiters():
    model, processor = build_tiny()
    batch = training_batch(processor)
    labels = batch["labels"]
    positions = delimiter_positions(labels, model.config)
    start, end = model.config.image_start_token_ids, model.config.image_end_token_ids
    for row, mask in zip(labels, positions):
        assert row[mask].tolist() == start + end  # the answer's <Img> ... </Img>, nothing else
        first_visual = int((row == model.config.image_token_id).nonzero()[0])
        assert mask[first_visual - len(start) : first_visual].all()


@pytest.mark.parametrize("weight", [0.0, 0.25])
def test_delimiter_loss_weight_scales_only_the_delimiter_tokens(weight):
    model, processor = build_tiny()
    batch = training_batch(processor)
    with torch.no_grad():
        plain = model(**batch)
        model.config.delimiter_loss_weight = weight
        weighted = model(**batch)
        states, next_labels = plain.last_hidden_state[:, :-1], batch["labels"][:, 1:]
        text = next_labels >= 0
        losses = nn.functional.cross_entropy(model.get_output_embeddings()(states[text]), next_labels[text],
                                             reduction="none")
        delimiters = delimiter_positions(next_labels, model.config)[text]
    torch.testing.assert_close(plain.text_loss, losses.mean())
    expected = torch.where(delimiters, weight * losses, losses).mean()
    torch.testing.assert_close(weighted.text_loss, expected)
    assert weighted.text_loss < plain.text_loss and torch.equal(weighted.vision_loss, plain.vision_loss)


def test_in_adapter_rotates_feature_axes_into_the_embedding_subspace():
    model, processor = build_tiny()
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(32, 32, generator=generator)
    features = torch.randn(4096, 32, generator=generator) @ mixing + 3.0  # correlated, off-centre features
    init_in_adapter_from_features(model, features)
    with torch.no_grad():
        mapped = model.in_adapter(features).double()
    embeddings = model.get_input_embeddings().weight.double()
    torch.testing.assert_close(mapped.mean(0), embeddings.mean(0), atol=1e-4, rtol=0)
    embedding_var, embedding_axes = torch.linalg.eigh(torch.cov(embeddings.T))
    top_axes = embedding_axes[:, -32:]
    centred = mapped - mapped.mean(0)
    # a rotation into the embeddings' top-32 principal subspace, scaled to their total variance there
    torch.testing.assert_close(centred @ top_axes @ top_axes.T, centred, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(torch.cov(mapped.T).trace(), embedding_var[-32:].sum(), rtol=1e-6, atol=0)
    feature_var = torch.linalg.eigvalsh(torch.cov(features.double().T))
    mapped_var = torch.linalg.eigvalsh(torch.cov(mapped.T))[-32:]
    torch.testing.assert_close(mapped_var / mapped_var.sum(), feature_var / feature_var.sum(), rtol=1e-5, atol=1e-9)


def test_training_with_the_embedding_subspace_init(tmp_path):
    llm, vision = save_base_models(build_tiny()[0], tmp_path)
    adapters = {}
    for init in ("normal", "embedding_subspace"):
        trainer = train_without_learning(llm, vision, tmp_path / init, max_steps=2, in_adapter_init=init)
        assert trainer.model.config.in_adapter_init == init
        adapters[init] = trainer.model.in_adapter.bias.detach().clone()
    assert not torch.allclose(adapters["normal"], adapters["embedding_subspace"])
    # fitted on the first 256 training images (lr 0 keeps the init): their mean feature maps onto the mean embedding
    model, processor = trainer.model, trainer.processing_class
    clean = torch.stack([to_tensor(image) for image in bundled_corpus()["train"][:256]["image"]])
    with torch.no_grad():
        mapped = model.in_adapter(model.encode_images(processor.preprocess_images(clean)))
    torch.testing.assert_close(mapped.reshape(-1, mapped.shape[-1]).mean(0),
                               model.get_input_embeddings().weight.mean(0), atol=1e-4, rtol=0)


def test_ridge_init_recovers_a_linear_map_from_states_to_features():
    model, _ = build_tiny()
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(2000, 64, generator=generator) * 3 + 1
    weight, bias = torch.randn(32, 64, generator=generator), torch.randn(32, generator=generator)
    init_out_adapter_by_ridge(model, states, states @ weight.T + bias, ridge=1e-9)
    torch.testing.assert_close(model.out_adapter.weight.data, weight, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.out_adapter.bias.data, bias, atol=1e-3, rtol=1e-4)
    init_out_adapter_by_ridge(model, states, states @ weight.T + bias, ridge=10.0)  # a strong penalty shrinks W
    assert model.out_adapter.weight.norm() < 0.5 * weight.norm()


def test_training_with_the_ridge_init_starts_at_a_lower_vision_loss(tmp_path):
    llm, vision = save_base_models(build_tiny()[0], tmp_path)
    first_losses = {}
    for init in ("normal", "ridge"):
        trainer = train_without_learning(llm, vision, tmp_path / init, max_steps=1, out_adapter_init=init)
        first_losses[init] = next(e["vision_loss"] for e in trainer.state.log_history if "vision_loss" in e)
    assert first_losses["ridge"] < 0.5 * first_losses["normal"]


def test_teacher_forced_noise_changes_the_inputs_in_training_only():
    model, processor = build_tiny()
    batch = training_batch(processor)
    with torch.no_grad():
        plain = model.eval()(**batch)
        model.config.teacher_forced_noise = 0.5
        evaluated = model(**batch)
        torch.manual_seed(0)
        noisy = model.train()(**batch)
    assert torch.equal(evaluated.loss, plain.loss)
    answer = batch["labels"] == model.config.image_token_id  # the teacher-forced answer positions
    first_answer = int(answer[0].nonzero()[0])
    # the prompt (degraded image, task tokens) is untouched; the answer's visual inputs are not
    torch.testing.assert_close(noisy.last_hidden_state[:, :first_answer], plain.last_hidden_state[:, :first_answer])
    answer_states = slice(first_answer, None)
    assert not torch.allclose(noisy.last_hidden_state[:, answer_states], plain.last_hidden_state[:, answer_states])


def test_pixel_loss_is_the_decoded_prediction_against_the_target_image():
    model, processor = build_tiny()
    batch = training_batch(processor)
    plain = model(**batch)
    assert plain.pixel_loss is None
    model.config.pixel_loss_weight = 0.5
    weighted = model(**batch)
    next_labels = batch["labels"][:, 1:]
    with torch.no_grad():
        states = weighted.last_hidden_state[:, :-1][next_labels == model.config.image_token_id]
        predicted = model.out_adapter(states).reshape(2, model.config.num_visual_tokens, -1)
        expected = nn.functional.mse_loss(model.decode_features(predicted), batch["target_pixel_values"])
    torch.testing.assert_close(weighted.pixel_loss, expected)
    torch.testing.assert_close(weighted.loss, plain.loss + 0.5 * expected)
    weighted.pixel_loss.backward()  # the frozen decoder passes gradients through to the adapters
    assert model.out_adapter.weight.grad.abs().sum() > 0 and model.in_adapter.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vision_model.parameters())


def test_identity_curriculum_trains_on_the_input_first(tmp_path):
    model, processor = build_tiny()
    batch = training_batch(processor)
    args = LM4LVTrainingArguments(output_dir=str(tmp_path), identity_curriculum_steps=3, use_cpu=True, report_to=[])
    trainer = LM4LVTrainer(model=model.train(), args=args, data_collator=LM4LVDataCollator(processor),
                           processing_class=processor)
    with torch.no_grad():
        identity = model(**{**batch, "target_pixel_values": batch["pixel_values"]}).loss
        restoration = model(**batch).loss
        trainer.state.global_step = 2
        torch.testing.assert_close(trainer.compute_loss(model, batch), identity)
        trainer.state.global_step = 3
        torch.testing.assert_close(trainer.compute_loss(model, batch), restoration)
    assert not torch.allclose(identity, restoration)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_the_fits_run_on_the_models_device_and_equal_the_closed_forms(device):
    """Both fits create their tensors on the model's device; their weights equal the closed forms computed here in
    float64 on the CPU (bit for bit on the CPU)."""
    model, _ = build_tiny()
    model.to(device)
    generator = torch.Generator().manual_seed(0)
    states, targets = torch.randn(500, 64, generator=generator), torch.randn(500, 32, generator=generator)
    features = torch.randn(600, 32, generator=generator) * 2 + 1
    init_out_adapter_by_ridge(model, states.to(device), targets.to(device), ridge=1e-3)
    init_in_adapter_from_features(model, features.to(device))

    centred = states.double() - states.double().mean(0)
    gram = centred.T @ centred
    penalty = 1e-3 * gram.trace() / 64
    ridge_weight = torch.linalg.solve(gram + penalty * torch.eye(64, dtype=torch.float64),
                                      centred.T @ (targets.double() - targets.double().mean(0))).T
    embeddings = model.get_input_embeddings().weight.double().cpu()
    feature_var, feature_axes = torch.linalg.eigh(torch.cov(features.double().T))
    embedding_var, embedding_axes = torch.linalg.eigh(torch.cov(embeddings.T))
    scale = (embedding_var[-32:].clamp(min=0).sum() / feature_var[-32:].clamp(min=1e-12).sum()).sqrt()
    in_weight = scale * embedding_axes[:, -32:] @ feature_axes[:, -32:].T
    tolerance = {"atol": 0, "rtol": 0} if device == "cpu" else {"atol": 1e-5, "rtol": 1e-4}
    torch.testing.assert_close(model.out_adapter.weight.detach().cpu(), ridge_weight.float(), **tolerance)
    torch.testing.assert_close(model.in_adapter.weight.detach().cpu(), in_weight.float(), **tolerance)
    assert model.out_adapter.weight.device.type == model.in_adapter.bias.device.type == device
