"""The paper's comparisons in one command: methods x tasks, trained and scored the same way, one table.

    lm4lv ablate                                   # offline default: SmolLM2 + the demo's MAE, 3 tasks, 8 methods
    lm4lv ablate --methods lm4lv,linear --tasks denoise --max_steps 500
    lm4lv ablate --llm meta-llama/Llama-2-7b-chat-hf --vision facebook/vit-mae-large ...

Every method is trained by `lm4lv.trainers.training.train` (one model per task, as in the paper; same data, steps,
batch and learning rate for all; the LM4LV-based ones with the package's recipe, `--recipe paper` for the paper's)
and scored on the same fixed held-out evaluation set per task with PSNR/SSIM.
Methods (`--methods`, comma-separated keys):

    lm4lv            LM4LV: frozen LLM, adapters + task tokens (the paper)
    linear           Linear only: one linear map from degraded to clean features, no LLM
    mlp              2-layer MLP expert, about LM4LV's trainable-parameter count, no LLM
    transformer      1-layer Transformer expert, about LM4LV's trainable-parameter count, no LLM
    random_init_llm  LM4LV with a random-init LLM of the same architecture
    vit_llm          "ViT-LLM": one pass, no causal mask, no positions, outputs read at the input positions
    lora             LM4LV with LoRA r=8 on the LLM (an extension, not in the paper)
    autoencoder_kl   LM4LV with a diffusers AutoencoderKL as the vision module instead of the MAE
    lm4lv_multitask  ONE LM4LV model for all --tasks (task tokens per task), trained for their steps together
                     (beyond the paper; not run by default)

The sample-efficiency lever study (README, "Sample-efficiency levers"; always with their own options): lm4lv with
`--recipe paper` is its baseline; embedding_init, no_delimiter_loss and subspace_nodelim (both);
the subspace_nodelim_* methods (ridge_out_adapter, teacher_forced_noise, pixel_loss, identity_curriculum,
constant_lr, batch_8, bf16_llm) add one lever to both; recipe_identity_curriculum, recipe_constant_lr and
recipe_bf16_llm add one to the package's recipe.

Writes `ablation.md` and `ablation.json` (PSNR/SSIM per task, trainable parameters, training time) and one
`grid_<task>.png` per task (degraded / MAE-r / each method / clean) into `--output_dir`.
"""

import argparse

from lm4lv.commands.arguments import positive_int
from lm4lv.modeling_lm4lv.shipped import default_cache_dir, prepare_smollm2
from lm4lv.processing.data import bundled_corpus
from lm4lv.research.ablation import ABLATION_METHODS, PAPER_METHODS, run_ablation
from lm4lv.research.offline_default import (
    RECIPE,
    add_cpu_kernels_argument,
    apply_cpu_kernels,
    prepare_autoencoder_kl,
    prepare_mae,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default=None, help="Causal LM (default: the offline SmolLM2-135M-Instruct).")
    parser.add_argument("--vision", default=None, help="ViT-MAE (default: the demo's small MAE, trained if needed).")
    parser.add_argument("--autoencoder_kl", default=None,
                        help="DiffusersVisionModule folder for autoencoder_kl (default: trained offline if needed).")
    parser.add_argument("--methods", default=",".join(PAPER_METHODS),
                        help=f"Comma-separated, from {list(ABLATION_METHODS)}.")
    parser.add_argument("--tasks", default="identity,denoise,rotate", help="Comma-separated tasks.")
    parser.add_argument("--max_steps", type=positive_int, default=200, help="Training steps per method and task.")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--batch_size", type=positive_int, default=4)
    parser.add_argument("--eval_samples", type=positive_int, default=32, help="Held-out crops per task.")
    parser.add_argument("--dataset", default=None, help="Images (datasets name/path or folder); default: bundled.")
    parser.add_argument("--recipe", choices=["default", "paper"], default="default",
                        help="LM4LV options of the paper's methods: the package's recipe (offline_default.RECIPE, "
                             "picked by the lever study) or the paper's plain one.")
    parser.add_argument("--seed", type=int, default=0,
                        help="Training seed (the trainables' initialisation, the data order and the random draws "
                             "of training steps, such as teacher-forced input noise); the training degradations "
                             "(seeded by image, epoch and a fixed degradation seed) and the held-out crops stay the "
                             "same.")
    parser.add_argument("--output_dir", default="outputs/ablation")
    parser.add_argument("--cache_dir", default=None, help="Where the offline default's models are cached.")
    add_cpu_kernels_argument(parser)
    args = parser.parse_args(argv)
    apply_cpu_kernels(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    llm, vision, autoencoder_kl = args.llm, args.vision, args.autoencoder_kl
    if llm is None or vision is None or ("autoencoder_kl" in methods and autoencoder_kl is None):
        cache_dir = args.cache_dir or default_cache_dir()
        corpus = bundled_corpus()
        llm = llm or prepare_smollm2(cache_dir)
        vision = vision or prepare_mae(cache_dir, corpus["validation"])[0]
        if "autoencoder_kl" in methods and autoencoder_kl is None:
            autoencoder_kl = prepare_autoencoder_kl(cache_dir, corpus["train"], corpus["validation"])[0]
    run_ablation(llm, vision, methods, [t.strip() for t in args.tasks.split(",") if t.strip()], args.output_dir,
                 args.max_steps, args.learning_rate, args.batch_size, args.eval_samples, args.dataset, autoencoder_kl,
                 seed=args.seed, recipe=RECIPE if args.recipe == "default" else None)


if __name__ == "__main__":
    main()
