"""Training the vision module for unmasked reconstruction.

The released MAE decoders reconstruct poorly when nothing is masked (they were trained with a loss on masked patches
only). The paper fine-tunes the DECODER ONLY, encoder frozen, with L1 (`"MAE-L1"`) or L1 + 1.0 x LPIPS (`"MAE*"`).
The same loop also trains a small MAE from scratch for the offline default: masked pre-training (`mode="masked"`,
the MAE's own loss) and/or direct unmasked autoencoder training (`mode="autoencoder"`, encoder and decoder).
"""

import math

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lm4lv.metrics import psnr, ssim
from lm4lv.modeling_lm4lv.vision import image_normalisation, normalise, reconstruct_images, unnormalise

PROGRESS_EVERY = 25  # the progress bar shows the loss every this many steps (reading it waits for the device)

# the demo MAE's shape (`lm4lv mae-finetune --from_scratch` builds this shape at its own image and patch size)
DEMO_MAE_CONFIG = dict(
    image_size=32, patch_size=8, hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
    decoder_hidden_size=256, decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=1024,
)

MODES = ("decoder", "autoencoder", "masked")


def lpips_loss_fn(device):
    """The LPIPS (VGG) perceptual loss; a clear error when the package or its backbone weights are unavailable."""
    try:
        import lpips
    except Exception as error:  # ImportError, or torchvision failing to import against this torch build
        raise RuntimeError(
            f"LPIPS needs the optional `lpips` package and a working torchvision ({error}). Install "
            "`pip install .[lpips]` with a matching torch/torchvision pair, or train with lpips_weight=0 (MAE-L1)."
        ) from error
    try:
        return lpips.LPIPS(net="vgg", verbose=False).to(device).eval().requires_grad_(False)
    except Exception as error:
        raise RuntimeError(
            f"LPIPS backbone weights (VGG16 from torchvision) are not available offline ({error}). Put them in the "
            "torch hub cache or train with lpips_weight=0 (MAE-L1)."
        ) from error


def set_trainable(vision_model, mode: str):
    """Freeze what `mode` keeps fixed: the encoder for `decoder`, nothing otherwise."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "masked" and not hasattr(vision_model.config, "mask_ratio"):
        raise ValueError("mode='masked' (MAE pre-training) needs a ViT-MAE vision module")
    vision_model.requires_grad_(True)
    if mode == "decoder":
        for module in vision_model.encoder_modules():
            module.requires_grad_(False)


def reconstruction_loss(vision_model, images, mode, mean, std, lpips_fn=None, lpips_weight=0.0):
    """L1 (+ LPIPS) of the unmasked reconstruction in [0, 1] space, or the MAE's own masked loss."""
    pixel_values = normalise(images, mean, std)
    if mode == "masked":
        return vision_model(pixel_values=pixel_values).loss
    reconstruction = unnormalise(vision_model.reconstruct(pixel_values), mean, std)
    loss = torch.nn.functional.l1_loss(reconstruction, images)
    if lpips_weight:
        loss = loss + lpips_weight * lpips_fn(reconstruction * 2 - 1, images * 2 - 1).mean()
    return loss


def warmup_cosine(step: int, learning_rate: float, warmup_steps: int, steps: int) -> float:
    """The learning rate at `step`: linear warmup, then cosine decay over the remaining steps."""
    if step < warmup_steps:
        return learning_rate * (step + 1) / warmup_steps
    fraction = (step - warmup_steps) / max(1, steps - warmup_steps)
    return learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction)))


