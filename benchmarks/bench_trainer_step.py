"""Training throughput at the paper's batch sizes: (b) the package's whole training step through `LM4LVTrainer`
(data loading, degradation, collation, host-to-device copies, forward, backward, clipping, optimizer) against (a) the
bare frozen LLM's forward + backward (gradients to the input embeddings only) on the same batch and sequence length,
for a float32 and a bfloat16 frozen LLM, measured side by side in one run. (b)/(a) is the time of a package step over
the floor's: 1.0 means the step costs what the frozen LLM alone costs.

    python -m benchmarks.bench_trainer_step [--llm tiny|smollm2] [--batch_sizes 32,256] [--steps 20]
        [--device cuda] [--workers 4] [--data per_sample,device] [--compile] [--sync_check] [--output FILE.json]
        [--baseline CHECKOUT]

(b) is measured for each data path: `per_sample` (the `datasets` pairs, degraded per sample on the host, collated,
copied) and `device` (`DevicePairedBatches`: the corpus in device memory, batched degradations there).

`--baseline CHECKOUT` first runs this benchmark, with the same arguments, on another checkout of the package (a git
worktree of an earlier version, say), installed into a temporary folder, then on this one, and prints each path's
step time here over there (below 1.0: this version's step is faster).
"""

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import TrainerCallback

from lm4lv.processing.data import bundled_corpus, paired_dataset
from lm4lv.processing.device_data import DevicePairedBatches, decode_images
from lm4lv.research.offline_default import RECIPE
from lm4lv.trainers import LM4LVDataCollator, LM4LVTrainer, LM4LVTrainingArguments

from benchmarks.bench_training import bare_llm_step
from benchmarks.common import build_model, machine, stub_processor, synchronized, timed, wait_for

WARMUP = 3  # untimed first steps


class StepTimes(TrainerCallback):
    """Wall time of every optimizer step (the device waited for at each step's end)."""

    def __init__(self, device: torch.device):
        self.device, self.times, self.start = device, [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        wait_for(self.device)
        self.times.append(time.perf_counter() - self.start)


class SyncCheck(TrainerCallback):
    """Runs every step after the warm-up under `torch.cuda.set_sync_debug_mode("error")`: any host-device
    synchronisation inside a step raises (and names the operation)."""

    def __init__(self, warmup_steps: int):
        self.warmup_steps = warmup_steps

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step >= self.warmup_steps:
            torch.cuda.set_sync_debug_mode("error")

    def on_step_end(self, args, state, control, **kwargs):
        torch.cuda.set_sync_debug_mode("default")


def training_data(model, processor, data: str, batch_size: int, steps: int) -> tuple:
    """`(train_dataset, data_collator)` of the bundled corpus' denoising pairs: the per-sample path (`paired_dataset`
    and the collator) or batches made on the model's device (`DevicePairedBatches`)."""
    corpus, size = bundled_corpus()["train"], model.config.vision_config.image_size
    if data == "device":
        return DevicePairedBatches(decode_images(corpus, size, device=model.device), processor, ["denoise"],
                                   batch_size), None
    dataset = paired_dataset(corpus, ["denoise"], size, epochs=max(1, (steps + WARMUP) * batch_size // 1000 + 1))
    return dataset, LM4LVDataCollator(processor)


def trainer_step_seconds(model, processor, batch_size: int, steps: int, workers: int, data: str = "per_sample",
                         compile_model: bool = False, sync_check: bool = False) -> float:
    """Median seconds per step of `LM4LVTrainer` on the bundled corpus' denoising pairs (after `WARMUP` steps)."""
    dataset, collator = training_data(model, processor, data, batch_size, steps)
    timer = StepTimes(model.device)
    callbacks = [SyncCheck(WARMUP), timer] if sync_check else [timer]
    with tempfile.TemporaryDirectory() as output_dir:
        args = LM4LVTrainingArguments(
            output_dir=output_dir, per_device_train_batch_size=batch_size, max_steps=steps + WARMUP,
            learning_rate=1e-3, warmup_steps=0, save_strategy="no", logging_steps=10**6, report_to=[],
            disable_tqdm=True, use_cpu=model.device.type == "cpu", dataloader_num_workers=workers if collator else 0,
            torch_compile=compile_model,
        )
        trainer = LM4LVTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                               processing_class=processor, callbacks=callbacks)
        trainer.train()
    return statistics.median(timer.times[WARMUP:])


def bare_step_seconds(model, processor, batch_size: int) -> tuple[float, int]:
    """Best seconds of the bare frozen LLM's forward + backward on a batch of the training batch's shape, and that
    sequence length."""
    images = torch.rand(batch_size, 3, *processor.image_size)
    batch = processor(images=images, targets=images, task="denoise").to(model.device)
    length = batch["input_ids"].shape[1]
    embeds = torch.randn(batch_size, length, model.config.text_config.hidden_size, device=model.device,
                         dtype=model.get_input_embeddings().weight.dtype, requires_grad=True)
    return timed(synchronized(lambda: bare_llm_step(model, batch, embeds), model.device)), length


def measure(llm: str, dtype: torch.dtype, batch_size: int, options) -> dict:
    """One row: the bare LLM's and every data path's samples/s, and each path's ratio to the bare LLM."""
    model = build_model(llm, 4, device=options.device, llm_dtype=dtype).train()
    for option, value in RECIPE.items():  # the recipe's losses (its fitted in_adapter init does not change the cost)
        setattr(model.config, option, value)
    processor = stub_processor(model, llm)
    bare, length = bare_step_seconds(model, processor, batch_size)
    row = {"llm_dtype": str(dtype).removeprefix("torch."), "batch": batch_size, "sequence_length": length,
           "bare_samples_per_s": batch_size / bare}
    for data in options.data.split(","):
        step = trainer_step_seconds(model, processor, batch_size, options.steps, options.workers, data,
                                    options.compile, options.sync_check)
        row |= {f"{data}_samples_per_s": batch_size / step, f"{data}_ratio": step / bare}
    return row


def baseline_run(checkout: str, argv: list[str]) -> tuple[str, list[dict]]:
    """`(version, rows)` of this benchmark run on another checkout of the package: the checkout is installed (no
    dependencies) into a temporary folder, and its own `benchmarks.bench_trainer_step` runs in a subprocess that
    imports that copy of `lm4lv`, with `argv` and its rows written to a JSON file."""
    with tempfile.TemporaryDirectory() as target:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                        target, checkout], check=True)
        version = next(importlib.metadata.distributions(name="lm4lv", path=[target])).version
        rows_file = os.path.join(target, "rows.json")
        environment = dict(os.environ, PYTHONPATH=os.pathsep.join([target, os.path.abspath(checkout)]))
        # run from the install folder: its `lm4lv` comes first, the checkout gives `benchmarks`
        subprocess.run([sys.executable, "-m", "benchmarks.bench_trainer_step", *argv, "--output", rows_file],
                       cwd=target, env=environment, check=True)
        with open(rows_file) as handle:
            return version, json.load(handle)["rows"]


