"""`transformers.Trainer` for LM4LV: logs the text and vision losses apart, checkpoints trainable weights only."""

import contextlib
import functools
import inspect
import os
import shutil
from dataclasses import dataclass, field

import torch
from accelerate.utils import save_fsdp_optimizer
from transformers import Trainer, TrainingArguments
from transformers.trainer import SCHEDULER_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
from lm4lv.modeling_lm4lv.checkpointing import is_trainable_only
from lm4lv.modeling_lm4lv.engines import (
    check_distributed_engine,
    gather_trainable_state_dict,
    is_fsdp1,
    load_trainable_weights,
)
from lm4lv.modeling_lm4lv.hub_files import SAFE_WEIGHTS_NAME
from lm4lv.processing.data import PairedStream
from lm4lv.processing.device_data import DevicePairedBatches


@dataclass
class LM4LVTrainingArguments(TrainingArguments):
    r"""
    `TrainingArguments` with the paper's recipe as defaults: AdamW betas (0.9, 0.95), lr 3e-4, weight decay 0,
    200 warmup steps then cosine decay, gradient clipping 1.0; on a GPU, non-blocking copies and no per-step NaN/inf
    loss filter (a device synchronisation). TF32 stays off unless asked for (`tf32=True`, `--tf32 true`): it is a
    process-wide setting, which would also change every float32 matmul of a later `generate()` in the process. With
    `torch_compile`, what cannot be compiled runs eagerly with torch's warning (dynamo's `suppress_errors`, set only
    around the compiled model's calls) instead of failing the run.
    `remove_unused_columns=False` because batches carry image tensors the model's signature names differently.
    """

    learning_rate: float = field(default=3e-4)
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.95)
    weight_decay: float = field(default=0.0)
    warmup_steps: float = field(default=200)
    lr_scheduler_type: str = field(default="cosine")
    max_grad_norm: float = field(default=1.0)
    remove_unused_columns: bool = field(default=False)
    logging_nan_inf_filter: bool | None = field(
        default=None, metadata={"help": "Filter NaN/inf losses out of the logs; default: on, except on a GPU."}
    )
    identity_curriculum_steps: int = field(
        default=0,
        metadata={"help": "Sample-efficiency lever: for this many first optimizer steps the target is the degraded "
                          "input itself, so the adapters first learn to copy through the frozen LLM (0 = paper)."},
    )

    def __post_init__(self):
        # on a GPU: host-to-device copies that do not wait (the data loader pins memory by default) and no per-step
        # NaN/inf loss filter (its isnan/isinf test waits for the GPU every step); the CPU's defaults are left as
        # they are
        on_gpu = not self.use_cpu and torch.cuda.is_available()
        if self.logging_nan_inf_filter is None:
            self.logging_nan_inf_filter = not on_gpu
        if on_gpu and self.accelerator_config is None:
            self.accelerator_config = {"non_blocking": True}
        super().__post_init__()


