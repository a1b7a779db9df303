"""Training-step benchmarks: LM4LV forward+backward vs the bare frozen LLM on the same sequence, memory with and
without gradient checkpointing, and data-pipeline throughput vs what a training step consumes.

    python -m benchmarks.bench_training [--llm tiny|smollm2] [--batch_size 4]
"""

import argparse
import subprocess
import sys
import time

import torch

from lm4lv.processing.data import bundled_corpus, paired_dataset
from lm4lv.trainers import LM4LVDataCollator

from benchmarks.common import build_model, machine, prompt_batch, stub_processor, timed


def training_batch(model, batch_size: int) -> dict:
    """A batch with the processor's training layout: prompt, answer image, 4 answer text tokens, labels."""
    prompt = prompt_batch(model, batch_size)
    config = model.config
    answer = [5, 6, 7, 8] + [config.image_token_id] * config.num_visual_tokens + [9, 10, 11, 12, 13, 40, 41, 0]
    input_ids = torch.cat([prompt["input_ids"], prompt["input_ids"].new_tensor([answer] * batch_size)], dim=1)
    labels = torch.full_like(input_ids, -100)
    labels[:, -len(answer):] = input_ids.new_tensor(answer)
    return {**prompt, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
            "target_pixel_values": torch.randn_like(prompt["pixel_values"])}


def lm4lv_step(model, batch):
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()


def bare_llm_step(model, batch, inputs_embeds):
    """The floor: the frozen LLM's forward+backward on the same length, gradients reaching the input embeddings."""
    inputs_embeds.grad = None
    mask = batch.get("attention_mask")
    hidden = model.text_backbone(inputs_embeds=inputs_embeds, attention_mask=mask).last_hidden_state
    hidden.float().pow(2).mean().backward()


def peak_memory_child(llm: str, side: int, batch_size: int, checkpointing: bool) -> float:
    """Peak RSS (GiB) of one training step in a fresh process."""
    code = (
        "import resource, torch\n"
        "from benchmarks.common import build_model\n"
        "from benchmarks.bench_training import training_batch, lm4lv_step\n"
        f"model = build_model({llm!r}, {side})\n"
        f"if {checkpointing}: model.language_model.activation_checkpointing_enable({{'use_reentrant': False}})\n"
        "model.train()  # after enabling: the frozen LLM only checkpoints in training mode\n"
        f"batch = training_batch(model, {batch_size})\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "lm4lv_step(model, batch); lm4lv_step(model, batch)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--llm", choices=["tiny", "smollm2"], default="smollm2")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--side", type=int, default=4, help="Patches per side (4 -> 17 visual tokens).")
    args = parser.parse_args(argv)
    print(f"# Training benchmarks ({args.llm}, batch {args.batch_size}) on {machine()}\n")

    model = build_model(args.llm, args.side).train()
    batch = training_batch(model, args.batch_size)
    length = batch["input_ids"].shape[1]
    embeds = torch.randn(args.batch_size, length, model.config.text_config.hidden_size, requires_grad=True)
    ours = timed(lambda: lm4lv_step(model, batch))
    bare = timed(lambda: bare_llm_step(model, batch, embeds))
    print("## 1. Training step: LM4LV forward+backward vs bare frozen LLM forward+backward\n")
    print("| sequence length | LM4LV s | bare LLM s | ratio |\n| --- | --- | --- | --- |")
    print(f"| {length} | {ours:.3f} | {bare:.3f} | {ours / bare:.3f} |\n", flush=True)

    print("## 2. Peak memory of a training step (fresh process each; 197 visual tokens, batch 8)\n")
    print("| gradient checkpointing | peak RSS GiB |\n| --- | --- |")
    for checkpointing in (False, True):
        print(f"| {checkpointing} | {peak_memory_child(args.llm, 14, 8, checkpointing):.2f} |", flush=True)

    print("\n## 3. Data pipeline (degradation + collation + MAE encoding) vs training step\n")
    processor = stub_processor(model)
    dataset = paired_dataset(bundled_corpus()["train"], ["denoise"], model.config.vision_config.image_size)
    collator = LM4LVDataCollator(processor)
    count, start = 0, time.perf_counter()
    for first in range(0, 256, args.batch_size):
        examples = [dataset[i] for i in range(first, first + args.batch_size)]
        collated = collator(examples)
        with torch.no_grad():
            model.encode_images(collated["pixel_values"])
            model.encode_images(collated["target_pixel_values"])
        count += args.batch_size
    data_rate = count / (time.perf_counter() - start)
    step_rate = args.batch_size / ours
    print("| data samples/s (1 process) | training samples/s | data / training |\n| --- | --- | --- |")
    print(f"| {data_rate:.1f} | {step_rate:.1f} | {data_rate / step_rate:.1f}x |")


if __name__ == "__main__":
    main()
