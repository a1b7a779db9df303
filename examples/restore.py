"""Restore an image of any size with a trained LM4LV model: overlapping tiles of the model's input size, blended.

    lm4lv restore --model CKPT --task denoise IN.png -o OUT.png
"""

import argparse

import torch
from PIL import Image

from processing import LM4LVProcessor
from processing.data import load_rgb_image, to_tensor
from processing.degradations import SPATIAL_TASKS, tensor_to_pil
from trainers.evaluation import add_loading_arguments, load_restoration_model_from_args, restore


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering `length` (the last tile is flush with the end)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def blend_window(tile: int, overlap: int) -> torch.Tensor:
    """A `(tile, tile)` weight that ramps linearly over `overlap` pixels at each border (never exactly 0)."""
    ramp = torch.ones(tile)
    if overlap:
        edge = torch.linspace(1 / (overlap + 1), 1, overlap + 1)[:-1]
        ramp[:overlap], ramp[-overlap:] = edge, edge.flip(0)
    return ramp[:, None] * ramp[None, :]


@torch.no_grad()
def restore_any_size(model, processor, image: Image.Image, task: str, overlap: int = 8, batch_size: int = 16):
    """Restore a PIL RGB image of any size; the output has the input's size."""
    tile = processor.image_size[0]
    if task in SPATIAL_TASKS and image.size != (tile, tile):
        raise ValueError(f"{task} acts on the whole image: resize it to {tile}x{tile} first (got {image.size})")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, {tile}), got {overlap}")
    pixels = to_tensor(image)
    height, width = pixels.shape[1:]
    if height < tile or width < tile:  # pad small images by reflection (or edge copies when too small to reflect)
        pad_h, pad_w = max(0, tile - height), max(0, tile - width)
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        pixels = torch.nn.functional.pad(pixels[None], (0, pad_w, 0, pad_h), mode=mode)[0]
    full_h, full_w = pixels.shape[1:]
    stride = tile - overlap
    boxes = [(y, x) for y in tile_starts(full_h, tile, stride) for x in tile_starts(full_w, tile, stride)]
    weight = blend_window(tile, overlap)
    output, total = torch.zeros_like(pixels), torch.zeros(full_h, full_w)
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        tiles = torch.stack([pixels[:, y : y + tile, x : x + tile] for y, x in chunk])
        restored = restore(model, processor, tiles, task)
        for (y, x), result in zip(chunk, restored):
            output[:, y : y + tile, x : x + tile] += result * weight
            total[y : y + tile, x : x + tile] += weight
    return tensor_to_pil((output / total)[:, :height, :width])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", help="Input image (any size, any common mode: converted to RGB).")
    parser.add_argument("-o", "--output", required=True, help="Output PNG path.")
    parser.add_argument("--model", required=True, help="LM4LV checkpoint folder or Hub id.")
    parser.add_argument("--task", required=True, help="Task name the model was trained for.")
    parser.add_argument("--overlap", type=int, default=8, help="Pixels shared by neighbouring tiles.")
    parser.add_argument("--batch_size", type=int, default=16, help="Tiles per generate() call.")
    parser.add_argument("--merge_lora", action="store_true",
                        help="Fold a checkpoint's LoRA adapters into the LLM before restoring (faster generation).")
    add_loading_arguments(parser)
    args = parser.parse_args(argv)
    model = load_restoration_model_from_args(args)
    if args.merge_lora:
        model.merge_lora_adapters()
    processor = LM4LVProcessor.from_pretrained(args.model)
    image = load_rgb_image(args.image)
    restore_any_size(model, processor, image, args.task, args.overlap, args.batch_size).save(args.output)
    print(f"wrote {args.output} ({image.width}x{image.height})")


if __name__ == "__main__":
    main()
