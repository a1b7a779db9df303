"""Training LM4LV (adapters + task tokens, LLM and vision module frozen) with `transformers.Trainer`: the arguments
and `train()` behind `lm4lv train` and `examples/run_restoration.py` (whose docstrings describe the options)."""

import itertools
import math
import os
import sys
from dataclasses import dataclass, field, fields, make_dataclass

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, set_seed

from lm4lv.modeling_lm4lv import LM4LVConfig, LM4LVExpertModel, LM4LVForConditionalGeneration, LM4LVViTLLMModel
from lm4lv.modeling_lm4lv.configuration_lm4lv import training_options
from lm4lv.modeling_lm4lv.engines import readable_parameters
from lm4lv.modeling_lm4lv.hub_files import write_folder_atomically
from lm4lv.modeling_lm4lv.initialization import init_in_adapter_from_features, init_out_adapter_by_ridge
from lm4lv.modeling_lm4lv.modeling_experts import EXPERTS
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.data import (
    TRAINING_IMAGES,
    check_image_column,
    load_image_dataset,
    paired_dataset,
    training_images,
)
from lm4lv.processing.device_data import DevicePairedBatches, decode_images
from lm4lv.trainers import LM4LVDataCollator, LM4LVTrainer, LM4LVTrainingArguments

TRAINING_METHODS = ("lm4lv", "random_init_llm", "vit_llm", *EXPERTS)
LLM_DTYPES = ("float32", "bfloat16", "float16")  # the frozen LLM's dtypes (the trainables stay float32)


@dataclass
class BaseModelArguments:
    """The model options of `lm4lv train` that are not config fields: what to load and how."""

    llm: str = field(metadata={"help": "Causal LM: Hub id or local folder (anything AutoModelForCausalLM loads)."})
    vision: str = field(
        metadata={"help": "Vision module: ViT-MAE Hub id or local folder (decoder fine-tuned for reconstruction), "
                          "or a diffusers-autoencoder folder written by this package."}
    )
    method: str = field(
        default="lm4lv",
        metadata={"help": "lm4lv (the paper), or an ablation: random_init_llm, vit_llm, linear, mlp, transformer.",
                  "choices": TRAINING_METHODS},
    )
    llm_dtype: str = field(default="float32", metadata={"help": "Dtype of the frozen LLM.", "choices": LLM_DTYPES})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside --llm, if the LLM is GGUF."})
    resume_weights: str | None = field(default=None, metadata={"help": "Start from a trained LM4LV checkpoint."})


def model_arguments_class(config_class: type[LM4LVConfig] = LM4LVConfig) -> type:
    """`BaseModelArguments` plus every training option of `config_class` (`configuration_lm4lv.training_options`),
    with the config's type, choices, default and help: a config field declared as an option is a flag of `lm4lv
    train`, and `build_model_and_processor` passes it on to the config."""
    options = [(name, spec.type, field(default=spec.default, metadata=dict(spec.metadata)))
               for name, spec in training_options(config_class).items()]
    arguments = make_dataclass("ModelArguments", options, bases=(BaseModelArguments,))
    arguments.__module__ = __name__
    arguments.__doc__ = "The model options of `lm4lv train`: `BaseModelArguments` and the config's training options."
    return arguments


ModelArguments = model_arguments_class()


def config_options(model_args) -> dict:
    """The config fields among `model_args` (all but `BaseModelArguments`'), by name."""
    base = {spec.name for spec in fields(BaseModelArguments)}
    return {spec.name: getattr(model_args, spec.name) for spec in fields(model_args) if spec.name not in base}


