"""LM4LVForConditionalGeneration: any causal LM, frozen parts, sequence format, losses, generation."""

import pytest
import torch
from torch import nn

from lm4lv.modeling_lm4lv.decoding import DecodingRun, positions_from_mask

from conftest import build_tiny, random_images

TRAINABLE = {"task_prompt_embeddings", "in_adapter.weight", "in_adapter.bias", "out_adapter.weight", "out_adapter.bias"}


def train_steps(model, batch, steps: int, lr: float = 1e-2):
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        out = model(**batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append((out.loss.item(), out.vision_loss.item()))
    model.eval()
    return losses


@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral", "gpt2"])
def test_any_causal_lm_trains_and_generates(kind):
    model, processor = build_tiny(kind)
    batch = processor(images=random_images(2), targets=random_images(2, seed=1), task="denoise")
    losses = train_steps(model, batch, steps=15)
    assert losses[-1][0] < losses[0][0], losses  # total loss falls (text CE can only move a little: LLM frozen)
    assert losses[-1][1] < 0.5 * losses[0][1], losses  # the vision MSE falls a lot
    gen = model.generate(**processor(images=random_images(2), task="denoise"))
    n = model.config.num_visual_tokens
    assert gen.visual_features.shape == (2, n, model.config.vision_hidden_size)
    assert gen.pixel_values.shape == (2, 3, 32, 32)
    assert gen.has_image.all() and torch.isfinite(gen.pixel_values).all()
    assert (gen.sequences == model.config.image_token_id).sum(-1).tolist() == [2 * n, 2 * n]  # LQ prompt + output
    assert len(processor.postprocess(gen.pixel_values)) == 2


def test_only_adapters_and_task_tokens_change(tiny):
    model, processor = tiny
    assert {n for n, p in model.named_parameters() if p.requires_grad} == TRAINABLE
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = processor(images=random_images(2), targets=random_images(2, seed=1))
    train_steps(model, batch, steps=1)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == TRAINABLE
    assert not model.language_model.training and not model.vision_model.training


def test_sequence_format(tiny):
    model, processor = tiny
    batch = processor(images=random_images(1), targets=random_images(1, seed=1))
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    config = model.config
    n, t = config.num_visual_tokens, config.task_token_length
    image, task = config.image_token_id, config.task_token_id
    text = processor.tokenizer.decode([i for i in ids if i >= 0])
    assert text == "### Human: <Img></Img>\n### Assistant: <Img></Img>\n###<|endoftext|>"
    first_task = ids.index(task)
    assert ids[first_task : first_task + t] == [task] * t
    assert ids[:first_task].count(image) == n and ids[first_task:].count(image) == n  # LQ before, HQ after
    answer_start = next(i for i, label in enumerate(labels) if label != -100)
    assert answer_start > first_task + t
    start_ids = processor.model_config.image_start_token_ids
    assert ids[answer_start:][: len(start_ids)] == start_ids
    assert labels[answer_start:] == ids[answer_start:]  # the whole answer is supervised, nothing else


def test_losses_match_manual_computation(tiny):
    model, processor = tiny
    batch = processor(images=random_images(2), targets=random_images(2, seed=1))
    out = model(**batch)
    # independent recomputation with the LLM's own forward (hidden_states[-1] is after the final norm)
    embeds = model.build_inputs_embeds(
        batch["input_ids"],
        torch.cat([model.encode_images(batch["pixel_values"]), model.encode_images(batch["target_pixel_values"])], 1),
        batch["task_ids"],
    )
    llm_out = model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                   output_hidden_states=True)
    hidden, logits = llm_out.hidden_states[-1], llm_out.logits
    labels = batch["labels"]
    image = model.config.image_token_id
    text_loss, vision_loss, count_text, count_vis = 0.0, 0.0, 0, 0
    targets = model.encode_images(batch["target_pixel_values"])
    for b in range(2):
        k = 0
        for pos in range(labels.shape[1] - 1):
            nxt = labels[b, pos + 1].item()
            if nxt >= 0:
                text_loss += nn.functional.cross_entropy(logits[b, pos], torch.tensor(nxt)).item()
                count_text += 1
            elif nxt == image:
                vision_loss += ((model.out_adapter(hidden[b, pos]) - targets[b, k]) ** 2).sum().item()
                count_vis += targets.shape[-1]
                k += 1
        assert k == model.config.num_visual_tokens
    assert out.text_loss.item() == pytest.approx(text_loss / count_text, rel=1e-5)
    assert out.vision_loss.item() == pytest.approx(vision_loss / count_vis, rel=1e-5)
    assert out.loss.item() == pytest.approx(out.text_loss.item() + out.vision_loss.item(), rel=1e-6)


