"""The paper's scale on a GPU: a random-weight LLaMA-2-7B-shaped LLM (bf16, SDPA attention) with a ViT-MAE-Large-shaped
vision module, float32 adapters and task tokens, built directly on the device (nothing downloaded or written).

Prints generate()'s ms per generated token at several batch sizes on the static cache (on CUDA: the visual run
replayed as a CUDA graph) and on the dynamic one (eager), against the memory roofline measured in the same run (the
LLM's weight bytes over a measured device-to-device copy bandwidth), the first call (graph capture) apart; the
authors' algorithm (no KV cache, batch 1) with its ratio to generate() at batch 1; and training samples/s (forward,
backward and an AdamW step on the trainables) with peak device memory, with and without gradient checkpointing.

    python -m benchmarks.bench_gpu                                   # LLaMA-2-7B / MAE-Large shapes on cuda
    python -m benchmarks.bench_gpu --llm tiny --device cpu --quick   # the same code on the tiny shapes
"""

import argparse
import json
import time

import torch

from lm4lv.pipelines import LM4LVRestorationPipeline
from lm4lv.pipelines.image_restoration import tile_starts
from lm4lv.processing.data import bundled_image

from benchmarks.bench_generation import generation_steps, recompute_check
from benchmarks.bench_training import lm4lv_step, training_batch
from benchmarks.common import build_model, machine, prompt_batch, stub_processor, synchronized, timed

PATCHES_SIDE, PATCHES_SIDE_QUICK = 14, 4  # the vision module's patches per side: ViT-MAE-Large at 224 px, and --quick