def measured_arguments(args) -> list[str]:
    """The parsed command line again, less the options that say where results go (`--output`, `--baseline`): what
    decides what is measured. Flags are given when on; every other option with its value."""
    arguments = []
    for name, value in vars(args).items():
        if name not in ("output", "baseline") and value is not False:
            arguments += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return arguments


def print_comparison(version: str, baseline: list[dict], rows: list[dict], paths: list[str]):
    """Each path's step time in this run over the baseline's, row by row."""
    print(f"\n# Step time against lm4lv {version} (this version's seconds per step over {version}'s)\n")
    print("| frozen LLM | batch | " + " | ".join(f"{path}: {version} samples/s | this samples/s | time ratio"
                                               for path in paths) + " |\n" + "| --- " * (2 + 3 * len(paths)) + "|")
    for before, after in zip(baseline, rows, strict=True):
        cells = " | ".join(f"{before[f'{path}_samples_per_s']:.1f} | {after[f'{path}_samples_per_s']:.1f} | "
                           f"{before[f'{path}_samples_per_s'] / after[f'{path}_samples_per_s']:.3f}" for path in paths)
        print(f"| {after['llm_dtype']} | {after['batch']} | {cells} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", choices=["tiny", "smollm2"], default="smollm2")
    parser.add_argument("--batch_sizes", default="32,256", help="Comma-separated batch sizes.")
    parser.add_argument("--steps", type=int, default=20, help="Timed Trainer steps (after 3 warm-up steps).")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=0, help="Data loader worker processes.")
    parser.add_argument("--data", default="per_sample,device",
                        help="Data paths to measure: per_sample (datasets + collator), device (DevicePairedBatches).")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (TrainingArguments).")
    parser.add_argument("--sync_check", action="store_true",
                        help="CUDA: run the timed steps under torch.cuda.set_sync_debug_mode('error').")
    parser.add_argument("--output", default=None, help="Also write the rows to this JSON file.")
    parser.add_argument("--baseline", default=None,
                        help="Another checkout of the package to measure first, with the same arguments.")
    args = parser.parse_args(argv)
    if args.baseline:
        version, baseline = baseline_run(args.baseline, measured_arguments(args))
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    card = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"# Training throughput ({args.llm}, 17 visual tokens, the recipe's losses) on {card}, {machine()}\n")
    paths = args.data.split(",")
    print("| frozen LLM | batch | sequence length | (a) bare LLM samples/s | "
          + " | ".join(f"(b) {path} samples/s | (b)/(a)" for path in paths) + " |\n"
          + "| --- " * (4 + 2 * len(paths)) + "|")
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for batch_size in (int(value) for value in args.batch_sizes.split(",")):
            row = measure(args.llm, dtype, batch_size, args)
            rows.append(row)
            cells = " | ".join(f"{row[f'{path}_samples_per_s']:.1f} | {row[f'{path}_ratio']:.2f}" for path in paths)
            print(f"| {row['llm_dtype']} | {batch_size} | {row['sequence_length']} | {row['bare_samples_per_s']:.1f} "
                  f"| {cells} |", flush=True)
    if args.baseline:
        print_comparison(version, baseline, rows, paths)
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"card": card, "machine": machine(), "llm": args.llm, "compile": args.compile, "rows": rows},
                      handle, indent=2)


if __name__ == "__main__":
    main()
