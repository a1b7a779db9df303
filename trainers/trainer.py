"""`transformers.Trainer` for LM4LV: logs the text and vision losses apart, checkpoints trainable weights only."""

import os
import shutil
from dataclasses import dataclass, field

import torch
from accelerate.utils import DistributedType
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from lm4lv.modeling_lm4lv.modeling_lm4lv import SAFE_WEIGHTS_NAME, is_trainable_only


@dataclass
class LM4LVTrainingArguments(TrainingArguments):
    r"""
    `TrainingArguments` with the paper's recipe as defaults: AdamW betas (0.9, 0.95), lr 3e-4, weight decay 0,
    200 warmup steps then cosine decay, gradient clipping 1.0. `remove_unused_columns=False` because batches carry
    image tensors the model's signature names differently.
    """

    learning_rate: float = field(default=3e-4)
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.95)
    weight_decay: float = field(default=0.0)
    warmup_steps: float = field(default=200)
    lr_scheduler_type: str = field(default="cosine")
    max_grad_norm: float = field(default=1.0)
    remove_unused_columns: bool = field(default=False)
    identity_curriculum_steps: int = field(
        default=0,
        metadata={"help": "Sample-efficiency lever: for this many first optimizer steps the target is the degraded "
                          "input itself, so the adapters first learn to copy through the frozen LLM (0 = paper)."},
    )


# engine -> (the environment variable `accelerate launch` sets when a config asks for it, its DistributedType)
REQUESTED_ENGINES = {"FSDP": ("ACCELERATE_USE_FSDP", DistributedType.FSDP),
                     "DeepSpeed": ("ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED)}


def check_distributed_engine(accelerator):
    """Stop with a clear error when the launch asked for an engine (FSDP, DeepSpeed) or for several processes but
    accelerate set up something else, instead of silently training another way (e.g. accelerate turns an FSDP config
    into plain DDP on the CPU, and a script started without its launcher runs as one process)."""
    for engine, (variable, distributed_type) in REQUESTED_ENGINES.items():
        if os.environ.get(variable, "false").lower() == "true" and accelerator.distributed_type != distributed_type:
            raise RuntimeError(
                f"The launch asked for {engine} ({variable}=true) but accelerate set up "
                f"{accelerator.distributed_type.value}: nothing would be sharded. accelerate switches to {engine} only "
                "on the devices it supports for it (not for --use_cpu); check the launch config and the device."
            )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and accelerator.num_processes != world_size:
        raise RuntimeError(
            f"The launcher started {world_size} processes (WORLD_SIZE) but this one trains as "
            f"{accelerator.num_processes}: each would train its own copy of the model"
        )


class LM4LVTrainer(Trainer):
    r"""
    A `Trainer` that

    - logs `text_loss` and `vision_loss` (averaged over the logging interval) next to `loss`;
    - trains on identity pairs (target = the degraded input) for the first `args.identity_curriculum_steps` steps;
    - saves checkpoints as trainable weights only (safetensors), with the config naming the base models;
    - refuses to train when the launch asked for FSDP, DeepSpeed or several processes and did not get them;
    - resumes from such checkpoints (`resume_from_checkpoint`), restoring adapters and task tokens exactly;
    - writes each checkpoint atomically: everything goes to a staging folder that is renamed to `checkpoint-N` once
      complete (after every process has written its part), so a run killed mid-save leaves the previous
      checkpoints intact and `resume_from_checkpoint=True` never picks a half-written one.
    """

    staging_dir_name = ".checkpoint-staging"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_distributed_engine(self.accelerator)
        self._loss_sums = {"text_loss": 0.0, "vision_loss": 0.0}
        self._loss_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and self.state.global_step < self.args.identity_curriculum_steps:
            inputs = {**inputs, "target_pixel_values": inputs["pixel_values"]}
        outputs = model(**inputs)
        if model.training:
            self._loss_sums["text_loss"] += outputs.text_loss.detach().item()
            self._loss_sums["vision_loss"] += outputs.vision_loss.detach().item()
            self._loss_count += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_count:
            # every process logs here (after the Trainer's own loss gather), so the parts are averaged the same way
            means = torch.tensor([total / self._loss_count for total in self._loss_sums.values()],
                                 device=self.args.device)
            means = self.accelerator.reduce(means, reduction="mean")
            for name, value in zip(self._loss_sums, means.tolist()):
                logs[name] = round(value, 6)
            self._loss_sums = dict.fromkeys(self._loss_sums, 0.0)
            self._loss_count = 0
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = self._get_output_dir(trial=trial)
        staging = os.path.join(run_dir, self.staging_dir_name)
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)
        self.accelerator.wait_for_everyone()  # no process writes into a staging folder that is about to be removed
        output_dir, save_total_limit = self.args.output_dir, self.args.save_total_limit
        self.args.output_dir, self.args.save_total_limit = staging, None  # the parent writes into the staging folder
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir, self.args.save_total_limit = output_dir, save_total_limit
        self.accelerator.wait_for_everyone()  # every process has written its files (e.g. its RNG state)
        if not self.args.should_save:
            return
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        final = os.path.join(run_dir, name)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(os.path.join(staging, name), final)
        shutil.rmtree(staging, ignore_errors=True)
        if self.state.best_model_checkpoint and self.state.best_model_checkpoint.startswith(staging):
            self.state.best_model_checkpoint = final
        rotate_checkpoints(output_dir=run_dir, save_total_limit=save_total_limit,
                           best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model if model is not None else self.model
        weights_file = os.path.join(resume_from_checkpoint, SAFE_WEIGHTS_NAME)
        if os.path.isfile(weights_file) and is_trainable_only(weights_file):
            self.accelerator.unwrap_model(model).load_trainable_weights(weights_file)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)


__all__ = ["LM4LVTrainer", "LM4LVTrainingArguments"]
