"""The package's image policy: how any image file or PIL image becomes the RGB image LM4LV works on.

`load_rgb_image` (used by the datasets, the pipeline, the app and the command line):

- EXIF orientation is applied (`ImageOps.exif_transpose`);
- grayscale (`L`, `1`), palette (`P`) and CMYK images are converted to RGB (gray is replicated to three channels);
- 16-bit and 32-bit images (`I;16`, `I`, `F`) are scaled to 8 bits by their full type range (`I;16`: /257);
- transparency (`RGBA`, `LA`, `P` with transparency) is composited over a WHITE background;
- numpy arrays `(H, W)` or `(H, W, 3|4)` are taken as uint8 in [0, 255] or float in [0, 1] (anything else raises);
- unreadable, truncated or empty files raise `ImageLoadError` naming the file; dataset builders skip such files with a
  warning that names each one, so one bad file never stops a build.
"""

import io
import os

import numpy as np
import torch
from PIL import Image, ImageOps

from lm4lv.modeling_lm4lv.configuration_lm4lv import image_size_pair

from .degradations import pil_to_tensor


class ImageLoadError(ValueError):
    """An image that cannot be read or converted; the message names the file."""


def array_to_pil(array: np.ndarray) -> Image.Image:
    """A PIL image from `(H, W)` or `(H, W, 3|4)` uint8 in [0, 255] or float in [0, 1] (rounded to uint8)."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(f"Image arrays must be (H, W) or (H, W, 3|4), got shape {array.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ImageLoadError(f"Image arrays must be uint8 in [0, 255] or float in [0, 1], got {array.dtype}")
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageLoadError("Float image arrays must be finite and in [0, 1]")
        array = (array * 255).round().astype(np.uint8)
    return Image.fromarray(array)


def load_rgb_image(source, name: str | None = None) -> Image.Image:
    """
    Open an image (path, bytes, file object, PIL image or numpy array) and convert it to RGB following the module's
    policy.

    Raises:
        ImageLoadError: for missing, empty, truncated or undecodable files, naming `name` (or the path).
    """
    name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<image>")
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, np.ndarray):
            image = array_to_pil(source)
        else:
            if isinstance(source, (str, os.PathLike)) and os.path.getsize(source) == 0:
                raise ImageLoadError(f"{name}: empty file (0 bytes)")
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            image.load()
        image = ImageOps.exif_transpose(image)
    except ImageLoadError:
        raise
    except Exception as error:  # PIL raises many types for corrupt data
        raise ImageLoadError(f"{name}: cannot read image ({type(error).__name__}: {error})") from error
    return to_rgb(image, name)


def to_rgb(image: Image.Image, name: str = "<image>") -> Image.Image:
    """Convert a PIL image of any common mode to RGB (policy in the module docstring)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() <= 65535 else float(array.max())
        return Image.fromarray(np.round(np.clip(array, 0, top) / top * 255).astype(np.uint8)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    try:
        return image.convert("RGB")
    except Exception as error:
        raise ImageLoadError(f"{name}: cannot convert mode {image.mode!r} to RGB ({error})") from error


def to_tensor(image: Image.Image, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """`(3, H, W)` float tensor in [0, 1]; resized (bicubic, whole image, as the paper) when `size` is given: a
    vision config's `image_size`, an int for square images or `(height, width)` (`image_size_pair`)."""
    if size is not None:
        height, width = image_size_pair(size)
        if image.size != (width, height):
            image = image.resize((width, height), Image.BICUBIC)
    return pil_to_tensor(image)


__all__ = ["ImageLoadError", "array_to_pil", "load_rgb_image", "to_rgb", "to_tensor"]