def test_task_tokens_are_per_task():
    model, processor = build_tiny(task_names=("denoise", "rotate"))
    images = random_images(2)
    batch = processor(images=images, targets=images, task=["denoise", "denoise"])
    model(**batch).loss.backward()
    grad = model.task_prompt_embeddings.grad
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() == 0
    a = model.generate(**processor(images=images, task="denoise")).visual_features
    b = model.generate(**processor(images=images, task="rotate")).visual_features
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="Unknown task 'derain'"):
        processor(images=images, task="derain")


def test_batched_left_padded_generation_equals_single():
    model, processor = build_tiny()
    images = random_images(4)
    instructions = ["Remove the noise from this image.", "", "Restore the picture, please.", "the"]
    batch = processor(images=images, instructions=instructions)
    assert (batch["attention_mask"] == 0).any()  # really left padded
    together = model.generate(**batch, max_new_tokens=40)
    for i in range(4):
        alone = model.generate(**processor(images=images[i : i + 1], instructions=instructions[i]), max_new_tokens=40)
        assert torch.allclose(together.visual_features[i], alone.visual_features[0], atol=1e-5)
        assert torch.allclose(together.pixel_values[i], alone.pixel_values[0], atol=1e-5)
        generated = together.sequences[i, batch["input_ids"].shape[1] :]
        assert torch.equal(generated, alone.sequences[0, -generated.shape[0] :])


def recompute_reference(model, batch, steps: int):
    """The authors' algorithm: batch size 1, forced <Img>, the whole sequence recomputed at every step."""
    config = model.config
    features = model.encode_images(batch["pixel_values"])
    embeds = model.build_inputs_embeds(batch["input_ids"], features, batch["task_ids"])
    for token in config.image_start_token_ids:
        embeds = torch.cat([embeds, model.get_input_embeddings()(torch.tensor([[token]]))], 1)
    features = []
    for _ in range(steps):
        hidden = model.language_model(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1][:, -1]
        feature = model.out_adapter(hidden)
        features.append(feature)
        embeds = torch.cat([embeds, model.in_adapter(feature)[:, None]], 1)
    return torch.stack(features, 1)


@torch.no_grad()
def test_kv_cache_matches_full_recompute():
    model, processor = build_tiny()
    batch = processor(images=random_images(1))
    reference = recompute_reference(model, batch, model.config.num_visual_tokens)
    assert model.config.num_visual_tokens == 17
    assert torch.allclose(model.generate(**batch).visual_features, reference, atol=1e-4)


@torch.no_grad()
def test_kv_cache_matches_full_recompute_long_sequence_by_psnr():
    model, processor = build_tiny(image_size=64, patch_size=4)  # 257 visual tokens
    batch = processor(images=random_images(1, size=64))
    reference = model.decode_features(recompute_reference(model, batch, model.config.num_visual_tokens))
    generated = model.generate(**batch).pixel_values
    a, b = processor.to_unit_range(generated), processor.to_unit_range(reference)
    psnr = 10 * torch.log10(1 / ((a - b) ** 2).mean().clamp(min=1e-20))
    assert psnr > 60, psnr


