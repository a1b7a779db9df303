#!/usr/bin/env bash
# The frozen LLM's dtype A/B the gpu profile's float32 choice rests on, on a GPU machine: the recipe with a float32
# and a bfloat16 frozen LLM on denoising, equal steps, the profile's batch (256); under its own timeout, results
# into $OUT. (The profile itself: benchmarks/gpu/first_contact.sh.)
# With the device kit (../shared/device/README.md), after its setup:  bash .device/b/go bash benchmarks/gpu/dtype_ab.sh
# Elsewhere, in an installed checkout:                                 OUT=outputs/gpu bash benchmarks/gpu/dtype_ab.sh
set -u
. "$(dirname "$0")/common.sh"
export LM4LV_CACHE=${LM4LV_CACHE:-/tmp/lm4lv-cache}
timeout 300 lm4lv ablate --methods lm4lv,recipe_bf16_llm --tasks denoise --max_steps 400 --batch_size 256 \
  --eval_samples 64 --output_dir "$out/dtype_ab" > "$out/dtype_ab_log.txt" 2>&1 \
  || echo "A/B failed or timed out: $?" >> "$out/dtype_ab_log.txt"
rm -rf "$out/dtype_ab/runs" "$out/dtype_ab/eval_sets"
tail -n 6 "$out/dtype_ab/ablation.md" 2>/dev/null
