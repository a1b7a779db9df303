"""Restore an image of any size with a trained LM4LV model: overlapping tiles of the model's input size, blended
(`LM4LVRestorationPipeline`, the package's one restoration code path).

    lm4lv restore --model CKPT --task denoise IN.png -o OUT.png
"""

import argparse
import os

from lm4lv.commands.arguments import checkpoint_location, existing_file, non_negative_int, positive_int
from lm4lv.modeling_lm4lv.checkpointing import write_atomically
from lm4lv.pipelines import LM4LVRestorationPipeline
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.images import load_rgb_image
from lm4lv.trainers.evaluation import add_loading_arguments, load_restoration_model_from_args


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=existing_file, help="Input image (any size, any common mode: converted to RGB).")
    parser.add_argument("-o", "--output", required=True, help="Output PNG path.")
    parser.add_argument("--model", required=True, type=checkpoint_location, help="LM4LV checkpoint folder or Hub id.")
    parser.add_argument("--task", required=True, help="Task name the model was trained for.")
    parser.add_argument("--overlap", type=non_negative_int, default=8,
                        help="Pixels shared by neighbouring tiles (less than the model's input size).")
    parser.add_argument("--batch_size", type=positive_int, default=16, help="Tiles per generate() call.")
    parser.add_argument("--merge_lora", action="store_true",
                        help="Fold a checkpoint's LoRA adapters into the LLM before restoring (faster generation).")
    add_loading_arguments(parser)
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.output))):
        parser.error(f"the output's folder does not exist: {os.path.dirname(os.path.abspath(args.output))}")
    image = load_rgb_image(args.image)  # a bad file is reported before the model loads
    model = load_restoration_model_from_args(args)
    if args.merge_lora:
        model.merge_lora_adapters()
    restorer = LM4LVRestorationPipeline(model=model, processor=LM4LVProcessor.from_pretrained(args.model),
                                        batch_size=args.batch_size)
    restored = restorer(image, task=args.task, overlap=args.overlap)
    write_atomically(args.output, restored.save)  # an existing output is replaced only by a complete image
    print(f"wrote {args.output} ({image.width}x{image.height})")


if __name__ == "__main__":
    main()
