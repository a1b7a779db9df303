"""Does initialising the task tokens from a text (peft's PromptTuningInit.TEXT) train faster than zeros (the
authors' choice)? Trains LM4LV twice on the offline default (SmolLM2 + the demo's MAE, denoising), identical except
for the task-token initialisation, and prints both loss curves side by side plus held-out PSNR/SSIM of each.

    python -m benchmarks.task_token_init --steps 300
"""

import argparse
import os
import platform

import torch

from lm4lv.modeling_lm4lv.shipped import default_cache_dir, prepare_smollm2
from lm4lv.processing.data import bundled_corpus, materialize_eval_set
from lm4lv.research.offline_default import prepare_mae
from lm4lv.trainers import LM4LVTrainingArguments
from lm4lv.trainers.evaluation import evaluate_restoration, restore
from lm4lv.trainers.training import DataArguments, ModelArguments, train

INIT_TEXT = "Remove the noise from this image."


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval_samples", type=int, default=32)
    parser.add_argument("--output_dir", default="outputs/task_token_init")
    args = parser.parse_args(argv)
    cache_dir = default_cache_dir()
    corpus = bundled_corpus()
    llm = prepare_smollm2(cache_dir)
    vision, _ = prepare_mae(cache_dir, corpus["validation"])
    eval_set = materialize_eval_set(corpus["validation"], ["denoise"], 32, os.path.join(args.output_dir, "eval_set"),
                                    limit=args.eval_samples)
    curves, scores = {}, {}
    for init in ("zeros", "text"):
        training_args = LM4LVTrainingArguments(
            output_dir=os.path.join(args.output_dir, init), per_device_train_batch_size=4, learning_rate=1e-3,
            warmup_steps=20, max_steps=args.steps, logging_steps=25, save_strategy="no", use_cpu=True, seed=0,
            report_to=[], disable_tqdm=True,
        )
        model_args = ModelArguments(llm=llm, vision=vision, task_token_init=init,
                                    task_token_init_text=INIT_TEXT if init == "text" else None)
        trainer = train(model_args, DataArguments(task="denoise"), training_args)
        curves[init] = {e["step"]: e["vision_loss"] for e in trainer.state.log_history if "vision_loss" in e}
        model, processor = trainer.model.eval(), trainer.processing_class
        results, _ = evaluate_restoration(eval_set, {init: lambda degraded, task: restore(model, processor, degraded,
                                                                                           task)})
        scores[init] = results["denoise"][init]
    print(f"\nTask-token init on {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}; "
          f"SmolLM2-135M + demo MAE, denoise, batch 4, lr 1e-3, text {INIT_TEXT!r}")
    print("| step | vision loss, zeros | vision loss, text |\n| --- | --- | --- |")
    for step in sorted(curves["zeros"]):
        print(f"| {step} | {curves['zeros'][step]:.4f} | {curves['text'].get(step, float('nan')):.4f} |")
    for init, score in scores.items():
        print(f"{init}: held-out PSNR {score['psnr']['mean']:.2f} dB, SSIM {score['ssim']['mean']:.4f} "
              f"({score['psnr']['count']} crops)")


if __name__ == "__main__":
    main()
