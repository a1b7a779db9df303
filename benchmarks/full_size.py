"""Full-size check: the `lm4lv` commands, unchanged, on random-weight LLaMA-2-7B-shaped and MAE-Large-shaped models.

Writes the two base models as ordinary local checkpoints (random weights, nothing downloaded; the LLM uses the offline
default's SmolLM2 tokenizer, so its vocabulary is 49,152 instead of LLaMA-2's 32,000), then runs

    lm4lv train   --llm LLAMA --vision MAE --llm_dtype bfloat16 --task denoise --max_steps N ...
    lm4lv restore --model CKPT --llm_dtype bfloat16 --task denoise IN.png -o OUT.png

as subprocesses and prints the wall time and peak resident memory of each.

    python -m benchmarks.full_size [--work_dir outputs/full_size] [--max_steps 2]
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, ViTMAEConfig, ViTMAEForPreTraining

from lm4lv.modeling_lm4lv.hub_files import write_folder_atomically
from lm4lv.modeling_lm4lv.shipped import default_cache_dir, prepare_smollm2
from lm4lv.processing.data import bundled_corpus

from benchmarks.common import LLAMA2_7B, MAE_LARGE, machine


def write_random_llama(target: str, tokenizer_source: str):
    """LLaMA-2-7B-shaped causal LM with random bf16 weights and a real tokenizer, as a local safetensors folder."""
    if os.path.exists(os.path.join(target, "config.json")):
        return

    def write(folder):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
        config = LlamaConfig(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                             bos_token_id=tokenizer.bos_token_id, **LLAMA2_7B)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    write_folder_atomically(target, write)


def write_random_mae(target: str):
    """ViT-MAE-Large-shaped model with random weights (mask ratio 0), as a local safetensors folder."""
    if not os.path.exists(os.path.join(target, "config.json")):
        torch.manual_seed(0)
        write_folder_atomically(target, ViTMAEForPreTraining(ViTMAEConfig(**MAE_LARGE)).save_pretrained)


def run_measured(command: list[str]) -> dict:
    """Run a command; its wall time and peak resident memory (of that process alone)."""
    print("$ " + " ".join(command), flush=True)
    start = time.time()
    process = subprocess.Popen(command, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(command)}")
    return {"seconds": round(time.time() - start, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default="outputs/full_size")
    parser.add_argument("--max_steps", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=1)
    args = parser.parse_args(argv)
    llm, vision = os.path.join(args.work_dir, "llama-2-7b-shape"), os.path.join(args.work_dir, "vit-mae-large-shape")
    checkpoint, image = os.path.join(args.work_dir, "lm4lv"), os.path.join(args.work_dir, "input.png")

    start = time.time()
    write_random_llama(llm, prepare_smollm2(default_cache_dir()))
    write_random_mae(vision)
    side = MAE_LARGE["image_size"]
    bundled_corpus()["validation"][0]["image"].convert("RGB").resize((side, side)).save(image)
    results = {"write random base models": {"seconds": round(time.time() - start, 1)}}

    lm4lv = [sys.executable, "-m", "lm4lv.cli"]
    results["lm4lv train"] = run_measured([
        *lm4lv, "train", "--llm", llm, "--vision", vision, "--llm_dtype", "bfloat16", "--task", "denoise",
        "--max_steps", str(args.max_steps), "--save_steps", str(args.max_steps), "--logging_steps", "1",
        "--per_device_train_batch_size", str(args.batch_size), "--dataloader_num_workers", "0",
        "--output_dir", checkpoint,
    ])
    with open(os.path.join(checkpoint, f"checkpoint-{args.max_steps}", "trainer_state.json")) as handle:
        state = json.load(handle)
    results["lm4lv train"]["log"] = [entry for entry in state["log_history"] if "loss" in entry]
    results["lm4lv restore"] = run_measured([
        *lm4lv, "restore", "--model", checkpoint, "--llm_dtype", "bfloat16", "--task", "denoise", image,
        "-o", os.path.join(args.work_dir, "restored.png"),
    ])

    print(f"\n# Full-size check on {machine()}\n")
    print("| step | wall time | peak RSS |\n| --- | --- | --- |")
    for name, values in results.items():
        print(f"| {name} | {values['seconds']:.0f} s | {values.get('peak_rss_gib', '-')} GiB |")
    with open(os.path.join(args.work_dir, "full_size.json"), "w") as handle:
        json.dump({"machine": machine(), **results}, handle, indent=2)


if __name__ == "__main__":
    main()
