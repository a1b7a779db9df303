"""The GPU paths that must never wait for the device, checked on the CPU: `torch.profiler` records every aten op a
training step or a static-cache visual step runs, and none of them may be one that reads a value back to the host
(on a GPU each is a synchronisation: the step stalls until the device catches up)."""

import contextlib

import datasets
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import TrainerCallback

from lm4lv.modeling_lm4lv import modeling_lm4lv
from lm4lv.modeling_lm4lv.decoding import DecodingRun
from lm4lv.processing.device_data import DevicePairedBatches, decode_images
from lm4lv.trainers import LM4LVDataCollator, LM4LVTrainer, LM4LVTrainingArguments

from conftest import build_tiny, random_images

# aten ops that read a device value back to the host
SYNCHRONISING_OPS = (
    "aten::_local_scalar_dense",  # tensor.item(), float(tensor), bool(tensor): one value to the host
    "aten::item",  # the same, as dispatched from Python
    "aten::is_nonzero",  # `if tensor:` / `tensor.all()` used as a Python bool
    "aten::nonzero",  # output shape depends on the values (nonzero_static does not)
    "aten::masked_select",  # output shape depends on the mask (masked_scatter's backward)
    "aten::masked_scatter_backward",  # its backward runs masked_select
    "aten::unique",  # output shape depends on the values
    "aten::_unique",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::unique_dim",
    "aten::equal",  # torch.equal returns a Python bool
    "aten::allclose",  # a Python bool
    "aten::repeat_interleave",  # with tensor repeats, its output size is read from the device
    "aten::tolist",  # every value to the host
)


# kernels whose CPU implementation reads a CPU scalar that its CUDA implementation reads on the device: the fused
# AdamW step reads each parameter's step counter (a host read on the CPU, none on a GPU)
CPU_ONLY_READERS = ("aten::_fused_adamw_", "aten::_fused_adam_")


def inside(event, names) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in names:
            return True
        parent = parent.cpu_parent
    return False


def recorded_sync_ops(events) -> list[str]:
    """The synchronising ops among profiler events (but the CPU-only reads of `CPU_ONLY_READERS`)."""
    return sorted({event.name for event in events
                   if event.name in SYNCHRONISING_OPS and not inside(event, CPU_ONLY_READERS)})


class ProfileSecondStep(TrainerCallback):
    """Profiles from the end of the first step to the end of the second: data, forward, backward, clipping, the
    optimizer and scheduler steps and the loss bookkeeping of one whole step after the first."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.__enter__()
        elif state.global_step == 2:
            self.profiler.__exit__(None, None, None)
            self.events = list(self.profiler.events())


def test_a_training_step_after_the_first_reads_nothing_back_from_the_device(tmp_path):
    model, processor = build_tiny(task_names=("denoise", "rotate"))
    corpus = datasets.Dataset.from_dict({"image": processor.postprocess(random_images(10) * 4 - 2)})
    batches = DevicePairedBatches(decode_images(corpus, 32), processor, ["denoise", "rotate"], batch_size=4)
    # as on a GPU: LM4LVTrainingArguments turn the per-step NaN/inf filter off there
    args = LM4LVTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3,
                                  logging_steps=100, use_cpu=True, disable_tqdm=True, save_strategy="no",
                                  report_to=[], logging_nan_inf_filter=False, max_grad_norm=1.0)
    profiler = ProfileSecondStep()
    LM4LVTrainer(model=model.train(), args=args, train_dataset=batches, processing_class=processor,
                 callbacks=[profiler]).train()
    assert any(event.name == "aten::mm" for event in profiler.events)  # the step was recorded
    assert recorded_sync_ops(profiler.events) == []


def test_a_static_cache_visual_step_reads_nothing_back_from_the_device():
    """The part of `generate()` the CUDA graph records: one visual step on the static cache."""
    model, processor = build_tiny()
    batch = processor(images=random_images(2), task="denoise")
    run = DecodingRun.start(model, batch["attention_mask"], None, None, None, True, "static")
    input_ids = torch.cat([batch["input_ids"], run.start_ids.expand(2, -1)], dim=1)
    state = run.prefill(input_ids, model.build_inputs_embeds(input_ids, model.encode_images(batch["pixel_values"]),
                                                             batch["task_ids"]))
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        hidden = run.visual_step(state.hidden)
    assert hidden.shape == state.hidden.shape
    assert recorded_sync_ops(profiler.events()) == []


def test_the_unpadded_attention_path_computes_what_plain_sdpa_computes(monkeypatch):
    """An unpadded training batch attends through `CAUSAL_SDPA` (no packed-sequence check); its loss and gradients
    equal, bit for bit, those of transformers' plain `sdpa` path on the same batch."""
    model, processor = build_tiny(task_names=("denoise",))
    batch = LM4LVDataCollator(processor)([{"degraded": d, "clean": c, "task": "denoise"}
                                          for d, c in zip(random_images(3), random_images(3, seed=1))])
    assert "attention_mask" not in batch

    def loss_and_gradient():
        model.zero_grad()
        torch.manual_seed(0)
        loss = model.train()(**batch).loss
        loss.backward()
        return loss.detach(), model.in_adapter.weight.grad.clone(), model.task_prompt_embeddings.grad.clone()

    through_causal_sdpa = loss_and_gradient()
    monkeypatch.setattr(modeling_lm4lv, "unpadded_causal_attention", lambda language_model: contextlib.nullcontext())
    through_plain_sdpa = loss_and_gradient()
    assert all(torch.equal(a, b) for a, b in zip(through_causal_sdpa, through_plain_sdpa))
    assert model.language_model.config._attn_implementation == "sdpa"
