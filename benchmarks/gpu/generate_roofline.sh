#!/usr/bin/env bash
# generate() against the memory roofline on a GPU machine: LLaMA-2-7B / MAE-Large shapes in bfloat16, ms per
# generated token at batch 1, 4, 16, 64 on the static cache (CUDA graph) and the dynamic one, the authors' no-cache
# loop, the first call apart, and a 1024x1024 photo restored tile by tile with the demo's SmolLM2 shapes; every stage
# under its own timeout, results into $OUT as they come.
# With the device kit (../shared/device/README.md), after its setup:  bash .device/b/go bash benchmarks/gpu/generate_roofline.sh
# Elsewhere, in an installed checkout:                                 OUT=outputs/gpu bash benchmarks/gpu/generate_roofline.sh
set -u
. "$(dirname "$0")/common.sh"
# a quick probe on the small shapes first: a capture failure shows within a minute
timeout 120 python -m benchmarks.bench_gpu --llm smollm2 --quick --photo_side 256 \
  > "$out/bench_gpu_probe.md" 2>&1 || echo "probe failed or timed out: $?" >> "$out/bench_gpu_probe.md"
timeout 400 python -m benchmarks.bench_gpu --output "$out/bench_gpu.json" > "$out/bench_gpu.md" 2>&1 \
  || echo "failed or timed out: $?" >> "$out/bench_gpu.md"
tail -n 30 "$out/bench_gpu.md"
