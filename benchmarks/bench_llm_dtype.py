"""A float32 against a bfloat16 frozen LLM (adapters, task tokens and vision module float32 in both): time of an
LM4LV training step and of generate() for a batch, side by side in one process, on this machine's CPU kernels.

    python -m benchmarks.bench_llm_dtype [--llm smollm2] [--batch_size 4]

bfloat16 is only fast where the CPU multiplies it natively (AVX-512 BF16 or AMX, `torch.backends.cpu.
get_cpu_capability()` AVX512 or better); on AVX2 it is emulated and many times slower than float32. Run it without
`ATEN_CPU_CAPABILITY`/`ONEDNN_MAX_CPU_ISA` pins (the demo's `--cpu_kernels pinned` sets them to AVX2).
"""

import argparse

import torch

from benchmarks.bench_generation import generation_steps
from benchmarks.bench_training import lm4lv_step, training_batch
from benchmarks.common import build_model, machine, prompt_batch, timed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", choices=["tiny", "smollm2"], default="smollm2")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--side", type=int, default=4, help="Patches per side (4 -> 17 visual tokens).")
    args = parser.parse_args(argv)
    print(f"# float32 vs bfloat16 frozen LLM ({args.llm}, batch {args.batch_size}) on {machine()}, CPU kernels "
          f"{torch.backends.cpu.get_cpu_capability()}\n")
    print("| frozen LLM | training step s | generate() s | training speed-up | generate() speed-up |\n"
          "| --- | --- | --- | --- | --- |")
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = build_model(args.llm, args.side, llm_dtype=dtype).train()
        batch = training_batch(model, args.batch_size)
        step = timed(lambda: lm4lv_step(model, batch))
        model.eval()
        prompt = prompt_batch(model, args.batch_size)
        with torch.no_grad():
            generate = timed(lambda: model.generate(**prompt, max_new_tokens=generation_steps(model)))
        times[dtype] = (step, generate)
        base = times[torch.float32]
        print(f"| {str(dtype).removeprefix('torch.')} | {step:.3f} | {generate:.3f} | {base[0] / step:.2f}x | "
              f"{base[1] / generate:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
