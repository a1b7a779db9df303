#!/usr/bin/env bash
# The first minutes on a GPU machine, in one call of at most 540 s, most valuable first; every stage under its own
# timeout, results into $OUT as they come:
#   1. the probes: Trainer steps under torch.cuda.set_sync_debug_mode("error") (a device synchronisation inside a
#      step raises), then generate() on the static cache with its CUDA graph at small shapes (a capture that fails
#      warns and falls back to the eager step); each within a minute;
#   2. `lm4lv demo --profile gpu --estimate`: measured speeds and the projected time of every stage;
#   3. the gpu profile itself, resumable: its folder ($RUN, kept on the machine between calls) continues where the
#      previous call stopped, so calling this script again finishes a run one call could not;
#   4. with the time left: the training-speed figures, then generate() on the small shapes.
# With the device kit (../shared/device/README.md), after its setup:  bash .device/b/go bash benchmarks/gpu/first_contact.sh
# Elsewhere, in an installed checkout:                                 OUT=outputs/gpu bash benchmarks/gpu/first_contact.sh
set -u
. "$(dirname "$0")/common.sh"
budget=${BUDGET:-540}
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
# run NAME SECONDS COMMAND...: the command under its timeout (never past the budget), its output in $out/NAME.txt
run() {
  local name=$1 limit=$2; shift 2
  (( limit > $(left) - 10 )) && limit=$(( $(left) - 10 ))
  if (( limit < 20 )); then echo "skipped: $(left) s left" > "$out/$name.txt"; return 1; fi
  echo "== $name: up to $limit s ($(left) s left)" >> "$out/progress.txt"
  timeout -k 10 "$limit" "$@" > "$out/$name.txt" 2>&1
  local status=$?
  echo "== $name: exit $status after $(( $(date +%s) - start )) s" >> "$out/progress.txt"
  return $status
}
export LM4LV_CACHE=${LM4LV_CACHE:-/tmp/lm4lv-cache}  # SmolLM2's conversion and the demo MAE, kept between calls
RUN=${RUN:-/tmp/lm4lv-first-contact}  # the gpu profile's folder, kept between calls so that the run continues
run smollm2 90 python -c "from lm4lv.modeling_lm4lv.shipped import prepare_smollm2; print(prepare_smollm2())"
run sync_check_training 60 python -m benchmarks.bench_trainer_step --llm smollm2 --batch_sizes 32 --steps 5 \
  --data device --sync_check
run graph_probe 60 python -m benchmarks.bench_gpu --llm smollm2 --quick
if [ ! -e "$RUN/stages.json" ]; then run estimate 150 lm4lv demo --profile gpu --estimate --output_dir "$RUN"; fi
cp "$RUN/estimate.md" "$out/" 2>/dev/null
run demo $(( $(left) - 40 )) lm4lv demo --profile gpu --output_dir "$RUN"
cp "$RUN"/{report.md,report.json,stages.json,*.png} "$out/" 2>/dev/null
run trainer_step 240 python -m benchmarks.bench_trainer_step --llm smollm2 --batch_sizes 32,256 --steps 20 \
  --workers 8 --output "$out/trainer_step.json"
run generate 120 python -m benchmarks.bench_gpu --llm smollm2 --quick --photo_side 256
tail -n 20 "$out/progress.txt" 2>/dev/null; head -n 5 "$RUN/report.md" 2>/dev/null
