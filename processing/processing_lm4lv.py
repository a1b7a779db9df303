"""Processor of LM4LV: tokenizer + image processor + the authors' "###" template."""

import os

import numpy as np
import torch
from PIL import Image
from transformers import AutoConfig, AutoTokenizer, BatchFeature, ProcessorMixin

from lm4lv.modeling_lm4lv.checkpointing import base_model_location
from lm4lv.modeling_lm4lv.configuration_lm4lv import image_size_pair
from lm4lv.modeling_lm4lv.hub_files import check_hub_location
from lm4lv.modeling_lm4lv.loss_lm4lv import IGNORE_INDEX
from lm4lv.modeling_lm4lv.shipped import resolve_model_location
from lm4lv.modeling_lm4lv.vision import image_normalisation, normalise, unnormalise
from lm4lv.processing.images import load_rgb_image

PROCESSOR_CONFIG_NAME = "processor_config.json"  # what `save_pretrained` writes next to the tokenizer's files


class LM4LVProcessor(ProcessorMixin):
    r"""
    Builds LM4LV prompts and training examples in the authors' template:

        <bos>### Human: <Img>[LQ visual tokens]</Img>[task tokens]
        ### Assistant: <Img>[HQ visual tokens]</Img>
        ###<eos>

    Visual and task positions hold negative placeholder ids (`image_token_id`, `task_token_id`) that the model
    replaces with embeddings; `<Img>`/`</Img>` are ordinary text. Each text piece is tokenised on its own, so the
    answer's `<Img>` ids are exactly `config.image_start_token_ids`, the ids `generate()` watches for.

    Every value the model also needs (tasks, task-token length, visual tokens per image, placeholder ids, image
    delimiters and their token ids) is read from the model's config, which the processor holds: build it with
    [`from_config`] or load it with [`from_pretrained`] (which reads the checkpoint's `config.json`). Its own
    `processor_config.json` holds only the template's text pieces.

    Args:
        image_processor: An image processor that resizes to the vision module's input size and normalises
            (e.g. `ViTImageProcessorPil` with ImageNet mean/std, as ViT-MAE uses).
        tokenizer: The base LLM's tokenizer.
        model_config ([`LM4LVConfig`]): The model's config.
        human_prefix (`str`), assistant_prefix (`str`), answer_suffix (`str`): Template pieces.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        model_config=None,
        human_prefix: str = "### Human: ",
        assistant_prefix: str = "\n### Assistant: ",
        answer_suffix: str = "\n###",
        chat_template=None,
        **kwargs,
    ):
        self.human_prefix = human_prefix
        self.assistant_prefix = assistant_prefix
        self.answer_suffix = answer_suffix
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self._model_config = None  # not saved in processor_config.json: the checkpoint's config.json is the source
        if model_config is not None:
            self.bind_model_config(model_config)

    def bind_model_config(self, model_config) -> "LM4LVProcessor":
        """Read every shared value from `model_config` from now on, setting (or checking) its `<Img>`/`</Img>` token
        ids with this processor's tokenizer."""
        model_config.set_image_delimiter_ids(self.tokenizer)
        mean, std = image_normalisation(model_config.vision_config)
        own = tuple(self.image_processor.image_mean), tuple(self.image_processor.image_std)
        if not torch.allclose(torch.tensor(own), torch.tensor((mean, std))):
            raise ValueError(
                f"The image processor normalises with mean {list(own[0])} / std {list(own[1])}, but the vision module "
                f"expects mean {list(mean)} / std {list(std)}: build the processor with LM4LVProcessor.from_config"
            )
        self._model_config = model_config
        return self

    @classmethod
    def from_config(cls, config, tokenizer, image_processor=None, **kwargs) -> "LM4LVProcessor":
        """Processor for a model with config `config` (which it keeps; its `<Img>`/`</Img>` token ids are set from
        `tokenizer`). Defaults to an image processor of the vision module's input size and normalisation."""
        if image_processor is None:
            from transformers import ViTImageProcessorPil

            height, width = image_size_pair(config.vision_config.image_size)
            mean, std = image_normalisation(config.vision_config)
            image_processor = ViTImageProcessorPil(
                size={"height": height, "width": width}, image_mean=list(mean), image_std=list(std)
            )
        return cls(image_processor=image_processor, tokenizer=tokenizer, model_config=config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, model_config=None, **kwargs) -> "LM4LVProcessor":
        """Load the processor of a checkpoint (a folder, a Hub id or a shipped model's name), bound to the checkpoint's
        own `config.json` (or to `model_config`,
        e.g. the loaded model's config). A local checkpoint saved without processor files (`model.save_pretrained`
        alone) gets the processor rebuilt from its config and the base LLM's tokenizer, which the config names."""
        pretrained_model_name_or_path = resolve_model_location(pretrained_model_name_or_path)
        check_hub_location(pretrained_model_name_or_path, "checkpoint")
        if model_config is None:
            hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
            try:
                model_config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"{pretrained_model_name_or_path} has no LM4LV config.json: the processor takes the tasks and the "
                    "other shared values from the model's config. Save the model into the same folder, or pass "
                    "model_config=model.config"
                ) from error
        folder = str(pretrained_model_name_or_path)
        if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, PROCESSOR_CONFIG_NAME)):
            llm = base_model_location(model_config.text_model_name_or_path, folder, "LLM")
            if not llm:
                raise ValueError(f"{folder} has no {PROCESSOR_CONFIG_NAME} and its config names no base LLM whose "
                                 "tokenizer could rebuild the processor: save the processor into the folder")
            return cls.from_config(model_config, AutoTokenizer.from_pretrained(llm))
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs).bind_model_config(model_config)

    @property
    def model_config(self):
        """The bound model config; a clear error if there is none."""
        if self._model_config is None:
            raise ValueError(
                "This LM4LVProcessor has no model config: build it with LM4LVProcessor.from_config(model.config, "
                "tokenizer) or load it with LM4LVProcessor.from_pretrained(checkpoint)"
            )
        return self._model_config

    @property
    def task_names(self) -> list[str]:
        return self.model_config.task_names

    # ------------------------------------------------------------------ template

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _prefix_special_ids(self) -> list[int]:
        """Special ids the tokenizer puts before text (e.g. LLaMA's BOS; none for GPT-2 or SmolLM2)."""
        return self.tokenizer("", add_special_tokens=True).input_ids

    def _image_span(self) -> list[int]:
        config = self.model_config
        visual = [config.image_token_id] * config.num_visual_tokens
        return config.image_start_token_ids + visual + config.image_end_token_ids

    def prompt_ids(self, instruction: str = "") -> list[int]:
        """Ids of the prompt up to and including `### Assistant: `, with an optional free-text instruction
        before the image (none in the paper's template)."""
        return (
            self._prefix_special_ids()
            + self._encode(self.human_prefix)
            + (self._encode(instruction + " ") if instruction else [])
            + self._image_span()
            + [self.model_config.task_token_id] * self.model_config.task_token_length
            + self._encode(self.assistant_prefix)
        )

    def answer_ids(self) -> list[int]:
        """Ids of the answer `<Img>[HQ]</Img>\\n###<eos>`; all of them are supervised."""
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        return self._image_span() + self._encode(self.answer_suffix) + eos

    @property
    def pad_token_id(self) -> int:
        """Id used for left padding (the tokenizer's pad, else EOS, else 0); masked out by `attention_mask`."""
        for token_id in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if token_id is not None:
                return token_id
        return 0

    # ------------------------------------------------------------------ images

    @property
    def image_size(self) -> tuple[int, int]:
        size = self.image_processor.size
        return size["height"], size["width"]

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """`(mean, std)` of the vision module's input space, from the model config (`vision.image_normalisation`),
        the one source MAE-r, the device batches and this processor read."""
        return image_normalisation(self.model_config.vision_config)

    def preprocess_images(self, images) -> torch.Tensor:
        """
        Normalised `pixel_values` `(batch, 3, H, W)` from PIL images (RGB, any size from `min_image_size` (the
        vision module's patch size) up, non-square included; the whole image is resized to the model's input size, as
        the paper does) or from a float tensor `(batch, 3, H, W)` in [0, 1] that already has the model's input size.
        Load files with `lm4lv.processing.images.load_rgb_image`, which converts every common mode to RGB. For images
        much larger than the input size, `lm4lv restore` restores tile by tile instead.
        """
        if isinstance(images, torch.Tensor):
            images = images if images.dim() == 4 else images[None]
            if images.shape[0] == 0:
                raise ValueError("No images given: the image tensor has batch size 0; pass at least one image")
            if images.shape[1:] != (3, *self.image_size):
                raise ValueError(
                    f"Image tensors must have shape (batch, 3, {self.image_size[0]}, {self.image_size[1]}) to match "
                    f"the vision config, got {tuple(images.shape)}"
                )
            if not torch.isfinite(images).all():
                raise ValueError("Image tensor contains NaN or inf")
            if images.min() < 0 or images.max() > 1:
                raise ValueError(
                    f"Image tensors must be in [0, 1], got values in [{images.min():.3g}, {images.max():.3g}]"
                )
            return normalise(images.float(), *self.normalisation)
        images = images if isinstance(images, (list, tuple)) else [images]
        if not images:
            raise ValueError("No images given: pass at least one image")
        # numpy arrays follow the package's image policy (uint8 in [0, 255] or float in [0, 1]; rescaled once)
        images = [load_rgb_image(image) if isinstance(image, np.ndarray) else image for image in images]
        for index, image in enumerate(images):
            if isinstance(image, Image.Image) and image.mode != "RGB":
                raise ValueError(
                    f"Image {index} has mode {image.mode!r}; LM4LV expects RGB (convert with "
                    "lm4lv.processing.images.load_rgb_image, which documents the policy for each mode)"
                )
            if isinstance(image, Image.Image) and min(image.size) < self.model_config.vision_config.patch_size:
                raise ValueError(
                    f"Image {index} is {image.size[0]}x{image.size[1]} pixels, smaller than the vision module's "
                    f"patch size {self.model_config.vision_config.patch_size}: too small to restore"
                )
        return self.image_processor(images, return_tensors="pt")["pixel_values"].float()

    def to_unit_range(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Undo the normalisation: images in [0, 1] (clamped)."""
        if not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values contain NaN or inf (a sample that produced no image?)")
        pixel_values = pixel_values.float().cpu()
        return unnormalise(pixel_values, *self.normalisation).clamp(0, 1)

    def postprocess(self, pixel_values: torch.Tensor) -> list[Image.Image]:
        """PIL RGB images from normalised `pixel_values` (e.g. `model.generate(...).pixel_values`)."""
        images = (self.to_unit_range(pixel_values) * 255).round().to(torch.uint8)
        return [Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())) for image in images]

    # ------------------------------------------------------------------ batches

    def task_ids(self, task, batch_size: int) -> torch.LongTensor:
        """Task indices for a task name or a list of names (one per sample)."""
        if not isinstance(task, (str, list, tuple)) or not all(isinstance(name, str) for name in task):
            raise ValueError(
                f"task must be a task name or a list of names (one per image) from {self.task_names}, got {task!r}"
            )
        tasks = [task] * batch_size if isinstance(task, str) else list(task)
        if len(tasks) != batch_size:
            raise ValueError(f"Got {len(tasks)} task names for {batch_size} images")
        return torch.tensor([self.model_config.task_index(name) for name in tasks], dtype=torch.long)

    def _pad_left(self, rows: list[list[int]], value: int) -> torch.LongTensor:
        width = max(len(row) for row in rows)
        return torch.tensor([[value] * (width - len(row)) + row for row in rows], dtype=torch.long)

    def __call__(
        self, images=None, targets=None, task=None, instructions=None, return_tensors: str = "pt", **kwargs
    ) -> BatchFeature:
        r"""
        Build a prompt batch (`targets=None`, for `generate`) or a training batch (with `labels`).

        Args:
            images: Degraded images: a PIL image, a list of them, or a float tensor `(batch, 3, H, W)` in [0, 1].
            targets: Clean images of the same kind and number (training only).
            task (`str` or `list[str]`): Task name for all samples, or one per sample. Defaults to the only task.
            instructions (`str` or `list[str]`, *optional*): Free text before the image, for all samples or one per
                sample (the paper uses none). Prompts of different lengths are left-padded.
            return_tensors (`str`): Only `"pt"` is supported.

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask`, `pixel_values`, `task_ids`, and for training
            `target_pixel_values` and `labels` (answer token ids, `image_token_id` at target visual tokens,
            -100 elsewhere).
        """
        if return_tensors != "pt":
            raise ValueError(f"Only return_tensors='pt' is supported, got {return_tensors!r}")
        if images is None:
            raise ValueError("LM4LVProcessor needs images")
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}")
        if task is None:
            if len(self.task_names) != 1:
                raise ValueError(f"Pass task=... (one of {self.task_names})")
            task = self.task_names[0]
        pixel_values = self.preprocess_images(images)
        batch_size = pixel_values.shape[0]
        instructions = instructions or ""
        instructions = [instructions] * batch_size if isinstance(instructions, str) else list(instructions)
        if len(instructions) != batch_size:
            raise ValueError(f"Got {len(instructions)} instructions for {batch_size} images")
        prompts = [self.prompt_ids(instruction) for instruction in instructions]
        data = {"pixel_values": pixel_values, "task_ids": self.task_ids(task, batch_size)}
        if targets is None:
            data.update(
                input_ids=self._pad_left(prompts, self.pad_token_id),
                attention_mask=self._pad_left([[1] * len(p) for p in prompts], 0),
            )
            return BatchFeature(data=data)
        target_pixel_values = self.preprocess_images(targets)
        if target_pixel_values.shape != pixel_values.shape:
            raise ValueError(
                f"targets {tuple(target_pixel_values.shape)} do not match images {tuple(pixel_values.shape)}"
            )
        answer = self.answer_ids()
        data.update(
            input_ids=self._pad_left([p + answer for p in prompts], self.pad_token_id),
            attention_mask=self._pad_left([[1] * (len(p) + len(answer)) for p in prompts], 0),
            labels=self._pad_left([[IGNORE_INDEX] * len(p) + answer for p in prompts], IGNORE_INDEX),
            target_pixel_values=target_pixel_values,
        )
        return BatchFeature(data=data)

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """Decode generated ids to text, dropping the negative visual/task placeholders."""
        sequences = sequences.tolist() if isinstance(sequences, torch.Tensor) else sequences
        return self.tokenizer.batch_decode([[t for t in seq if t >= 0] for seq in sequences], **kwargs)


__all__ = ["LM4LVProcessor"]
