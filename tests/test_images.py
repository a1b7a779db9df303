"""Every common kind of image input, from a file on disk through `load_rgb_image` and `LM4LVProcessor` into the
model: it either reaches the model with the documented conversion, or fails with a message naming the problem."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lm4lv.modeling_lm4lv.vision import image_normalisation, normalise
from lm4lv.processing.images import ImageLoadError, load_rgb_image

from conftest import build_tiny


def exif_rotated_jpeg(path):
    image = Image.new("RGB", (48, 32), (0, 0, 255))
    exif = image.getexif()
    exif[0x0112] = 6  # stored landscape, displayed portrait
    image.save(path, exif=exif)


def truncated_png(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


# name -> (writer, expected RGB value of the top-left pixel after conversion, expected (width, height) after load)
READABLE = {
    "rgb.png": (lambda p: Image.new("RGB", (40, 40), (200, 10, 10)).save(p), (200, 10, 10), (40, 40)),
    "gray.png": (lambda p: Image.new("L", (40, 40), 90).save(p), (90, 90, 90), (40, 40)),
    "rgba.png": (lambda p: Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(p), (255, 255, 255), (40, 40)),
    "palette.png": (lambda p: Image.new("RGB", (40, 40), (10, 200, 30)).quantize(4).save(p), (10, 200, 30), (40, 40)),
    "deep16.png": (lambda p: Image.fromarray(np.full((40, 40), 32768, np.uint16)).save(p), (128, 128, 128), (40, 40)),
    "cmyk.jpg": (lambda p: Image.new("CMYK", (40, 40), (0, 0, 0, 0)).save(p), (255, 255, 255), (40, 40)),
    "exif.jpg": (exif_rotated_jpeg, (0, 0, 254), (32, 48)),
    "nonsquare.png": (lambda p: Image.new("RGB", (96, 24), (5, 6, 7)).save(p), (5, 6, 7), (96, 24)),
    "huge_side.png": (lambda p: Image.new("RGB", (8193, 16), (40, 50, 60)).save(p), (40, 50, 60), (8193, 16)),
}

UNREADABLE = {
    "zero.png": (lambda p: p.write_bytes(b""), "zero.png: empty file"),
    "truncated.png": (truncated_png, "truncated.png: cannot read image"),
    "corrupt.jpg": (lambda p: p.write_bytes(b"\xff\xd8\xff garbage"), "corrupt.jpg: cannot read image"),
}


@pytest.fixture(scope="module")
def tiny_model():
    return build_tiny()


@pytest.mark.parametrize("name", sorted(READABLE))
def test_readable_inputs_reach_the_model(name, tiny_model, tmp_path):
    write, top_left, size = READABLE[name]
    write(tmp_path / name)
    image = load_rgb_image(tmp_path / name)
    assert image.mode == "RGB" and image.size == size
    assert all(abs(a - b) <= 2 for a, b in zip(image.getpixel((0, 0)), top_left)), image.getpixel((0, 0))
    model, processor = tiny_model
    batch = processor(images=image, task="denoise")
    assert batch["pixel_values"].shape == (1, 3, 32, 32)
    # the normalised input holds the image's colour (a flat image stays flat after resizing)
    mean, std = image_normalisation(model.config.vision_config)
    expected = normalise(torch.tensor(top_left, dtype=torch.float32).view(1, 3, 1, 1) / 255, mean, std)
    if name not in ("exif.jpg", "huge_side.png", "nonsquare.png"):
        torch.testing.assert_close(batch["pixel_values"][:, :, :1, :1], expected, atol=0.05, rtol=0)
    generated = model.generate(**batch)
    assert torch.isfinite(generated.pixel_values).all()


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_files_are_named(name, tmp_path):
    write, message = UNREADABLE[name]
    write(tmp_path / name)
    with pytest.raises(ImageLoadError, match=message):
        load_rgb_image(tmp_path / name)


def test_decompression_bomb_is_refused_by_name(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels > 2 x the limit: PIL refuses to decode
    with pytest.raises(ImageLoadError, match="bomb.png: cannot read image \\(DecompressionBombError"):
        load_rgb_image(tmp_path / "bomb.png")


def test_images_smaller_than_a_patch_are_refused(tiny_model):
    _, processor = tiny_model
    with pytest.raises(ValueError, match="Image 1 is 4x12 pixels, smaller than the vision module's patch size 8"):
        processor(images=[Image.new("RGB", (32, 32)), Image.new("RGB", (4, 12))], task="denoise")
    assert processor(images=Image.new("RGB", (8, 8)), task="denoise")["pixel_values"].shape == (1, 3, 32, 32)


def test_unconverted_modes_are_refused_by_the_processor(tiny_model):
    _, processor = tiny_model
    for mode in ("L", "RGBA", "P", "CMYK", "I;16"):
        with pytest.raises(ValueError, match=f"Image 0 has mode '{mode}'"):
            processor(images=Image.new(mode, (32, 32)), task="denoise")