class LM4LVTrainer(Trainer):
    r"""
    A `Trainer` that

    - logs `text_loss` and `vision_loss` (averaged over the logging interval) next to `loss`;
    - trains on identity pairs (target = the degraded input) for the first `args.identity_curriculum_steps` steps;
    - saves checkpoints as trainable weights only (safetensors), with the config naming the base models;
    - refuses to train when the launch asked for FSDP, DeepSpeed or several processes and did not get them;
    - refuses persistent data loader workers on a streamed dataset (`PairedStream`), which would repeat one epoch's
      degradations;
    - resumes from such checkpoints (`resume_from_checkpoint`), restoring adapters and task tokens exactly;
    - writes each checkpoint atomically: everything goes to a staging folder that is renamed to `checkpoint-N` once
      complete (after every process has written its part), so a run killed mid-save leaves the previous
      checkpoints intact and `resume_from_checkpoint=True` never picks a half-written one.
    """

    staging_dir_name = ".checkpoint-staging"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_distributed_engine(self.accelerator)
        if (isinstance(self.train_dataset, PairedStream) and self.args.dataloader_persistent_workers
                and self.args.dataloader_num_workers):
            raise ValueError("A streamed dataset (PairedStream, --streaming) draws fresh degradations in every pass, "
                             "which persistent data loader workers would not see: set dataloader_persistent_workers "
                             "to False")
        self._loss_sums = {"text_loss": 0.0, "vision_loss": 0.0}  # float64 device tensors between logs
        self._loss_count = 0
        forward = self.accelerator.unwrap_model(self.model).forward
        self._checks_inputs = "check_inputs" in inspect.signature(forward).parameters
        self._checked_first_batch = False
        self._loss_sum_dtype = torch.float32 if self.args.device.type == "mps" else torch.float64  # MPS has no float64

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and self.state.global_step < self.args.identity_curriculum_steps:
            inputs = {**inputs, "target_pixel_values": inputs["pixel_values"]}
        if self._checks_inputs and model.training:
            # the first training batch is checked (it shows a wrong collator at once); later ones, built the same
            # way, are not, so that a step never waits for the device to answer a check. A compiled model only ever
            # sees check_inputs=False (one compilation, no graph breaks at the checks): the eager model checks the
            # first batch in a forward of its own
            if not self._checked_first_batch and self.args.torch_compile:
                with torch.no_grad():
                    self.accelerator.unwrap_model(model, keep_torch_compile=False)(**inputs, check_inputs=True)
            inputs = {**inputs, "check_inputs": not (self._checked_first_batch or self.args.torch_compile)}
            self._checked_first_batch = True
        # under torch_compile, a part that cannot be compiled runs eagerly with torch's warning instead of failing the
        # run; the setting holds for these calls only (it is dynamo's, process-wide)
        with torch._dynamo.config.patch(suppress_errors=True) if self.args.torch_compile else contextlib.nullcontext():
            outputs = model(**inputs)
        if model.training:
            for name in self._loss_sums:
                self._loss_sums[name] += getattr(outputs, name).detach().to(self._loss_sum_dtype)
            self._loss_count += 1
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def get_train_dataloader(self):
        """The `Trainer`'s data loader, except for `DevicePairedBatches`, whose batches are read as they are (made on
        the device already: no collator, workers or copies)."""
        if not isinstance(self.train_dataset, DevicePairedBatches):
            return super().get_train_dataloader()
        stream = self.train_dataset
        expected = (self._train_batch_size, self.args.process_index, self.args.world_size)
        if (stream.batch_size, stream.process_index, stream.num_processes) != expected:
            raise ValueError(
                f"DevicePairedBatches makes batches of {stream.batch_size} for process {stream.process_index} of "
                f"{stream.num_processes}, but this run has batches of {expected[0]} for process {expected[1]} of "
                f"{expected[2]}: build it with the run's per_device_train_batch_size and process"
            )
        return torch.utils.data.DataLoader(stream, batch_size=None)

    @functools.cached_property
    def _non_embedding_parameters(self) -> int:
        return self.model.num_parameters(exclude_embeddings=True) if hasattr(self.model, "num_parameters") else 0

    def floating_point_ops(self, inputs: dict) -> int:
        """The `Trainer`'s estimate, 6 x input tokens x non-embedding parameters, with the parameters counted once
        rather than by a walk over the model at every step."""
        return 6 * inputs["input_ids"].numel() * self._non_embedding_parameters if "input_ids" in inputs else 0

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._loss_count:
            # every process logs here (after the Trainer's own loss gather), so the parts are averaged the same way
            means = torch.stack([torch.as_tensor(total, device=self.args.device) / self._loss_count
                                 for total in self._loss_sums.values()])
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

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the trainable weights (gathered whole from every process's shards under FSDP or DeepSpeed), the config
        naming the base models and the processor: a folder that `from_pretrained` loads. The frozen LLM and vision
        module are never written. Every process must call it (the gather is a collective). Models without that
        checkpoint format (the no-LLM expert baselines) are saved whole, as the `Trainer` does."""
        if not isinstance(self.accelerator.unwrap_model(self.model_wrapped), LM4LVForConditionalGeneration):
            return super().save_model(output_dir, _internal_call)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        state_dict = gather_trainable_state_dict(self.accelerator, self.model_wrapped)
        self._save(output_dir, state_dict=state_dict)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            return super()._save_optimizer_and_scheduler(output_dir)
        # The model's part of a checkpoint is save_model's trainable-only file: accelerate's save_fsdp_model, and a
        # DeepSpeed engine checkpoint unless told otherwise, would write the whole model, frozen LLM included.
        if is_fsdp1(self.accelerator):
            # torch's FSDP1 optimizer state dicts lose Adam's moments on the CPU when loaded (DCP fills an empty
            # template; the full path overwrites exp_avg with exp_avg_sq): each process saves its own shard's state,
            # which a resume with the same processes and wrapping loads as it is
            os.makedirs(output_dir, exist_ok=True)  # every process writes here, maybe before rank 0 created it
            torch.save(self.optimizer.state_dict(), self.fsdp1_optimizer_file(output_dir))
        elif self.is_fsdp_enabled:
            save_fsdp_optimizer(self.accelerator.state.fsdp_plugin, self.accelerator, self.optimizer, self.model,
                                output_dir)
        else:
            self.model_wrapped.save_checkpoint(output_dir, exclude_frozen_parameters=True)
        if self.args.should_save and not self.lr_scheduler_is_deepspeeds():
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))

    def fsdp1_optimizer_file(self, checkpoint: str) -> str:
        return os.path.join(checkpoint, f"optimizer_shard_{self.args.process_index}_of_{self.args.world_size}.pt")

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not is_fsdp1(self.accelerator):
            return super()._load_optimizer_and_scheduler(checkpoint)
        optimizer_file = self.fsdp1_optimizer_file(checkpoint)
        if not os.path.isfile(optimizer_file):
            raise FileNotFoundError(
                f"{optimizer_file} is missing: an FSDP1 checkpoint resumes with the number of processes that wrote it"
            )
        self.optimizer.load_state_dict(torch.load(optimizer_file, weights_only=True))
        self.lr_scheduler.load_state_dict(torch.load(os.path.join(checkpoint, SCHEDULER_NAME), weights_only=True))

    def lr_scheduler_is_deepspeeds(self) -> bool:
        """Whether DeepSpeed's engine owns the LR scheduler (then its checkpoint holds it)."""
        if not self.is_deepspeed_enabled:
            return False
        from accelerate.utils import DeepSpeedSchedulerWrapper

        return isinstance(self.lr_scheduler, DeepSpeedSchedulerWrapper)

    def _prepare_for_training(self, max_steps, train_dataloader, resume_from_checkpoint):
        if not (self.is_deepspeed_enabled and resume_from_checkpoint is not None):
            return super()._prepare_for_training(max_steps, train_dataloader, resume_from_checkpoint)
        # DeepSpeed checkpoints exclude the frozen parameters, which transformers' strict engine resume refuses: the
        # engine state (optimizer, step) is loaded without strictness, then the trainable weights from our file.
        model, train_dataloader = super()._prepare_for_training(max_steps, train_dataloader, None)
        load_path, _ = self.model_wrapped.load_checkpoint(resume_from_checkpoint, load_module_strict=False,
                                                          load_optimizer_states=True, load_lr_scheduler_states=True)
        if load_path is None:
            raise ValueError(f"{resume_from_checkpoint} holds no DeepSpeed engine checkpoint (global_step*)")
        self._load_from_checkpoint(resume_from_checkpoint, self.model_wrapped)
        self._load_optimizer_and_scheduler(resume_from_checkpoint)
        self._load_scaler(resume_from_checkpoint)
        return model, train_dataloader

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = model if model is not None else self.model
        weights_file = os.path.join(resume_from_checkpoint, SAFE_WEIGHTS_NAME)
        if os.path.isfile(weights_file) and is_trainable_only(weights_file):
            load_trainable_weights(self.accelerator, model, weights_file)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)


__all__ = ["LM4LVTrainer", "LM4LVTrainingArguments"]