def train_vision_module(
    vision_model,
    images: torch.Tensor,
    mode: str = "decoder",
    steps: int = 1000,
    batch_size: int = 64,
    learning_rate: float = 1.6e-3,
    warmup_steps: int = 100,
    lpips_weight: float = 0.0,
    mask_ratio: float = 0.75,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    r"""
    Train (part of) a vision module for reconstruction; returns the loss of every step.

    Args:
        vision_model: The vision module (ViT-MAE or diffusers autoencoder) to train in place.
        images (`torch.Tensor` of shape `(N, 3, H, W)` in [0, 1]): Training images at the MAE's input size.
        mode (`str`): `"decoder"` (encoder frozen, L1 [+ LPIPS]; the paper's fine-tune), `"autoencoder"` (both
            trained unmasked) or `"masked"` (classic MAE pre-training at `mask_ratio`).
        steps, batch_size, learning_rate, warmup_steps: AdamW (betas 0.9/0.95, the authors' values) with linear
            warmup then cosine decay over `steps` (a fixed count: wall time never decides how much a model trains).
        lpips_weight (`float`): Weight of LPIPS in the loss (1.0 gives the paper's MAE*); needs the `lpips` extra.
    """
    set_trainable(vision_model, mode)
    mean, std = image_normalisation(vision_model.config)
    is_mae = hasattr(vision_model.config, "mask_ratio")
    device = next(vision_model.parameters()).device
    lpips_fn = lpips_loss_fn(device) if lpips_weight else None
    parameters = [p for p in vision_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, betas=(0.9, 0.95), weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(images, batch_size=batch_size, shuffle=True, drop_last=len(images) > batch_size,
                        generator=generator)
    if is_mae:
        vision_model.config.mask_ratio = mask_ratio if mode == "masked" else 0.0
    vision_model.train()
    try:
        losses = optimise(loader, optimizer, parameters, steps, progress, f"({mode})",
                          lambda step: warmup_cosine(step, learning_rate, warmup_steps, steps),
                          lambda batch: reconstruction_loss(vision_model, batch.to(device), mode, mean, std, lpips_fn,
                                                            lpips_weight))
    finally:
        if is_mae:
            vision_model.config.mask_ratio = 0.0
        vision_model.eval()
        vision_model.requires_grad_(False)
    return losses


def optimise(loader, optimizer, parameters, steps: int, progress: bool, label: str, learning_rate_at,
             loss_of) -> list[float]:
    """`steps` optimizer steps over `loader` (repeated as needed) at `learning_rate_at(step)` on `loss_of(batch)`,
    clipping the gradients of `parameters` at 1.0; returns each step's loss. The losses stay on the device while
    training (the progress bar reads one every `PROGRESS_EVERY` steps): a step never waits for the host."""
    losses, step = [], 0
    with tqdm(total=steps, desc=f"Vision module training {label}", disable=not progress) as bar:
        while step < steps:
            for batch in loader:
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate_at(step)
                loss = loss_of(batch)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                optimizer.step()
                losses.append(loss.detach())
                step += 1
                bar.update(1)
                if progress and (step % PROGRESS_EVERY == 0 or step == steps):
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                if step >= steps:
                    break
    return torch.stack(losses).tolist() if losses else []


@torch.no_grad()
def reconstruction_quality(vision_model, images: torch.Tensor, batch_size: int = 64, crop_border: int = 4) -> dict:
    """Mean PSNR/SSIM (BasicSR conventions) of the unmasked reconstruction of `images` (in [0, 1]): the identity
    check of a vision module. The PSNR is averaged over the images not reconstructed exactly (whose PSNR is
    infinite); `"identical"` counts those."""
    device = next(vision_model.parameters()).device
    scores = {"psnr": [], "ssim": []}
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        reconstruction = reconstruct_images(vision_model, batch)
        for output, target in zip(reconstruction.cpu(), batch.cpu()):
            scores["psnr"].append(psnr(output, target, crop_border=crop_border))
            scores["ssim"].append(ssim(output, target, crop_border=crop_border))
    finite = [value for value in scores["psnr"] if value != float("inf")]
    return {"psnr": sum(finite) / len(finite) if finite else float("inf"),
            "ssim": sum(scores["ssim"]) / len(scores["ssim"]), "identical": len(scores["psnr"]) - len(finite)}


__all__ = ["train_vision_module", "reconstruction_quality", "MODES"]