@torch.no_grad()
def test_forced_delimiters_go_through_the_llm_in_one_piece(monkeypatch):
    """<Img> is fed with the prompt and </Img> with the last visual token; the hidden states that pick the text after
    the image equal a full forward over the finished sequence, also for a left-padded sample."""
    model, processor = build_tiny()
    start, end = processor.model_config.image_start_token_ids, processor.model_config.image_end_token_ids
    n = model.config.num_visual_tokens
    images, instructions = random_images(2), ["Remove the noise from this image.", ""]
    batch = processor(images=images, instructions=instructions)
    assert (batch["attention_mask"] == 0).any()
    backbone, head = model.text_backbone, model.get_output_embeddings()
    forward, lengths, head_inputs = backbone.forward, [], []
    monkeypatch.setattr(backbone, "forward", lambda **kw: lengths.append(kw["inputs_embeds"].shape[1]) or forward(**kw))
    monkeypatch.setattr(model, "get_output_embeddings",
                        lambda: lambda hidden: head_inputs.append(hidden) or head(hidden))
    gen = model.generate(**batch, max_new_tokens=len(start) + n + len(end) + 3)
    prompt_length = batch["input_ids"].shape[1]
    assert lengths == [prompt_length + len(start)] + [1] * (n - 1) + [1 + len(end)] + [1, 1]
    assert len(head_inputs) == 3  # the LM head only runs for the three text tokens
    text_from = len(start) + n + len(end)
    for i in range(2):
        answer = gen.sequences[i, prompt_length:]
        assert answer[: len(start)].tolist() == start and answer[text_from - len(end) : text_from].tolist() == end
        alone = processor(images=images[i : i + 1], instructions=instructions[i])  # no padding
        prompt_embeds = model.build_inputs_embeds(
            alone["input_ids"], model.encode_images(alone["pixel_values"]), alone["task_ids"]
        )[0]
        answer_embeds = model.get_input_embeddings()(answer.clamp(min=0))
        answer_embeds[len(start) : len(start) + n] = model.in_adapter(gen.visual_features[i])
        hidden = backbone(inputs_embeds=torch.cat([prompt_embeds, answer_embeds])[None]).last_hidden_state[0]
        expected = hidden[len(prompt_embeds) + text_from - 1 : -1]
        torch.testing.assert_close(torch.stack([h[i] for h in head_inputs]), expected, atol=1e-5, rtol=1e-4)


class ScriptedHead(nn.Module):
    """An LM head that emits a fixed token script (one token per call), to drive generate()'s state machine."""

    def __init__(self, script, vocab_size):
        super().__init__()
        self.script, self.vocab_size, self.calls = list(script), vocab_size, 0

    def forward(self, hidden):
        token = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        logits = torch.zeros(*hidden.shape[:-1], self.vocab_size)
        logits[..., token] = 1.0
        return logits


def test_generate_honours_emitted_image_start(tiny, monkeypatch):
    model, processor = tiny
    start, end = processor.model_config.image_start_token_ids, processor.model_config.image_end_token_ids
    eos = processor.tokenizer.eos_token_id
    words = processor.tokenizer.encode("the fox")
    head = ScriptedHead(words + start + [eos], model.config.text_config.vocab_size)
    monkeypatch.setattr(model, "get_output_embeddings", lambda: head)
    batch = processor(images=random_images(1))
    gen = model.generate(**batch, force_image_output=False, eos_token_id=eos, max_new_tokens=100)
    n = model.config.num_visual_tokens
    new = gen.sequences[0, batch["input_ids"].shape[1] :].tolist()
    k = len(words) + len(start)
    assert new[:k] == words + start
    assert new[k : k + n] == [model.config.image_token_id] * n
    assert new[k + n : k + n + len(end)] == end  # </Img> forced after exactly n visual steps
    assert new[k + n + len(end) :] == [eos]  # then text again, until EOS
    assert gen.has_image.all()


def test_generate_text_only_reports_no_image(tiny, monkeypatch):
    model, processor = tiny
    eos = processor.tokenizer.eos_token_id
    head = ScriptedHead(processor.tokenizer.encode("the") + [eos], model.config.text_config.vocab_size)
    monkeypatch.setattr(model, "get_output_embeddings", lambda: head)
    gen = model.generate(**processor(images=random_images(1)), force_image_output=False, eos_token_id=eos)
    assert not gen.has_image.any()
    assert torch.isnan(gen.pixel_values).all()
    with pytest.raises(ValueError, match="NaN"):
        processor.postprocess(gen.pixel_values)


def test_positions_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_visual_skip_connection_starts_at_mae_reconstruction():
    model, processor = build_tiny()
    model.config.visual_skip_connection = True
    model._init_weights(model.out_adapter)
    assert model.out_adapter.weight.abs().sum() == 0
    batch = processor(images=random_images(2))
    gen = model.generate(**batch)
    features = model.encode_images(batch["pixel_values"])
    assert torch.equal(gen.visual_features, features)
    assert torch.allclose(gen.pixel_values, model.vision_model.reconstruct(batch["pixel_values"]), atol=1e-6)
    train_batch = processor(images=random_images(2), targets=random_images(2, seed=1))
    losses = train_steps(model, train_batch, steps=10, lr=1e-2)
    assert losses[-1][1] < losses[0][1]


