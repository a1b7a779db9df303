"""Training LM4LV (adapters + task tokens, LLM and vision module frozen) with `transformers.Trainer`: the arguments
and `train()` behind `lm4lv train` and `examples/run_restoration.py` (whose docstrings describe the options)."""

import itertools
import math
import os
import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, set_seed

from lm4lv.modeling_lm4lv import LM4LVConfig, LM4LVExpertModel, LM4LVForConditionalGeneration, LM4LVViTLLMModel
from lm4lv.modeling_lm4lv.checkpointing import write_folder_atomically
from lm4lv.modeling_lm4lv.configuration_lm4lv import IN_ADAPTER_INITS, OUT_ADAPTER_INITS, TASK_TOKEN_INITS
from lm4lv.modeling_lm4lv.initialization import (
    init_in_adapter_from_features,
    init_out_adapter_by_ridge,
    readable_parameters,
)
from lm4lv.modeling_lm4lv.modeling_experts import EXPERTS
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.data import check_image_column, load_image_dataset, paired_dataset
from lm4lv.processing.device_data import DevicePairedBatches, decode_images
from lm4lv.trainers import LM4LVDataCollator, LM4LVTrainer, LM4LVTrainingArguments

TRAINING_METHODS = ("lm4lv", "random_init_llm", "vit_llm", *EXPERTS)
LLM_DTYPES = ("float32", "bfloat16", "float16")  # the frozen LLM's dtypes (the trainables stay float32)


@dataclass
class ModelArguments:
    """The model options of `lm4lv train`; the LM4LV fields default to `LM4LVConfig`'s values."""

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
    task_token_length: int = field(default=LM4LVConfig.task_token_length, metadata={"help": "Task tokens per task."})
    task_token_init: str = field(
        default=LM4LVConfig.task_token_init, metadata={"help": "zeros (authors), random or text.",
                                                       "choices": TASK_TOKEN_INITS}
    )
    task_token_init_text: str | None = field(
        default=LM4LVConfig.task_token_init_text,
        metadata={"help": "Text whose embeddings initialise the task tokens (--task_token_init text)."},
    )
    lora_r: int = field(
        default=LM4LVConfig.lora_r, metadata={"help": "LoRA rank on the LLM through peft; 0 (the paper) = frozen."}
    )
    lora_alpha: int = field(default=LM4LVConfig.lora_alpha, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    vision_loss_weight: float = field(
        default=LM4LVConfig.vision_loss_weight, metadata={"help": "loss = CE + weight * MSE."}
    )
    delimiter_loss_weight: float = field(
        default=LM4LVConfig.delimiter_loss_weight,
        metadata={"help": "Weight of the CE on the answer's <Img>/</Img> tokens, which generate() forces."},
    )
    in_adapter_init: str = field(
        default=LM4LVConfig.in_adapter_init,
        metadata={"help": "normal (the paper) or embedding_subspace (features mapped onto the token embeddings' "
                          "principal subspace, fitted on the first 256 training images).",
                  "choices": IN_ADAPTER_INITS},
    )
    out_adapter_init: str = field(
        default=LM4LVConfig.out_adapter_init,
        metadata={"help": "normal (the paper) or ridge (closed-form ridge fit of out_adapter on teacher-forced "
                          "sequences of the first 256 training pairs, before the first step).",
                  "choices": OUT_ADAPTER_INITS},
    )
    teacher_forced_noise: float = field(
        default=LM4LVConfig.teacher_forced_noise,
        metadata={"help": "Std of Gaussian noise on the teacher-forced answer features in training (0 = paper)."},
    )
    pixel_loss_weight: float = field(
        default=LM4LVConfig.pixel_loss_weight,
        metadata={"help": "Weight of an extra pixel MSE through the frozen vision decoder (0 = paper)."},
    )
    visual_skip_connection: bool = field(
        default=LM4LVConfig.visual_skip_connection,
        metadata={"help": "Extension: predict input feature + out_adapter(hidden) (off = paper)."},
    )
    llm_dtype: str = field(default="float32", metadata={"help": "Dtype of the frozen LLM.", "choices": LLM_DTYPES})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside --llm, if the LLM is GGUF."})
    resume_weights: str | None = field(default=None, metadata={"help": "Start from a trained LM4LV checkpoint."})


@dataclass
class DataArguments:
    """The data options of `lm4lv train`."""

    task: str = field(default="denoise", metadata={"help": "Task, or comma-separated mixture of tasks."})
    dataset: str | None = field(
        default=None, metadata={"help": "datasets name/path or an image folder; default: the bundled corpus."}
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
    config_kwargs = dict(
        task_token_length=model_args.task_token_length,
        vision_loss_weight=model_args.vision_loss_weight,
        visual_skip_connection=model_args.visual_skip_connection,
    )
    lm4lv_kwargs = dict(delimiter_loss_weight=model_args.delimiter_loss_weight,
                        in_adapter_init=model_args.in_adapter_init, out_adapter_init=model_args.out_adapter_init,
                        teacher_forced_noise=model_args.teacher_forced_noise,
                        pixel_loss_weight=model_args.pixel_loss_weight)
    if model_args.method == "random_init_llm" and not model_args.resume_weights:
        llm = random_init_llm(llm, os.path.join(output_dir, "random_init_llm"), llm_kwargs=llm_kwargs)
        llm_kwargs = {}
    if model_args.resume_weights:
        model = AutoModel.from_pretrained(model_args.resume_weights, dtype=dtype)
    elif model_args.method in EXPERTS:
        model = LM4LVExpertModel.from_llm_and_vision(llm, model_args.vision, model_args.method, tasks, llm_kwargs,
                                                     **config_kwargs)
    else:
        model_class = LM4LVViTLLMModel if model_args.method == "vit_llm" else LM4LVForConditionalGeneration
        model = model_class.from_base_models(
            llm,
            model_args.vision,
            task_names=tasks,
            dtype=dtype,
            llm_kwargs=llm_kwargs,
            task_token_init=model_args.task_token_init,
            task_token_init_text=model_args.task_token_init_text,
            lora_r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            **lm4lv_kwargs,
            **config_kwargs,
        )
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
    images = load_image_dataset(data_args.dataset, data_args.dataset_split, data_args.streaming)
    check_image_column(images, data_args.image_column)  # a dataset without images is refused before the model loads
    if data_args.device_batches and data_args.streaming:
        raise ValueError("--device_batches decodes the whole corpus into device memory: it cannot stream")
    set_seed(training_args.seed)  # the fresh adapters and task tokens are initialised reproducibly
    model, processor = build_model_and_processor(model_args, tasks, training_args.output_dir)
    epochs = 1 if data_args.streaming else degradation_epochs(training_args, len(images))
    train_dataset = paired_dataset(
        images, tasks, model.config.vision_config.image_size, data_args.degradation_seed, data_args.image_column,
        epochs=epochs,
    )
    if getattr(model.config, "in_adapter_init", "normal") == "embedding_subspace" and not model_args.resume_weights:
        fit_in_adapter_to_embeddings(model, processor, train_dataset)
    if getattr(model.config, "out_adapter_init", "normal") == "ridge" and not model_args.resume_weights:
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

