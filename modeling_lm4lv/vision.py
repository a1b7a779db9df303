"""Vision modules of LM4LV.

Every vision module offers the same small interface:

- `encode(pixel_values) -> features` of shape `(batch, num_visual_tokens, vision_hidden_size)`;
- `decode(features) -> pixel_values` of shape `(batch, 3, height, width)`, in the space of the image processor's
  normalisation (the same space as the input `pixel_values`).

The default is a Masked Autoencoder used WITHOUT masking: every patch is kept, in order, so the features are the
CLS token plus one token per patch after the encoder's final LayerNorm.
"""

import torch
from transformers import ViTMAEConfig, ViTMAEForPreTraining


class MAEVisionModule(ViTMAEForPreTraining):
    """A ViT-MAE (encoder + decoder) used as an autoencoder: `encode` keeps all patches, `decode` reconstructs.

    It is a `ViTMAEForPreTraining`, so any ViT-MAE checkpoint loads into it with `from_pretrained` and its weights
    keep their usual names (`vit.*`, `decoder.*`). Its own pretraining loss is not used (it is NaN at mask ratio 0).
    """

    config_class = ViTMAEConfig

    def __init__(self, config: ViTMAEConfig):
        config.mask_ratio = 0.0
        super().__init__(config)

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.config.image_size
        return tuple(size) if isinstance(size, (list, tuple)) else (size, size)

    def _identity_order(self, batch_size: int, device) -> torch.Tensor:
        num_patches = self.vit.embeddings.patch_embeddings.num_patches
        return torch.arange(num_patches, device=device, dtype=torch.float32).expand(batch_size, num_patches)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode normalised images `(B, C, H, W)` into `(B, 1 + num_patches, hidden_size)` features."""
        expected = (self.config.num_channels, *self.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) to match the "
                f"vision config, got {tuple(pixel_values.shape)}"
            )
        if self.config.mask_ratio != 0:
            raise ValueError(f"vision_config.mask_ratio must be 0 for LM4LV, got {self.config.mask_ratio}")
        noise = self._identity_order(pixel_values.shape[0], pixel_values.device)
        pixel_values = pixel_values.to(self.vit.embeddings.patch_embeddings.projection.weight.dtype)
        return self.vit(pixel_values=pixel_values, noise=noise).last_hidden_state

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Decode `(B, 1 + num_patches, hidden_size)` features into normalised images `(B, C, H, W)`."""
        if self.config.norm_pix_loss:
            raise ValueError(
                "This MAE decoder was trained with norm_pix_loss=True and predicts per-patch normalised pixels, "
                "which cannot be turned back into an image. Fine-tune its decoder for unmasked reconstruction "
                "(examples/run_mae_finetune.py) and set norm_pix_loss=False."
            )
        num_patches = self.vit.embeddings.patch_embeddings.num_patches
        if features.dim() != 3 or features.shape[1] != num_patches + 1:
            raise ValueError(
                f"features must have shape (batch, {num_patches + 1}, hidden), got {tuple(features.shape)}"
            )
        ids_restore = torch.arange(num_patches, device=features.device).expand(features.shape[0], num_patches)
        features = features.to(self.decoder.decoder_embed.weight.dtype)
        patches = self.decoder(features, ids_restore).logits
        return self.unpatchify(patches, self.image_size)

    def reconstruct(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode then decode with no processing in between: the MAE-r baseline."""
        return self.decode(self.encode(pixel_values))


__all__ = ["MAEVisionModule"]
