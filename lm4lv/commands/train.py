"""Train LM4LV (adapters + task tokens, LLM and vision module frozen) with `transformers.Trainer`.

    lm4lv train --llm PATH_OR_ID --vision PATH_OR_ID --task denoise --output_dir out
    lm4lv train config.yaml                                  # the same arguments from a JSON/YAML file
    accelerate launch --config_file examples/accelerate/ddp_4gpu_bf16.yaml examples/run_restoration.py ...

Defaults follow the paper's recipe (AdamW betas 0.9/0.95, lr 3e-4, weight decay 0, 200 warmup steps then cosine
decay, gradient clipping 1.0). `--task denoise,deblur` trains one model on a mixture of tasks (shared adapters, one
set of task tokens per task).

`--method` swaps the frozen LLM for one of the paper's ablations, trained and saved the same way: `random_init_llm`
(same architecture, random weights, written next to the checkpoint), `vit_llm` (one bidirectional, position-free pass
instead of autoregressive generation), or an expert that replaces the LLM: `linear`, `mlp`, `transformer`.
`--lora_r 8` adds LoRA adapters to the LLM (an extension; off = the paper).
"""

from lm4lv.trainers.training import parse_arguments, train


def main(argv=None):
    train(*parse_arguments(argv))