def test_gradient_checkpointing_reaches_the_frozen_llm():
    model, processor = build_tiny()
    batch = processor(images=random_images(2), targets=random_images(2, seed=1))
    model.train()
    assert not model.language_model.training  # frozen LLM stays in eval mode by default
    reference = model(**batch).loss
    reference.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    model.language_model.activation_checkpointing_enable({"use_reentrant": False})
    model.train()
    assert model.language_model.training and not model.vision_model.training
    loss = model(**batch).loss
    loss.backward()
    assert torch.allclose(loss, reference, atol=1e-6)
    for name, grad in grads.items():
        assert torch.allclose(model.get_parameter(name).grad, grad, atol=1e-6), name


@torch.no_grad()
def test_a_mixed_batch_generates_text_and_visual_tokens_in_one_step(tiny, monkeypatch):
    """Sample 0 starts its image at once while sample 1 writes text first: sample 0's visual steps go through the
    mixed (text + visual) step, and its features equal generating it alone (the all-visual run)."""
    model, processor = tiny
    start = processor.model_config.image_start_token_ids
    eos = processor.tokenizer.eos_token_id
    images = random_images(2)
    batch = processor(images=images)
    starts = torch.tensor([start])
    pad = torch.full((1, len(start)), eos)
    batch["input_ids"] = torch.cat([torch.cat([batch["input_ids"][:1], starts], 1),
                                    torch.cat([pad, batch["input_ids"][1:]], 1)])
    batch["attention_mask"] = torch.cat([torch.ones(1, batch["input_ids"].shape[1], dtype=torch.long),
                                         torch.cat([torch.zeros_like(pad), batch["attention_mask"][1:]], 1)])
    words = processor.tokenizer.encode("the fox")
    head = ScriptedHead(words + start + [eos], model.config.text_config.vocab_size)
    monkeypatch.setattr(model, "get_output_embeddings", lambda: head)
    mixed_steps = []
    text_step = DecodingRun.text_step
    monkeypatch.setattr(DecodingRun, "text_step", lambda run, state: mixed_steps.append(
        bool(((state.visual_left > 0) & state.unfinished).any())) or text_step(run, state))
    together = model.generate(**batch, force_image_output=False, eos_token_id=eos, max_new_tokens=60)
    assert sum(mixed_steps) >= len(words)  # sample 0 was visual while sample 1 wrote its words
    monkeypatch.undo()
    alone = model.generate(**processor(images=images[:1]))
    assert together.has_image.all()
    torch.testing.assert_close(together.visual_features[0], alone.visual_features[0], atol=1e-5, rtol=1e-5)


def test_forward_refuses_unknown_keyword_arguments(tiny):
    model, processor = tiny
    batch = processor(images=random_images(2), targets=random_images(2, seed=1))
    with pytest.raises(TypeError, match="num_items_in_batch"):
        model(**batch, num_items_in_batch=10)


def training_batch(processor, tasks=("denoise", "rotate")):
    from lm4lv.trainers import LM4LVDataCollator

    clean, degraded = random_images(len(tasks)), random_images(len(tasks), seed=1)
    return LM4LVDataCollator(processor)(
        [{"degraded": d, "clean": c, "task": t} for d, c, t in zip(degraded, clean, tasks)]
    )


def test_training_forward_compiles_as_one_graph_without_device_synchronisation():
    """`check_inputs=False` with the collator's batch: no `.item()`, data-dependent shape or branch on tensor values
    (any of them breaks a `fullgraph=True` compile); the loss and gradients equal the checked eager forward's."""
    model, processor = build_tiny(task_names=("denoise", "rotate"))
    model.config.delimiter_loss_weight = 0.5
    model.train()
    batch = training_batch(processor)
    assert "attention_mask" not in batch  # the template's rows have one length: no padding, no mask
    eager = model(**batch)
    eager.loss.backward()
    eager_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)(**batch, check_inputs=False)
    compiled.loss.backward()
    assert torch.equal(compiled.loss, eager.loss) and torch.equal(compiled.vision_loss, eager.vision_loss)
    for name, grad in eager_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-5, atol=1e-7)
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported):  # the checked forward waits for tensor values
        torch.compile(model, backend="eager", fullgraph=True)(**batch, check_inputs=True)
    torch._dynamo.reset()


