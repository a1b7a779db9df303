"""The paper's scale on a GPU: a random-weight LLaMA-2-7B-shaped LLM (bf16, SDPA attention) with a ViT-MAE-Large-shaped
vision module, float32 adapters and task tokens, built directly on the device (nothing downloaded or written).

Prints generate() images/s at several batch sizes, the authors' algorithm (no KV cache, batch 1) on the same device
with its ratio to generate() at batch 1, and training samples/s (forward, backward and an AdamW step on the
trainables) with peak device memory, with and without gradient checkpointing.

    python -m benchmarks.bench_gpu                                   # LLaMA-2-7B / MAE-Large shapes on cuda
    python -m benchmarks.bench_gpu --llm tiny --device cpu --quick   # the same code on the tiny shapes
"""

import argparse
import json

import torch

from benchmarks.bench_generation import generation_steps, recompute_check
from benchmarks.bench_training import lm4lv_step, training_batch
from benchmarks.common import build_model, machine, prompt_batch, synchronized, timed


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated device memory since the last reset (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak_memory(device: torch.device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def generation(model, batch_sizes: list[int], repeats: int) -> tuple[list[dict], dict]:
    """generate() at each batch size (batch 1 first), and the authors' full recompute at batch 1."""
    device, steps = model.device, generation_steps(model)
    rows = []
    for batch_size in sorted({1, *batch_sizes}):
        batch = prompt_batch(model, batch_size)
        reset_peak_memory(device)
        seconds = timed(synchronized(lambda: model.generate(**batch, max_new_tokens=steps), device), repeats)
        rows.append({"batch": batch_size, "seconds": seconds, "images_per_s": batch_size / seconds,
                     "peak_gib": peak_memory_gib(device)})
        print(f"| {batch_size} | {seconds:.3f} | {batch_size / seconds:.2f} | {fmt(rows[-1]['peak_gib'])} |",
              flush=True)
    slow, difference = recompute_check(model, prompt_batch(model, 1))
    return rows, {"recompute_s": slow, "speedup": slow / rows[0]["seconds"], "max_abs_difference": difference}


def training(model, batch_size: int, checkpointing: bool, steps: int) -> dict:
    """Samples/s and peak memory of training steps (forward, backward, AdamW on the trainables)."""
    device = model.device
    if checkpointing:
        model.language_model.activation_checkpointing_enable({"use_reentrant": False})
    model.train()  # after enabling: the frozen LLM only checkpoints in training mode
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = training_batch(model, batch_size)

    def step():
        lm4lv_step(model, batch)
        optimizer.step()

    reset_peak_memory(device)
    seconds = timed(synchronized(step, device), steps)
    if checkpointing:
        model.language_model.activation_checkpointing_disable()
    model.eval()
    return {"batch": batch_size, "checkpointing": checkpointing, "seconds_per_step": seconds,
            "samples_per_s": batch_size / seconds, "peak_gib": peak_memory_gib(device)}


def fmt(gib: float | None) -> str:
    return "-" if gib is None else f"{gib:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", choices=["llama2-7b", "smollm2", "tiny"], default="llama2-7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--train_batch_size", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="One timed repeat, small batches.")
    parser.add_argument("--output", help="Also write the numbers to this JSON file.")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 2
    batch_sizes = [1, 2] if args.quick else args.batch_sizes
    device = torch.device(args.device)
    llm_dtype = torch.bfloat16 if device.type == "cuda" else None
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    model = build_model(args.llm, 14, device=args.device, llm_dtype=llm_dtype)
    print(f"# {args.llm} LLM ({llm_dtype or torch.float32}, {model.language_model.config._attn_implementation}) with "
          f"{model.config.num_visual_tokens} visual tokens on {card}; {machine()}\n")
    reset_peak_memory(device)
    weights_gib = peak_memory_gib(device)

    print("## generate() (forced <Img>, the image, </Img>)\n\n| batch | s per call | images/s | peak GiB |\n"
          "| --- | --- | --- | --- |")
    rows, recompute = generation(model, batch_sizes, repeats)
    print(f"\nAuthors' algorithm (no cache, batch 1): {recompute['recompute_s']:.2f} s per image; generate() at batch "
          f"1 is {recompute['speedup']:.1f}x faster; largest pixel difference between their images "
          f"{recompute['max_abs_difference']:.2e}")

    print(f"\n## Training step (batch {args.train_batch_size})\n\n| gradient checkpointing | s per step | samples/s | "
          "peak GiB |\n| --- | --- | --- | --- |")
    train_rows = []
    for checkpointing in (False, True):
        train_rows.append(training(model, args.train_batch_size, checkpointing, repeats))
        row = train_rows[-1]
        print(f"| {checkpointing} | {row['seconds_per_step']:.3f} | {row['samples_per_s']:.2f} | "
              f"{fmt(row['peak_gib'])} |", flush=True)
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"card": card, "machine": machine(), "llm": args.llm, "weights_gib": weights_gib,
                       "generate": rows, "recompute": recompute, "training": train_rows}, handle, indent=2)


if __name__ == "__main__":
    main()
