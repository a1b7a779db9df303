"""Train LM4LV (adapters + task tokens, LLM and vision module frozen) with `transformers.Trainer`.

    python -m examples.run_restoration --llm PATH_OR_ID --vision PATH_OR_ID --task denoise --output_dir out
    python -m examples.run_restoration config.yaml          # the same arguments from a JSON/YAML file
    accelerate launch --config_file examples/accelerate/ddp_4gpu.yaml -m examples.run_restoration ...

Defaults follow the paper's recipe (AdamW betas 0.9/0.95, lr 3e-4, weight decay 0, 200 warmup steps then cosine
decay, gradient clipping 1.0). `--task denoise,deblur` trains one model on a mixture of tasks (shared adapters, one
set of task tokens per task).
"""

import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoTokenizer, HfArgumentParser, set_seed

from modeling_lm4lv import LM4LVForConditionalGeneration
from processing import LM4LVProcessor
from processing.data import load_image_dataset, paired_dataset
from trainers import LM4LVDataCollator, LM4LVTrainer, LM4LVTrainingArguments


@dataclass
class ModelArguments:
    llm: str = field(metadata={"help": "Causal LM: Hub id or local folder (anything AutoModelForCausalLM loads)."})
    vision: str = field(metadata={"help": "ViT-MAE: Hub id or local folder (decoder fine-tuned for reconstruction)."})
    task_token_length: int = field(default=10, metadata={"help": "Task tokens per task."})
    task_token_init: str = field(default="zeros", metadata={"help": "zeros (authors) or random."})
    vision_loss_weight: float = field(default=1.0, metadata={"help": "loss = CE + weight * MSE."})
    visual_skip_connection: bool = field(
        default=False, metadata={"help": "Extension: predict input feature + out_adapter(hidden) (off = paper)."}
    )
    llm_dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16 for the frozen LLM."})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside --llm, if the LLM is GGUF."})
    resume_weights: str | None = field(default=None, metadata={"help": "Start from a trained LM4LV checkpoint."})


@dataclass
class DataArguments:
    task: str = field(default="denoise", metadata={"help": "Task, or comma-separated mixture of tasks."})
    dataset: str | None = field(
        default=None, metadata={"help": "datasets name/path or an image folder; default: the bundled corpus."}
    )
    dataset_split: str = field(default="train")
    image_column: str = field(default="image")
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (corpora too big for disk)."})
    degradation_seed: int = field(default=0, metadata={"help": "Seed of the on-the-fly degradations."})


def parse_arguments(argv=None):
    """(model_args, data_args, training_args) from the command line or a single JSON/YAML file."""
    parser = HfArgumentParser((ModelArguments, DataArguments, LM4LVTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(argv)


def build_model_and_processor(model_args: ModelArguments, tasks: list[str]):
    """The LM4LV model (fresh adapters, or `resume_weights`) and its processor."""
    dtype = getattr(torch, model_args.llm_dtype)
    llm_kwargs = {"gguf_file": model_args.gguf_file} if model_args.gguf_file else {}
    if model_args.resume_weights:
        model = LM4LVForConditionalGeneration.from_pretrained(model_args.resume_weights, dtype=dtype)
    else:
        model = LM4LVForConditionalGeneration.from_base_models(
            model_args.llm,
            model_args.vision,
            task_names=tasks,
            dtype=dtype,
            llm_kwargs=llm_kwargs,
            task_token_length=model_args.task_token_length,
            task_token_init=model_args.task_token_init,
            vision_loss_weight=model_args.vision_loss_weight,
            visual_skip_connection=model_args.visual_skip_connection,
        )
    tokenizer = AutoTokenizer.from_pretrained(model_args.llm, **llm_kwargs)
    return model, LM4LVProcessor.from_config(model.config, tokenizer)


def train(model_args: ModelArguments, data_args: DataArguments, training_args: LM4LVTrainingArguments,
          callbacks=None) -> LM4LVTrainer:
    """Build everything, train (resuming from `training_args.resume_from_checkpoint`), save the final model."""
    tasks = [t.strip() for t in data_args.task.split(",") if t.strip()]
    set_seed(training_args.seed)  # the fresh adapters and task tokens are initialised reproducibly
    model, processor = build_model_and_processor(model_args, tasks)
    images = load_image_dataset(data_args.dataset, data_args.dataset_split, data_args.streaming)
    train_dataset = paired_dataset(
        images, tasks, model.config.vision_config.image_size, data_args.degradation_seed, data_args.image_column
    )
    trainer = LM4LVTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=LM4LVDataCollator(processor),
        processing_class=processor,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    return trainer


def main(argv=None):
    model_args, data_args, training_args = parse_arguments(argv)
    train(model_args, data_args, training_args)


if __name__ == "__main__":
    main()
