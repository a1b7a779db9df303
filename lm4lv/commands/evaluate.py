"""Evaluate a trained LM4LV model against MAE-r (and the degraded input) on a fixed evaluation set.

    lm4lv evaluate --model CKPT --task denoise --output_dir outputs/eval

Writes `results.md` (paper layout: tasks as rows, MAE-r / LM4LV columns, gain), `results.json` and one
`grid_<task>.png` per task (degraded / input / MAE-r / LM4LV / clean).
"""

import argparse
import os

import datasets

from lm4lv.commands.arguments import (
    add_loading_arguments,
    checkpoint_location,
    load_restoration_model_from_args,
    positive_int,
)
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.data import load_image_dataset, materialize_eval_set
from lm4lv.trainers.evaluation import (
    evaluate_restoration,
    restoration_methods,
    results_markdown,
    write_results,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=checkpoint_location, help="LM4LV checkpoint folder or Hub id.")
    parser.add_argument("--task", default=None, help="Comma-separated tasks (default: all the model knows).")
    parser.add_argument("--eval_set", default=None, help="A saved evaluation set (else built and saved).")
    parser.add_argument("--dataset", default=None, help="Images for a new evaluation set (default: bundled).")
    parser.add_argument("--dataset_split", default="validation")
    parser.add_argument("--num_samples", type=positive_int, default=64, help="Images per new evaluation set.")
    parser.add_argument("--seed", type=int, default=1234, help="Degradation seed of a new evaluation set.")
    parser.add_argument("--batch_size", type=positive_int, default=16)
    parser.add_argument("--output_dir", default="outputs/eval")
    add_loading_arguments(parser)
    args = parser.parse_args(argv)
    if args.eval_set and not os.path.isdir(args.eval_set):
        parser.error(f"--eval_set: no such folder: {args.eval_set}")

    model = load_restoration_model_from_args(args)
    processor = LM4LVProcessor.from_pretrained(args.model)
    tasks = args.task.split(",") if args.task else model.config.task_names
    if args.eval_set:
        eval_set = datasets.load_from_disk(args.eval_set)
        eval_set = eval_set.filter(lambda row: row["task"] in tasks)
    else:
        images = load_image_dataset(args.dataset, args.dataset_split)
        eval_set = materialize_eval_set(images, tasks, model.config.vision_config.image_size,
                                        os.path.join(args.output_dir, "eval_set"), args.seed, args.num_samples)
    methods = restoration_methods(model, processor)
    results, examples = evaluate_restoration(eval_set, methods, batch_size=args.batch_size)
    paths = write_results(results, examples, args.output_dir, list(methods))
    print(results_markdown(results))
    print(f"wrote {', '.join(paths.values())}")


if __name__ == "__main__":
    main()
