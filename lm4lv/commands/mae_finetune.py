"""Train a vision module for unmasked reconstruction: fine-tune only the decoder of a pretrained MAE (the paper's
MAE-L1, or MAE* with `--lpips_weight 1.0`), train a fresh ViT-MAE decoder on a timm ViT encoder, or build a small MAE
from scratch for the offline default.

    lm4lv mae-finetune --vision facebook/vit-mae-large --mode decoder --output_dir mae-l1
    lm4lv mae-finetune --timm_model vit_base_patch16_224.mae --timm_checkpoint mae.safetensors \
        --image_size 224 --mode decoder --output_dir timm-mae
    lm4lv mae-finetune --from_scratch --mode masked --then_decoder --output_dir mae-small

Prints reconstruction PSNR/SSIM on the validation split before and after.
"""

import argparse
import json
import os

import torch
from transformers import ViTMAEConfig

from lm4lv.modeling_lm4lv import MAEVisionModule, TimmVisionModule, load_vision_module
from lm4lv.processing.data import load_image_dataset
from lm4lv.processing.images import to_tensor
from lm4lv.trainers.mae_training import DEMO_MAE_CONFIG, MODES, reconstruction_quality, train_vision_module


def load_images(dataset: str | None, split: str, size: int, limit: int | None) -> torch.Tensor:
    images = load_image_dataset(dataset, split)
    count = len(images) if limit is None else min(limit, len(images))
    return torch.stack([to_tensor(images[i]["image"], size) for i in range(count)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vision", default=None, help="Pretrained vision module (ViT-MAE Hub id or any folder).")
    parser.add_argument("--timm_model", default=None, help="timm ViT architecture for the encoder (needs timm).")
    parser.add_argument("--timm_checkpoint", default=None, help="Local weights of --timm_model.")
    parser.add_argument("--timm_kwargs", type=json.loads, default=None,
                        help='JSON of extra timm.create_model arguments, e.g. \'{"embed_dim": 384, "depth": 12}\'.')
    parser.add_argument("--timm_decoder_layers", type=int, default=8, help="Decoder depth on a timm encoder.")
    parser.add_argument("--timm_decoder_hidden_size", type=int, default=512, help="Decoder width on a timm encoder.")
    parser.add_argument("--from_scratch", action="store_true", help="Start from a small random ViT-MAE.")
    parser.add_argument("--image_size", type=int, default=32, help="Image size of a from-scratch MAE or timm ViT.")
    parser.add_argument("--patch_size", type=int, default=8, help="Patch size of a from-scratch MAE.")
    parser.add_argument("--mode", choices=MODES, default="decoder")
    parser.add_argument("--then_decoder", action="store_true", help="After --mode masked, fine-tune the decoder.")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1.6e-3)
    parser.add_argument("--warmup_steps", type=int, default=100)
    parser.add_argument("--lpips_weight", type=float, default=0.0, help="1.0 gives the paper's MAE* (needs lpips).")
    parser.add_argument("--dataset", default=None, help="Image dataset (default: the bundled corpus).")
    parser.add_argument("--max_images", type=int, default=None)
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)

    if sum([args.from_scratch, bool(args.vision), bool(args.timm_model)]) != 1:
        parser.error("give exactly one of --vision, --timm_model and --from_scratch")
    if args.timm_model:
        model = TimmVisionModule.from_timm(
            args.timm_model, args.timm_checkpoint, image_size=args.image_size, timm_kwargs=args.timm_kwargs,
            decoder_hidden_size=args.timm_decoder_hidden_size, decoder_num_hidden_layers=args.timm_decoder_layers,
            decoder_intermediate_size=4 * args.timm_decoder_hidden_size,
            decoder_num_attention_heads=max(1, args.timm_decoder_hidden_size // 32),
        )
    elif args.from_scratch:
        model = MAEVisionModule(ViTMAEConfig(
            **DEMO_MAE_CONFIG | {"image_size": args.image_size, "patch_size": args.patch_size}))
    else:
        model = load_vision_module(args.vision)
    size = model.image_size[0]
    train_images = load_images(args.dataset, "train", size, args.max_images)
    validation_images = load_images(args.dataset, "validation", size, args.max_images)
    before = reconstruction_quality(model, validation_images)
    print(f"before: PSNR {before['psnr']:.2f} dB, SSIM {before['ssim']:.4f}")
    stages = [args.mode] + (["decoder"] if args.then_decoder else [])
    for mode in stages:
        train_vision_module(model, train_images, mode=mode, steps=args.steps, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
                            lpips_weight=args.lpips_weight)
    after = reconstruction_quality(model, validation_images)
    print(f"after:  PSNR {after['psnr']:.2f} dB, SSIM {after['ssim']:.4f}")
    model.save_pretrained(args.output_dir)
    with open(os.path.join(args.output_dir, "reconstruction.json"), "w") as handle:
        json.dump({"stages": stages, "before": before, "after": after}, handle, indent=2)


if __name__ == "__main__":
    main()
