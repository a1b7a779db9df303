"""Training batches built on the accelerator: the clean images decoded once into one device tensor, each batch drawn,
degraded (`batched_degradations`) and normalised there, the template tokenised once. For corpora that fit in device
memory (the bundled corpus: a few MB; 1.2 million 32x32 crops: 3.7 GB as uint8), when the per-sample path of
`data.paired_dataset` (PNG decoding, one CPU generator per sample, host-to-device copies) would bound a GPU step.
"""

import torch

from lm4lv.modeling_lm4lv.loss_lm4lv import IGNORE_INDEX, text_label_positions
from lm4lv.modeling_lm4lv.vision import normalise

from .batched_degradations import degrade_batch
from .data import check_image_column
from .degradations import TASKS, sample_seed
from .images import load_rgb_image, to_tensor


def decode_images(dataset, image_size: int | tuple[int, int], image_column: str = "image", device=None) -> torch.Tensor:
    """`(N, 3, S, S)` uint8 tensor on `device` of a dataset's images, through the package's image policy and resized
    as `PairedTransform` resizes them (lossless: those tensors are multiples of 1/255)."""
    check_image_column(dataset, image_column)
    images = [
        (to_tensor(load_rgb_image(example[image_column], name=f"sample {index}"), image_size) * 255).round()
        for index, example in enumerate(dataset)
    ]
    if not images:
        raise ValueError("The dataset has no images to train on")
    return torch.stack(images).to(torch.uint8).to(device)


class DevicePairedBatches(torch.utils.data.IterableDataset):
    r"""
    An endless stream of training batches made on the device of `images`, each already the batch
    `LM4LVForConditionalGeneration.forward` takes (`input_ids`, `labels`, `text_label_positions`, `pixel_values`,
    `target_pixel_values`, `task_ids`; no padding, so no `attention_mask`). `LM4LVTrainer` reads it as it is (no
    collator, no workers, no copies).

    Batch `b` of process `p` depends on `(seed, p, b)` alone: its images are the next `batch_size` of a per-epoch
    permutation of the corpus (the processes of one step take disjoint slices of a global batch), its tasks are drawn
    uniformly from `tasks` and its degradations have their own generator. So a run repeats exactly and a resumed run
    skips to the same batches. The maths is the per-sample path's (template, tasks, degradation distributions); its
    random numbers are not.

    Args:
        images (`torch.Tensor`): `(N, 3, S, S)` uint8 clean images on the training device (`decode_images`).
        processor ([`LM4LVProcessor`]): Gives the template and the normalisation.
        tasks (`list[str]`): Task names, a uniform mixture.
        batch_size (`int`): Samples per batch and process.
        seed (`int`): Global seed.
        params (`dict`, *optional*): Fixed degradation parameters per task.
        process_index, num_processes (`int`): This process among those that train together.
    """

    def __init__(self, images: torch.Tensor, processor, tasks, batch_size: int, seed: int = 0, params=None,
                 process_index: int = 0, num_processes: int = 1):
        super().__init__()
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        if not tasks or any(task not in TASKS for task in tasks):
            raise ValueError(f"Unknown task(s) in {tasks}; choose from {list(TASKS)}")
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (N, 3, S, S) uint8 tensor (decode_images), got {images.dtype} "
                             f"{tuple(images.shape)}")
        self.images, self.tasks, self.batch_size, self.seed = images, tasks, batch_size, seed
        self.params, self.process_index, self.num_processes = params or {}, process_index, num_processes
        self.task_ids = torch.tensor([processor.model_config.task_index(task) for task in tasks], device=images.device)
        self.mean, self.std = (torch.tensor(values, device=images.device) for values in processor.normalisation)
        prompt, answer = processor.prompt_ids(), processor.answer_ids()
        labels = torch.tensor([[IGNORE_INDEX] * len(prompt) + answer], device=images.device)
        self.template = {
            "input_ids": torch.tensor([prompt + answer], device=images.device),
            "labels": labels,
            "text_label_positions": text_label_positions(labels),
        }
        self._permutations = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        """The corpus order of `epoch` (the last two epochs' are kept)."""
        if epoch not in self._permutations:
            generator = torch.Generator(self.images.device).manual_seed(sample_seed(self.seed, epoch, "order"))
            order = torch.randperm(len(self.images), generator=generator, device=self.images.device)
            self._permutations = {e: p for e, p in self._permutations.items() if e == epoch - 1} | {epoch: order}
        return self._permutations[epoch]

    def image_indices(self, step: int) -> torch.Tensor:
        """Corpus indices of this process's samples in batch `step`."""
        count = len(self.images)
        start = (step * self.num_processes + self.process_index) * self.batch_size
        positions = torch.arange(start, start + self.batch_size, device=self.images.device)
        first_epoch, last_epoch = start // count, (start + self.batch_size - 1) // count
        orders = torch.stack([self.permutation(epoch) for epoch in range(first_epoch, last_epoch + 1)])
        return orders[positions // count - first_epoch, positions % count]

    def batch(self, step: int) -> dict:
        """Batch `step` of this process."""
        seed = sample_seed(self.seed, step * self.num_processes + self.process_index, "device-batch")
        generator = torch.Generator(self.images.device).manual_seed(seed)
        clean = self.images[self.image_indices(step)].float() / 255
        drawn = torch.randint(len(self.tasks), (self.batch_size,), generator=generator, device=clean.device)
        degraded = degrade_batch(clean, drawn, self.tasks, generator, self.params)
        batch = {name: value.expand(self.batch_size, -1) for name, value in self.template.items()}
        return {**batch, "pixel_values": normalise(degraded, self.mean, self.std),
                "target_pixel_values": normalise(clean, self.mean, self.std), "task_ids": self.task_ids[drawn]}

    def __iter__(self):
        step = 0
        while True:
            yield self.batch(step)
            step += 1


__all__ = ["DevicePairedBatches", "decode_images"]