@dataclass
class DataArguments:
    """The data options of `lm4lv train`."""

    task: str = field(default="denoise", metadata={"help": "Task, or comma-separated mixture of tasks."})
    dataset: str | None = field(
        default=None, metadata={"help": "datasets name/path or an image folder; default: --training_images."}
    )
    training_images: str = field(
        default="corpus",
        metadata={"help": "Without --dataset: the bundled corpus's training crops (corpus), augmented crops of its "
                          "photos (augmented: random scales, flips, rotations), procedural dead-leaves images "
                          "(dead_leaves), or both (mix); see lm4lv.processing.data.training_images.",
                  "choices": TRAINING_IMAGES},
    )
    num_training_images: int = field(
        default=20000, metadata={"help": "How many augmented or generated images (--training_images but corpus)."}
    )
    dataset_split: str = field(default="train")
    image_column: str = field(default="image")
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (corpora too big for disk)."})
    degradation_seed: int = field(
        default=0, metadata={"help": "Seed of the on-the-fly degradations (fresh ones each epoch, from this seed)."}
    )
    device_batches: bool = field(
        default=False,
        metadata={"help": "Make the training batches on the training device (the corpus decoded once into device "
                          "memory, batched degradations): for GPUs, where the per-sample path bounds the step."},
    )


