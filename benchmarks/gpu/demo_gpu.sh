#!/usr/bin/env bash
# The gpu profile of the main job on a GPU machine (<= 10 min from an empty cache on one H100/H200-class GPU), or with
# DTYPE_AB=1 a bfloat16-vs-float32 frozen-LLM A/B at equal steps instead; every stage under its own timeout, results
# into $OUT as they come.
# With the device kit (../shared/device/README.md), after its setup:  bash .device/b/go bash benchmarks/gpu/demo_gpu.sh
# Elsewhere, in an installed checkout:                                 OUT=outputs/gpu bash benchmarks/gpu/demo_gpu.sh
set -u
. "$(dirname "$0")/common.sh"
# the whole profile, from an empty cache: SmolLM2's conversion and the MAE's training are part of its wall time
export LM4LV_CACHE=${LM4LV_CACHE:-/tmp/lm4lv-gpu-cache}
if [ "${DTYPE_AB:-0}" != 1 ]; then
  start=$(date +%s)
  timeout 540 lm4lv demo --profile gpu --output_dir "$out/demo" > "$out/demo_log.txt" 2>&1 \
    || echo "demo failed or timed out: $?" >> "$out/demo_log.txt"
  echo "wall seconds: $(( $(date +%s) - start ))" >> "$out/demo_log.txt"
  rm -rf "$out"/demo/{lm4lv,lm4lv_skip,random_llm,linear_*,mlp_*,transformer_*,vit_llm_*,eval_set*}  # checkpoints, sets
fi
# the dtype A/B the profile's choice rests on (DTYPE_AB=1; a run of its own: one call to the device runs 10 min at
# most): the recipe with a float32 and a bfloat16 frozen LLM, equal steps, the profile's batch
if [ "${DTYPE_AB:-0}" = 1 ]; then
  timeout 300 lm4lv ablate --methods lm4lv,recipe_bf16_llm --tasks denoise --max_steps 400 --batch_size 256 \
    --eval_samples 64 --output_dir "$out/dtype_ab" > "$out/dtype_ab_log.txt" 2>&1 \
    || echo "A/B failed or timed out: $?" >> "$out/dtype_ab_log.txt"
  rm -rf "$out/dtype_ab/runs" "$out/dtype_ab/eval_sets"
fi
tail -c 2000 "$out/demo_log.txt" 2>/dev/null; tail -n 6 "$out/dtype_ab/ablation.md" 2>/dev/null