def test_unpadded_batch_without_mask_equals_the_all_ones_mask():
    model, processor = build_tiny()
    batch = processor(images=random_images(2), targets=random_images(2, seed=1))
    with_mask = model(**batch)
    without = model(**{k: v for k, v in batch.items() if k != "attention_mask"})
    assert torch.equal(with_mask.loss, without.loss)
    assert torch.equal(with_mask.last_hidden_state, without.last_hidden_state)


def test_text_label_positions_pad_rows_of_different_lengths_and_the_loss_skips_the_padding():
    from lm4lv.modeling_lm4lv.loss_lm4lv import text_label_positions

    labels = torch.tensor([[-100, 5, 6, -100, 7], [-100, -100, 8, -100, -100]])
    assert text_label_positions(labels).tolist() == [[0, 1, 3], [1, -1, -1]]
    assert text_label_positions(torch.full((2, 4), -100)).shape == (2, 0)
    model, processor = build_tiny()
    batch = processor(images=random_images(2), targets=random_images(2, seed=1))
    batch["labels"][0, 3] = 11  # one more supervised text token in row 0 than in row 1
    out = model(**batch)
    logits = model.get_output_embeddings()(out.last_hidden_state[:, :-1])
    supervised = batch["labels"][:, 1:] >= 0
    expected = nn.functional.cross_entropy(logits[supervised], batch["labels"][:, 1:][supervised])
    torch.testing.assert_close(out.text_loss, expected)
    given = model(**batch, text_label_positions=text_label_positions(batch["labels"]), check_inputs=False)
    assert torch.equal(given.text_loss, out.text_loss)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("case", ["plain", "left_padded", "mixed_text", "skip_connection"])
