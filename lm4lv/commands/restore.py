"""Restore an image of any size with a trained LM4LV model: overlapping tiles of the model's input size, blended
(`LM4LVRestorationPipeline`, the package's one restoration code path).

    lm4lv restore noisy.png -o restored.png                   # the shipped denoiser (lm4lv-denoise-smollm2)
    lm4lv restore --model CKPT --task deblur IN.png -o OUT.png
"""

import argparse
import os

from PIL import Image

from lm4lv.commands.arguments import (
    add_loading_arguments,
    checkpoint_location,
    existing_file,
    image_file_name,
    load_restoration_model_from_args,
    non_negative_int,
    positive_int,
    shipped_model_location,
)

MAX_PIXELS = 8192 * 8192  # larger images are refused before they are decoded


def header_size(path: str) -> tuple[int, int] | None:
    """`(width, height)` from an image file's header (nothing decoded, any size); None when it cannot be read."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            return image.size
    except Exception:  # load_rgb_image names the problem of an unreadable file
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_image_header(parser: argparse.ArgumentParser, path: str):
    """Refuse an image whose header claims more than `MAX_PIXELS`, before it is decoded."""
    size = header_size(path)
    if size and size[0] * size[1] > MAX_PIXELS:
        parser.error(f"{path} is {size[0]}x{size[1]} pixels ({size[0] * size[1] / 1e6:.0f} MP); lm4lv restore "
                     f"takes at most {MAX_PIXELS / 1e6:.0f} MP: crop or downscale it first")


def check_against_checkpoint(parser: argparse.ArgumentParser, args: argparse.Namespace, image_size: tuple[int, int]):
    """Usage errors found from the checkpoint's config, before the model loads: an unknown task, an overlap of the
    tile size or more, a spatial task on an image (`(width, height)`) that is not of the model's input size."""
    from transformers import AutoConfig

    from lm4lv.modeling_lm4lv.configuration_lm4lv import image_size_pair
    from lm4lv.processing.degradations import SPATIAL_TASKS

    config = AutoConfig.from_pretrained(args.model)
    if args.task not in config.task_names:
        parser.error(f"--task {args.task}: the checkpoint {args.model} was trained for {config.task_names}")
    tile_h, tile_w = image_size_pair(config.vision_config.image_size)
    if args.overlap >= min(tile_h, tile_w):
        parser.error(f"--overlap must be less than the model's input size {min(tile_h, tile_w)}, got {args.overlap}")
    if args.task in SPATIAL_TASKS and image_size != (tile_w, tile_h):
        parser.error(f"--task {args.task} acts on the whole image: give a {tile_w}x{tile_h} image (got "
                     f"{image_size[0]}x{image_size[1]}); other tasks restore any size tile by tile")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=existing_file, help="Input image (any size, any common mode: converted to RGB).")
    parser.add_argument("-o", "--output", required=True, type=image_file_name,
                        help="Output image path (.png for lossless).")
    parser.add_argument("--model", default=None, type=checkpoint_location,
                        help="LM4LV checkpoint folder, Hub id, or the name of a model shipped with the package "
                             "(default: the denoiser shipped with it).")
    parser.add_argument("--task", default="denoise", help="Task name the model was trained for (default: denoise).")
    parser.add_argument("--overlap", type=non_negative_int, default=8,
                        help="Pixels shared by neighbouring tiles (less than the model's input size).")
    parser.add_argument("--batch_size", type=positive_int, default=None,
                        help="Tiles per generate() call (default: as many as fit in 1 GiB, the pipeline's "
                             "MEMORY_BUDGET_BYTES).")
    parser.add_argument("--merge_lora", action="store_true",
                        help="Fold a checkpoint's LoRA adapters into the LLM before restoring (faster generation).")
    add_loading_arguments(parser)
    args = parser.parse_args(argv)
    # what restoring needs is imported once the arguments are read (`--help` imports none of it)
    from lm4lv.modeling_lm4lv.hub_files import write_atomically
    from lm4lv.pipelines import LM4LVRestorationPipeline
    from lm4lv.processing import LM4LVProcessor
    from lm4lv.processing.images import load_rgb_image

    args.model = args.model or shipped_model_location()
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        parser.error(f"the output's folder does not exist: {os.path.dirname(os.path.abspath(args.output))}")
    check_image_header(parser, args.image)
    image = load_rgb_image(args.image)  # a bad file is reported before the model loads
    check_against_checkpoint(parser, args, image.size)
    model = load_restoration_model_from_args(args)
    if args.merge_lora:
        model.merge_lora_adapters()
    restorer = LM4LVRestorationPipeline(model=model, processor=LM4LVProcessor.from_pretrained(args.model),
                                        batch_size=args.batch_size)
    restored = restorer(image, task=args.task, overlap=args.overlap, progress=True)  # a bar from two seconds on
    write_atomically(args.output, restored.save)  # an existing output is replaced only by a complete image
    print(f"wrote {args.output} ({image.width}x{image.height})")


if __name__ == "__main__":
    main()