def parse_arguments(argv=None):
    """(model_args, data_args, training_args) from the command line or a single JSON/YAML file."""
    parser = HfArgumentParser((ModelArguments, DataArguments, LM4LVTrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(argv)


def random_init_llm(llm: str, target: str, seed: int = 0, llm_kwargs: dict | None = None) -> str:
    """Write (once) a causal LM of `llm`'s architecture with random weights (seeded) and `llm`'s tokenizer to
    `target`, so a checkpoint trained on it names a folder that reloads the same random LLM."""
    if os.path.exists(os.path.join(target, "model.safetensors")):
        return target

    def write(folder):
        torch.manual_seed(seed)
        config = AutoConfig.from_pretrained(llm, **(llm_kwargs or {}))
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        AutoTokenizer.from_pretrained(llm, **(llm_kwargs or {})).save_pretrained(folder)

    write_folder_atomically(target, write)
    return target


def build_model_and_processor(model_args: ModelArguments, tasks: list[str], output_dir: str = "."):
    """The model of `model_args.method` (fresh trainable parts, or `resume_weights`) and its processor."""
    dtype = getattr(torch, model_args.llm_dtype)
    llm, llm_kwargs = model_args.llm, ({"gguf_file": model_args.gguf_file} if model_args.gguf_file else {})
    if model_args.method == "random_init_llm" and not model_args.resume_weights:
        llm = random_init_llm(llm, os.path.join(output_dir, "random_init_llm"), llm_kwargs=llm_kwargs)
        llm_kwargs = {}
    if model_args.resume_weights:
        model = AutoModel.from_pretrained(model_args.resume_weights, dtype=dtype)
    elif model_args.method in EXPERTS:
        model = LM4LVExpertModel.from_llm_and_vision(llm, model_args.vision, model_args.method, tasks, llm_kwargs,
                                                     **config_options(model_args))
    else:
        model_class = LM4LVViTLLMModel if model_args.method == "vit_llm" else LM4LVForConditionalGeneration
        model = model_class.from_base_models(llm, model_args.vision, task_names=tasks, dtype=dtype,
                                             llm_kwargs=llm_kwargs, **config_options(model_args))
    tokenizer = AutoTokenizer.from_pretrained(llm, **llm_kwargs)
    return model, LM4LVProcessor.from_config(model.config, tokenizer)


def fit_in_adapter_to_embeddings(model, processor, train_dataset, num_images: int = 256):
    """`in_adapter_init="embedding_subspace"`: fit `in_adapter` on the features of the first `num_images` clean
    training images."""
    clean = [example["clean"] for example in itertools.islice(iter(train_dataset), num_images)]
    pixel_values = processor.preprocess_images(torch.stack(clean)).to(model.device)
    with readable_parameters(model.vision_model.parameters()):
        features = model.encode_images(pixel_values)
    init_in_adapter_from_features(model, features)


@torch.no_grad()
def fit_out_adapter_by_ridge(model, processor, train_dataset, num_examples: int = 256, batch_size: int = 16):
    """`out_adapter_init="ridge"`: fit `out_adapter` on the teacher-forced sequences of the first `num_examples`
    training pairs (the hidden states before each target visual token -> that token's feature)."""
    collate, config = LM4LVDataCollator(processor), model.config
    examples = list(itertools.islice(iter(train_dataset), num_examples))
    was_training = model.training
    model.eval()
    states, targets = [], []
    with readable_parameters(model.parameters()):  # under ZeRO-3: the whole model, once, on every process
        batches = [collate(examples[start : start + batch_size]) for start in range(0, len(examples), batch_size)]
        for batch in batches:
            batch = {k: v.to(model.device) for k, v in batch.items()}
            hidden = model(**batch).last_hidden_state
            states.append(hidden[:, :-1][batch["labels"][:, 1:] == config.image_token_id].float())
            target = model.encode_images(batch["target_pixel_values"])
            if config.visual_skip_connection:
                target = target - model.encode_images(batch["pixel_values"])
            targets.append(target.reshape(-1, target.shape[-1]))
    init_out_adapter_by_ridge(model, torch.cat(states), torch.cat(targets))
    model.train(was_training)


def degradation_epochs(training_args: LM4LVTrainingArguments, num_images: int) -> int:
    """How many epochs of fresh degradations a run needs: enough repetitions of the `num_images` training images for
    `max_steps` global batches. Epoch-based runs (`max_steps` unset) get `ceil(num_train_epochs)` repetitions, and
    `num_train_epochs` is divided by that count so the Trainer makes one pass over them (its logged `epoch` is then
    a fraction of that pass)."""
    if training_args.max_steps > 0:
        per_step = (training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
                    * training_args.world_size)
        return max(1, math.ceil(training_args.max_steps * per_step / num_images))
    epochs = max(1, math.ceil(training_args.num_train_epochs))
    training_args.num_train_epochs /= epochs
    return epochs


def train(model_args: ModelArguments, data_args: DataArguments, training_args: LM4LVTrainingArguments,
          callbacks=None) -> LM4LVTrainer:
    """Build everything, train (resuming from `training_args.resume_from_checkpoint`), save the final model."""
    tasks = [t.strip() for t in data_args.task.split(",") if t.strip()]
    if data_args.dataset:
        images = load_image_dataset(data_args.dataset, data_args.dataset_split, data_args.streaming)
        check_image_column(images, data_args.image_column)  # a dataset without images: refused before the model loads
    if data_args.device_batches and data_args.streaming:
        raise ValueError("--device_batches decodes the whole corpus into device memory: it cannot stream")
    set_seed(training_args.seed)  # the fresh adapters and task tokens are initialised reproducibly
    model, processor = build_model_and_processor(model_args, tasks, training_args.output_dir)
    if not data_args.dataset:  # made at the vision module's input size
        images = training_images(data_args.training_images, data_args.num_training_images,
                                 max(processor.image_size), data_args.degradation_seed)
    epochs = 1 if data_args.streaming else degradation_epochs(training_args, len(images))
    train_dataset = paired_dataset(
        images, tasks, model.config.vision_config.image_size, data_args.degradation_seed, data_args.image_column,
        epochs=epochs,
    )
    fits_adapters = isinstance(model, LM4LVForConditionalGeneration) and not model_args.resume_weights
    if fits_adapters and model.config.in_adapter_init == "embedding_subspace":
        fit_in_adapter_to_embeddings(model, processor, train_dataset)
    if fits_adapters and model.config.out_adapter_init == "ridge":
        fit_out_adapter_by_ridge(model, processor, train_dataset)
    if data_args.device_batches:
        train_dataset = DevicePairedBatches(
            decode_images(images, model.config.vision_config.image_size, data_args.image_column, training_args.device),
            processor, tasks, training_args.per_device_train_batch_size, data_args.degradation_seed,
            process_index=training_args.process_index, num_processes=training_args.world_size,
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