def test_static_cache_generates_the_dynamic_cache_features(kind, case):
    """The static-cache path (on CUDA: the visual run as a CUDA graph) against the dynamic one on the CPU: the same
    tokens, features within 1e-5 (float32), the same images; also for left padding, text steps and the skip."""
    model, processor = build_tiny(kind, task_names=("denoise", "rotate"))
    model.config.visual_skip_connection = case == "skip_connection"
    instructions = ["", "restore this one please"] if case == "left_padded" else None
    batch = processor(images=random_images(2), task=["denoise", "rotate"], instructions=instructions)
    options = {"force_image_output": case != "mixed_text", "max_new_tokens": 30}
    dynamic = model.generate(**batch, cache_implementation="dynamic", **options)
    static = model.generate(**batch, cache_implementation="static", **options)
    assert torch.equal(static.sequences, dynamic.sequences) and torch.equal(static.has_image, dynamic.has_image)
    torch.testing.assert_close(static.visual_features, dynamic.visual_features, rtol=0, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(static.pixel_values, dynamic.pixel_values, rtol=0, atol=1e-4, equal_nan=True)
    if case != "mixed_text":
        assert bool(dynamic.has_image.all())
    with pytest.raises(ValueError, match="cache_implementation must be one of"):
        model.generate(**batch, cache_implementation="paged")


def test_the_graphed_visual_step_keeps_buffers_positions_and_cache_in_step(monkeypatch):
    """The CUDA-graph bookkeeping run on the CPU: a stand-in graph records nothing at capture and, at each launch,
    runs the step with what it captured (the capturing call's cache, feedback weights and mask; the static position
    and hidden buffers), as a replay does; an eager warm-up step comes before each capture; one capture serves every
    later call of the same shape (other images, retrained adapters); the features equal the dynamic path's."""
    from lm4lv.modeling_lm4lv.decoding import VisualStepGraph

    calls = []

    class EagerStandIn(VisualStepGraph):
        def warm_up(self):
            calls.append("warm-up")
            super().warm_up()

        def capture(self):
            calls.append("capture")
            self.captured_run = self.run

        def launch(self):
            current, self.run = self.run, self.captured_run
            self.output = self.step()
            self.run = current

    monkeypatch.setattr(DecodingRun, "graph_class", EagerStandIn)
    monkeypatch.setattr(DecodingRun, "uses_graph", lambda self, hidden: self.static)
    model, processor = build_tiny(task_names=("denoise", "rotate"))

    def check_against_dynamic(seed: int):
        batch = processor(images=random_images(2, seed=seed), task=["denoise", "rotate"],
                          instructions=["", "a longer one"])
        dynamic = model.generate(**batch, cache_implementation="dynamic")
        graphed = model.generate(**batch, cache_implementation="static")
        assert torch.equal(graphed.sequences, dynamic.sequences)
        torch.testing.assert_close(graphed.visual_features, dynamic.visual_features, rtol=0, atol=1e-5)

    for skip in (False, True):
        model.config.visual_skip_connection = skip
        check_against_dynamic(seed=0)
    assert calls == ["warm-up", "capture"] * 2  # once per shape (with and without the skip connection's input)
    for seed in (1, 2, 3):  # the same shape again: no new capture
        check_against_dynamic(seed)
    with torch.no_grad():
        model.out_adapter.weight.mul_(1.5)  # as if trained between calls: the feedback buffers are refilled
    check_against_dynamic(seed=4)
    assert calls == ["warm-up", "capture"] * 2


def test_a_failing_cuda_graph_falls_back_to_eager_steps_with_one_warning(monkeypatch):
    from lm4lv.modeling_lm4lv.decoding import VisualStepGraph

    class FailingCapture(VisualStepGraph):
        def capture(self):
            raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(DecodingRun, "graph_class", FailingCapture)
    monkeypatch.setattr(DecodingRun, "graphs_fail", False)
    monkeypatch.setattr(DecodingRun, "uses_graph",
                        lambda self, hidden: self.static and not DecodingRun.graphs_fail)
    model, processor = build_tiny()
    batch = processor(images=random_images(2), task="denoise")
    dynamic = model.generate(**batch, cache_implementation="dynamic")
    with pytest.warns(RuntimeWarning, match="CUDA graph failed.*generating eagerly"):
        fallen_back = model.generate(**batch, cache_implementation="static")
    torch.testing.assert_close(fallen_back.visual_features, dynamic.visual_features, rtol=0, atol=1e-5)
    assert DecodingRun.graphs_fail


def test_static_cache_in_bfloat16_gives_the_same_images_within_a_tenth_of_a_db():
    from lm4lv.metrics import psnr

    model, processor = build_tiny()
    model.language_model.to(torch.bfloat16)
    clean = random_images(4, seed=3)
    batch = processor(images=clean)
    images = {cache: processor.to_unit_range(model.generate(**batch, cache_implementation=cache).pixel_values)
              for cache in ("dynamic", "static")}
    for dynamic, static, target in zip(images["dynamic"], images["static"], clean):
        assert abs(psnr(static, target) - psnr(dynamic, target)) < 0.1


def test_an_unpadded_batch_runs_its_shared_prompt_prefix_once_with_the_same_result(monkeypatch):
    """Rows with the same template: the text before the first image goes through the LLM once (batch 1) and its cache
    is repeated; each row's generation equals the row's alone (no sharing at batch 1)."""
    from lm4lv.modeling_lm4lv.decoding import DecodingRun

    model, processor = build_tiny(task_names=("denoise", "rotate"))
    batch = processor(images=random_images(3), task=["denoise", "rotate", "denoise"])
    fed = []
    original = DecodingRun.feed
    monkeypatch.setattr(DecodingRun, "feed", lambda run, embeds: fed.append(tuple(embeds.shape[:2]))
                        or original(run, embeds))
    together = model.generate(**batch, max_new_tokens=30)
    shared = next(i for i, token in enumerate(batch["input_ids"][0].tolist()) if token == model.config.image_token_id)
    forced = len(model.config.image_start_token_ids)  # the forced <Img> goes with the prompt
    assert fed[0] == (1, shared) and fed[1] == (3, batch["input_ids"].shape[1] + forced - shared)
    for i, task in enumerate(["denoise", "rotate", "denoise"]):
        alone = model.generate(**processor(images=random_images(3)[i : i + 1], task=task), max_new_tokens=30)
        torch.testing.assert_close(together.visual_features[i], alone.visual_features[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(together.sequences[i], alone.sequences[0])
