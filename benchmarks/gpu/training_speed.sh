#!/usr/bin/env bash
# The training-speed check on a GPU machine, every stage under its own timeout, results written to $OUT as they come.
# With the device kit (../shared/device/README.md), after its setup:  bash .device/b/go bash benchmarks/gpu/training_speed.sh
# Elsewhere, in an installed checkout:                                 OUT=outputs/gpu bash benchmarks/gpu/training_speed.sh
set -u
. "$(dirname "$0")/common.sh"
# SmolLM2 converted once (its tokenizer gives the batches the demo's sequence length; the weights stay random)
timeout 90 python -c "from lm4lv.modeling_lm4lv.shipped import prepare_smollm2; prepare_smollm2()" \
  > "$out/smollm2.txt" 2>&1 || echo "conversion failed or timed out: $?" >> "$out/smollm2.txt"
# a short probe first, steps under torch.cuda.set_sync_debug_mode("error"): a failure or a device synchronisation
# inside a step shows within a minute
timeout 90 python -m benchmarks.bench_trainer_step --llm smollm2 --batch_sizes 32 --steps 5 --data device \
  --sync_check > "$out/trainer_step_sync_check.md" 2>&1 || echo "probe failed or timed out: $?" >> "$out/trainer_step_sync_check.md"
# the measurement docs/results/performance.md quotes: float32 and bfloat16 frozen LLM, batch 32 and 256, both data paths
timeout 240 python -m benchmarks.bench_trainer_step --llm smollm2 --batch_sizes 32,256 --steps 20 --workers 8 \
  --output "$out/trainer_step.json" > "$out/trainer_step.md" 2>&1 || echo "failed or timed out: $?" >> "$out/trainer_step.md"
# torch.compile (inductor): does it pay at these shapes?
timeout 120 python -m benchmarks.bench_trainer_step --llm smollm2 --batch_sizes 256 --steps 20 --data device --compile \
  --output "$out/trainer_step_compiled.json" > "$out/trainer_step_compiled.md" 2>&1 || echo "failed or timed out: $?" >> "$out/trainer_step_compiled.md"
tail -n 8 "$out/trainer_step.md" "$out/trainer_step_compiled.md"
