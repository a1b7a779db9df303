"""Vision modules of LM4LV.

Every vision module offers the same small interface:

- `encode(pixel_values) -> features` of shape `(batch, num_visual_tokens, vision_hidden_size)`;
- `decode(features) -> pixel_values` of shape `(batch, 3, height, width)`, in the space of the image processor's
  normalisation (the same space as the input `pixel_values`).

The default is a Masked Autoencoder used WITHOUT masking: every patch is kept, in order, so the features are the
CLS token plus one token per patch after the encoder's final LayerNorm. Alternatives: a diffusers autoencoder
(`AutoencoderKL`, `VQModel`; one token per latent position) and a timm ViT encoder with a ViT-MAE decoder.
`vision_module_from_config` and `load_vision_module` pick the class from the config's `model_type`.
"""

import torch
from transformers import AutoConfig, PreTrainedModel, ViTMAEConfig, ViTMAEForPreTraining
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.models.vit_mae.modeling_vit_mae import ViTMAEDecoder

from .configuration_lm4lv import DiffusersAutoencoderConfig, TimmVisionConfig, image_size_pair
from .hub_files import check_safetensors_only


def image_normalisation(vision_config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """`(mean, std)` of a vision module's input space: the config's `image_mean`/`image_std`, else ImageNet's (what a
    ViT-MAE is trained with)."""
    mean = getattr(vision_config, "image_mean", None) or IMAGENET_DEFAULT_MEAN
    std = getattr(vision_config, "image_std", None) or IMAGENET_DEFAULT_STD
    return tuple(mean), tuple(std)


def _channel_view(values, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """`(B, C, H, W)` images in [0, 1] -> the vision module's normalised input space."""
    return (images - _channel_view(mean, images)) / _channel_view(std, images)


def unnormalise(pixel_values: torch.Tensor, mean, std) -> torch.Tensor:
    """The vision module's normalised space -> images in [0, 1] (not clamped, so gradients flow)."""
    return pixel_values * _channel_view(std, pixel_values) + _channel_view(mean, pixel_values)


@torch.no_grad()
def reconstruct_images(vision_model, images: torch.Tensor) -> torch.Tensor:
    """THE MAE-r baseline: `(B, 3, H, W)` images in [0, 1] encoded and decoded by the vision module with nothing in
    between, back in [0, 1] (clamped), in its own normalisation (`image_normalisation` of its config)."""
    mean, std = image_normalisation(vision_model.config)
    return unnormalise(vision_model.reconstruct(normalise(images.float(), mean, std)), mean, std).clamp(0, 1)


def check_image_shape(pixel_values: torch.Tensor, num_channels: int, image_size: tuple[int, int]):
    """Raise a `ValueError` unless `pixel_values` is `(batch, num_channels, *image_size)`."""
    expected = (num_channels, *image_size)
    if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
        raise ValueError(
            f"pixel_values must have shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) to match the "
            f"vision config, got {tuple(pixel_values.shape)}"
        )


class VisionModuleMixin:
    """What every vision module shares: its input size and the encode-then-decode baseline."""

    @property
    def image_size(self) -> tuple[int, int]:
        return image_size_pair(self.config.image_size)

    def reconstruct(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode then decode with no processing in between: the MAE-r baseline (of any vision module)."""
        return self.decode(self.encode(pixel_values))


class MAEVisionModule(VisionModuleMixin, ViTMAEForPreTraining):
    """A ViT-MAE (encoder + decoder) used as an autoencoder: `encode` keeps all patches, `decode` reconstructs.

    It is a `ViTMAEForPreTraining`, so any ViT-MAE checkpoint loads into it with `from_pretrained` and its weights
    keep their usual names (`vit.*`, `decoder.*`). Its own pretraining loss is not used (it is NaN at mask ratio 0).
    """

    config_class = ViTMAEConfig

    def __init__(self, config: ViTMAEConfig):
        config.mask_ratio = 0.0
        super().__init__(config)

    def _identity_order(self, batch_size: int, device) -> torch.Tensor:
        num_patches = self.vit.embeddings.patch_embeddings.num_patches
        return torch.arange(num_patches, device=device, dtype=torch.float32).expand(batch_size, num_patches)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode normalised images `(B, C, H, W)` into `(B, 1 + num_patches, hidden_size)` features."""
        check_image_shape(pixel_values, self.config.num_channels, self.image_size)
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
                "(`lm4lv mae-finetune --mode decoder`) and set norm_pix_loss=False."
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

    def encoder_modules(self) -> list[torch.nn.Module]:
        """The modules that produce the features (frozen by decoder-only fine-tuning)."""
        return [self.vit]


class DiffusersVisionModule(VisionModuleMixin, PreTrainedModel):
    """A diffusers autoencoder (`AutoencoderKL` or `VQModel`) behind the vision-module interface: the latent at each
    spatial position (row-major) is one visual token. Saved and loaded like any transformers model (safetensors);
    the diffusers model is the `autoencoder` submodule. Needs `pip install diffusers` (imported on first use).
    """

    config_class = DiffusersAutoencoderConfig
    base_model_prefix = "autoencoder"
    main_input_name = "pixel_values"

    def __init__(self, config: DiffusersAutoencoderConfig):
        super().__init__(config)
        try:
            import diffusers
        except ImportError as error:
            raise ImportError("A diffusers vision module needs diffusers: pip install diffusers") from error
        autoencoder_class = getattr(diffusers, config.autoencoder_class)
        self.autoencoder = autoencoder_class.from_config(config.autoencoder_config)
        self.post_init()

    def _init_weights(self, module):
        """Keep the diffusers modules' own initialisation."""

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode normalised images `(B, C, H, W)` into `(B, latent positions, latent channels)` features."""
        check_image_shape(pixel_values, self.config.num_channels, self.image_size)
        pixel_values = pixel_values.to(next(self.autoencoder.parameters()).dtype)
        encoded = self.autoencoder.encode(pixel_values)
        latents = encoded.latent_dist.mode() if self.config.autoencoder_class == "AutoencoderKL" else encoded.latents
        return latents.flatten(2).transpose(1, 2)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Decode `(B, latent positions, latent channels)` features into normalised images `(B, C, H, W)`."""
        side = self.config.image_size // self.config.patch_size
        expected = (side * side, self.config.hidden_size)
        if features.dim() != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(
                f"features must have shape (batch, {expected[0]}, {expected[1]}), got {tuple(features.shape)}"
            )
        latents = features.transpose(1, 2).reshape(features.shape[0], expected[1], side, side)
        latents = latents.to(next(self.autoencoder.parameters()).dtype)
        return self.autoencoder.decode(latents).sample

    def encoder_modules(self) -> list[torch.nn.Module]:
        """The modules that produce the features (frozen by decoder-only fine-tuning)."""
        return [m for m in (self.autoencoder.encoder, getattr(self.autoencoder, "quant_conv", None)) if m is not None]


def import_timm():
    """timm, or a clear error: it is an optional extra, and it imports torchvision, which must match torch."""
    try:
        import timm
    except Exception as error:  # ImportError, or torchvision failing to import against this torch build
        raise ImportError(
            f"A timm vision module needs timm and a torchvision that matches torch ({error}): pip install "
            "'lm4lv[timm]' with a matching torch/torchvision pair"
        ) from error
    return timm


class TimmVisionModule(VisionModuleMixin, PreTrainedModel):
    """A timm Vision Transformer as the encoder (`encoder`, features = CLS + patch tokens after its final norm) and
    a ViT-MAE decoder (`decoder`) that reconstructs pixels from them. Build it around pretrained timm weights with
    [`from_timm`], then train the decoder with decoder-only fine-tuning (`lm4lv mae-finetune --mode decoder`)."""

    config_class = TimmVisionConfig
    main_input_name = "pixel_values"

    def __init__(self, config: TimmVisionConfig):
        super().__init__(config)
        timm = import_timm()
        self.encoder = timm.create_model(config.timm_model_name, pretrained=False, num_classes=0,
                                         img_size=config.image_size, **config.timm_kwargs)
        found = (self.encoder.num_prefix_tokens, self.encoder.embed_dim, self.encoder.patch_embed.patch_size[0])
        if found != (1, config.hidden_size, config.patch_size):
            raise ValueError(
                f"timm model {config.timm_model_name} has (prefix tokens, width, patch size) = {found}, the config "
                f"says (1, {config.hidden_size}, {config.patch_size}); LM4LV needs exactly one CLS token"
            )
        self.decoder = ViTMAEDecoder(config.decoder_config(), num_patches=self.num_patches)
        self.post_init()

    def _init_weights(self, module):
        """Keep timm's and the ViT-MAE decoder's own initialisation (fixed sin-cos decoder positions)."""

    @classmethod
    def from_timm(cls, timm_model_name: str, checkpoint_path: str | None = None, image_size: int = 224,
                  timm_kwargs: dict | None = None, **decoder_kwargs) -> "TimmVisionModule":
        r"""
        Wrap a timm ViT, loading its weights from a local `checkpoint_path` (safetensors or a timm checkpoint),
        with a freshly initialised decoder (`decoder_hidden_size=...` etc. size it).
        """
        timm = import_timm()
        probe = timm.create_model(timm_model_name, pretrained=False, num_classes=0, img_size=image_size,
                                  **(timm_kwargs or {}))
        config = TimmVisionConfig(
            timm_model_name=timm_model_name, timm_kwargs=timm_kwargs, image_size=image_size,
            patch_size=probe.patch_embed.patch_size[0], hidden_size=probe.embed_dim,
            num_channels=probe.patch_embed.proj.in_channels, **decoder_kwargs,
        )
        model = cls(config)
        if checkpoint_path:
            timm.models.load_checkpoint(model.encoder, checkpoint_path, strict=False)
        return model

    @property
    def num_patches(self) -> int:
        return (self.config.image_size // self.config.patch_size) ** 2

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode normalised images `(B, C, H, W)` into `(B, 1 + num_patches, hidden_size)` features."""
        check_image_shape(pixel_values, self.config.num_channels, self.image_size)
        return self.encoder.forward_features(pixel_values.to(self.encoder.patch_embed.proj.weight.dtype))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Decode `(B, 1 + num_patches, hidden_size)` features into normalised images `(B, C, H, W)`."""
        if features.dim() != 3 or features.shape[1] != self.num_patches + 1:
            raise ValueError(f"features must have shape (batch, {self.num_patches + 1}, hidden), got "
                             f"{tuple(features.shape)}")
        batch, patch, channels = features.shape[0], self.config.patch_size, self.config.num_channels
        ids_restore = torch.arange(self.num_patches, device=features.device).expand(batch, -1)
        patches = self.decoder(features.to(self.decoder.decoder_embed.weight.dtype), ids_restore).logits
        side = self.config.image_size // patch  # ViT-MAE's patch layout: (row, column, p, q, channel)
        patches = patches.reshape(batch, side, side, patch, patch, channels)
        return torch.einsum("nhwpqc->nchpwq", patches).reshape(batch, channels, side * patch, side * patch)

    def encoder_modules(self) -> list[torch.nn.Module]:
        """The modules that produce the features (frozen by decoder-only fine-tuning)."""
        return [self.encoder]


VISION_MODULE_CLASSES = {
    "vit_mae": MAEVisionModule,
    "lm4lv_diffusers_autoencoder": DiffusersVisionModule,
    "lm4lv_timm_vit": TimmVisionModule,
}


def vision_module_class(model_type: str) -> type[PreTrainedModel]:
    """The vision-module class for a vision config's `model_type`, with a clear error for others."""
    if model_type not in VISION_MODULE_CLASSES:
        raise ValueError(
            f"No LM4LV vision module for model_type {model_type!r}; supported: {sorted(VISION_MODULE_CLASSES)}"
        )
    return VISION_MODULE_CLASSES[model_type]


def vision_module_from_config(config) -> PreTrainedModel:
    """A vision module with random weights for `config`."""
    return vision_module_class(config.model_type)(config)


def load_vision_module(name_or_path: str, **kwargs) -> PreTrainedModel:
    """Load a pretrained vision module (ViT-MAE or diffusers autoencoder folder written by this package), from
    safetensors only."""
    check_safetensors_only(name_or_path, "vision module")
    config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    return vision_module_class(config.model_type).from_pretrained(name_or_path, config=config, use_safetensors=True,
                                                                  **kwargs)


__all__ = [
    "image_normalisation",
    "normalise",
    "unnormalise",
    "MAEVisionModule",
    "DiffusersVisionModule",
    "TimmVisionModule",
    "vision_module_from_config",
    "load_vision_module",
]


def check_pixel_values(pixel_values: torch.Tensor):
    """Refuse integer tensors (raw uint8 pixels, not the processor's normalised floats) and NaN/inf pixels, which
    would silently turn every output into NaN."""
    if not pixel_values.is_floating_point():
        raise ValueError(
            f"pixel_values must be normalised float images from LM4LVProcessor, got a {pixel_values.dtype} tensor"
        )
    if not torch.isfinite(pixel_values).all():
        raise ValueError("pixel_values contain NaN or inf")


class VisionFeaturesMixin:
    """Features in and images out through a model's frozen `vision_model`: what LM4LV and every baseline share."""

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor, check_inputs: bool = True) -> torch.Tensor:
        """Vision features `(batch, num_visual_tokens, vision_hidden_size)` of normalised images, in float32 (with
        `check_inputs`, non-float and non-finite pixels are refused first)."""
        if check_inputs:
            check_pixel_values(pixel_values)
        return self.vision_model.encode(pixel_values).float()

    def encode_input_and_target(self, pixel_values, target_pixel_values, check_inputs: bool = True) -> tuple:
        """`(input features, target features)` of the degraded and clean images, with ONE vision pass when both are
        given; either is `None` when its images are."""
        if pixel_values is not None and target_pixel_values is not None:
            both = self.encode_images(torch.cat([pixel_values, target_pixel_values]), check_inputs)
            return tuple(both.split(pixel_values.shape[0]))
        return (
            None if pixel_values is None else self.encode_images(pixel_values, check_inputs),
            None if target_pixel_values is None else self.encode_images(target_pixel_values, check_inputs),
        )

    @torch.no_grad()
    def decode_features(self, features: torch.Tensor) -> torch.Tensor:
        """Images (normalised like the processor's inputs) reconstructed by the vision decoder from features."""
        return self.vision_model.decode(features).float()