def peak_memory_gib(device: torch.device) -> float | None:
    """Peak allocated device memory since the last reset (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak_memory(device: torch.device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def copy_bandwidth(device: torch.device) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting the bytes read and the bytes written (the memory
    traffic a weight read competes with)."""
    source = torch.empty(2**30 if device.type == "cuda" else 2**26, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = timed(synchronized(lambda: target.copy_(source), device), 5)
    return 2 * source.numel() / seconds


def weight_bytes(model) -> int:
    """Bytes of the frozen LLM's weights: what every decoding step reads once."""
    return sum(p.numel() * p.element_size() for p in model.language_model.parameters())


def first_call_seconds(model, batch: dict, steps: int, cache: str) -> float:
    """The first generate() of a batch shape: on CUDA with the static cache it includes the graph capture."""
    start = time.perf_counter()
    synchronized(lambda: model.generate(**batch, max_new_tokens=steps, cache_implementation=cache), model.device)()
    return time.perf_counter() - start


def generation_row(model, batch_size: int, steps: int, repeats: int, roofline_ms: float) -> dict:
    """ms per generated token on the static (default on CUDA) and the dynamic (eager) cache, against the roofline."""
    device, batch = model.device, prompt_batch(model, batch_size)
    first = first_call_seconds(model, batch, steps, "static")
    reset_peak_memory(device)
    seconds = {cache: timed(synchronized(lambda: model.generate(**batch, max_new_tokens=steps,
                                                                 cache_implementation=cache), device), repeats)
               for cache in ("static", "dynamic")}
    static_ms, dynamic_ms = (1000 * seconds[cache] / steps for cache in ("static", "dynamic"))
    return {"batch": batch_size, "static_ms_per_token": static_ms, "dynamic_ms_per_token": dynamic_ms,
            "dynamic_over_static": dynamic_ms / static_ms, "roofline_ms_per_token": roofline_ms,
            "static_over_roofline": static_ms / roofline_ms, "images_per_s": batch_size / seconds["static"],
            "first_call_s": first, "peak_gib": peak_memory_gib(device)}


def generation(model, batch_sizes: list[int], repeats: int) -> tuple[list[dict], dict]:
    """generate() at each batch size (batch 1 first) against the memory roofline measured in this run, and the
    authors' full recompute at batch 1."""
    device, steps = model.device, generation_steps(model)
    bandwidth, weights = copy_bandwidth(device), weight_bytes(model)
    roofline_ms = 1000 * weights / bandwidth
    print(f"Roofline: {weights / 1e9:.2f} GB of LLM weights read per step at {bandwidth / 1e12:.2f} TB/s (measured "
          f"device-to-device copy) = {roofline_ms:.2f} ms per generated token\n")
    print("| batch | static ms/token | dynamic ms/token | dynamic/static | static/roofline | images/s | first call s "
          "| peak GiB |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for batch_size in sorted({1, *batch_sizes}):
        rows.append(generation_row(model, batch_size, steps, repeats, roofline_ms))
        row = rows[-1]
        print(f"| {batch_size} | {row['static_ms_per_token']:.2f} | {row['dynamic_ms_per_token']:.2f} | "
              f"{row['dynamic_over_static']:.2f} | {row['static_over_roofline']:.2f} | {row['images_per_s']:.2f} | "
              f"{row['first_call_s']:.2f} | {fmt(row['peak_gib'])} |", flush=True)
    slow, difference = recompute_check(model, prompt_batch(model, 1))
    return rows, {"recompute_s": slow, "speedup": slow / (rows[0]["static_ms_per_token"] * steps / 1000),
                  "max_abs_difference": difference, "bandwidth_bytes_per_s": bandwidth, "weight_bytes": weights}


def tiled_restoration(llm: str, device: str, side: int, batch_size: int) -> dict:
    """Seconds to restore one `side` x `side` photo tile by tile (8-pixel overlap, `batch_size` tiles per
    generate() call) with the demo checkpoint's shapes: `llm` (SmolLM2-135M), the demo MAE's 32x32 input, 17 visual
    tokens, a bfloat16 LLM on CUDA."""
    model = build_model(llm, 4, device=device, llm_dtype=torch.bfloat16 if device.startswith("cuda") else None)
    restorer = LM4LVRestorationPipeline(model=model, processor=stub_processor(model, llm), batch_size=batch_size)
    photo = bundled_image("astronaut.png", downscale=1).resize((side, side))
    tile, stride = model.config.vision_config.image_size, model.config.vision_config.image_size - 8
    tiles = len(tile_starts(side, tile, stride)) ** 2
    seconds = timed(synchronized(lambda: restorer(photo, task="denoise", overlap=8), model.device), 1)
    return {"llm": llm, "side": side, "tiles": tiles, "batch": batch_size, "seconds": seconds,
            "tiles_per_s": tiles / seconds}


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
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--train_batch_size", type=int, default=8)
    parser.add_argument("--photo_llm", choices=["smollm2", "tiny"], default=None,
                        help="LLM shape of the tiled photo restoration (default: the demo checkpoint's, smollm2; "
                             "tiny with --quick).")
    parser.add_argument("--photo_side", type=int, default=None,
                        help="Side of the photo restored tile by tile (default: 1024; 64 with --quick).")
    parser.add_argument("--photo_batch_size", type=int, default=None,
                        help="Tiles per generate() call (default: 64; 4 with --quick).")
    parser.add_argument("--quick", action="store_true",
                        help="Every stage at small sizes: one timed repeat, batches 1 and 2, 4x4 patches, a tiny "
                             "64x64 photo (under a minute on 2 CPU cores with --llm tiny --device cpu).")
    parser.add_argument("--output", help="Also write the numbers to this JSON file.")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 2
    batch_sizes = [1, 2] if args.quick else args.batch_sizes
    device = torch.device(args.device)
    llm_dtype = torch.bfloat16 if device.type == "cuda" else None
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    model = build_model(args.llm, PATCHES_SIDE_QUICK if args.quick else PATCHES_SIDE, device=args.device,
                        llm_dtype=llm_dtype)
    print(f"# {args.llm} LLM ({llm_dtype or torch.float32}, {model.language_model.config._attn_implementation}) with "
          f"{model.config.num_visual_tokens} visual tokens on {card}; {machine()}\n")
    reset_peak_memory(device)
    weights_gib = peak_memory_gib(device)

    print("## generate() (forced <Img>, the image, </Img>): ms per generated token\n")
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
    photo = tiled_restoration(args.photo_llm or ("tiny" if args.quick else "smollm2"), args.device,
                              args.photo_side or (64 if args.quick else 1024),
                              args.photo_batch_size or (4 if args.quick else 64))
    print(f"\n## A {photo['side']}x{photo['side']} photo restored tile by tile ({photo['llm']} LLM, the demo MAE's "
          f"32x32 tiles, 8-pixel overlap, {photo['tiles']} tiles, batch {photo['batch']}): {photo['seconds']:.2f} s "
          f"({photo['tiles_per_s']:.1f} tiles/s)")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"card": card, "machine": machine(), "llm": args.llm, "weights_gib": weights_gib,
                       "generate": rows, "recompute": recompute, "training": train_rows, "photo": photo}, handle,
                      indent=2)


if __name__ == "__main__":
    main()
