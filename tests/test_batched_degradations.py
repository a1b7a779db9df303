"""Batched (device) degradations against the per-sample ones: the same distributions over a few thousand draws,
exactly the same lossless tasks, the same blur kernels, exact mask counts, one batch per seed; and the device-made
training batches: the template, determinism, disjoint process slices, the Trainer reading them."""

import datasets
import pytest
import torch

from lm4lv.processing.batched_degradations import BATCHED_DEGRADATIONS, degrade_batch
from lm4lv.processing.degradations import BLUR_WINDOWS, MASK_SIZE, NOISE_SIGMA_RANGE, TASKS, degrade
from lm4lv.processing.device_data import DevicePairedBatches, decode_images

from conftest import build_tiny, random_images

DRAWS = 2000


def both_paths(images: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    batched = BATCHED_DEGRADATIONS[task](images, torch.Generator().manual_seed(0))
    return batched, degrade(images, task, seed=0)


def assert_same_distribution(batched: torch.Tensor, per_sample: torch.Tensor, scale: float):
    """Means and standard deviations of one statistic per sample agree within 6% of the range `scale` (about five
    standard errors of the difference at 2,000 draws)."""
    assert abs(batched.mean() - per_sample.mean()) < 0.06 * scale
    assert abs(batched.std() - per_sample.std()) < 0.06 * scale


@pytest.mark.parametrize("task", ["rotate", "flip", "identity"])
def test_lossless_tasks_equal_the_per_sample_path_exactly(task):
    images = random_images(8)
    batched, per_sample = both_paths(images, task)
    assert torch.equal(batched, per_sample)


def test_noise_sigma_has_the_same_distribution():
    gray = torch.full((DRAWS, 3, 16, 16), 0.5)  # no clipping: the residual's std is the drawn sigma
    batched, per_sample = both_paths(gray, "denoise")
    sigmas = [(out - gray).flatten(1).std(-1) for out in (batched, per_sample)]
    assert_same_distribution(*sigmas, scale=NOISE_SIGMA_RANGE[1])


def test_blur_windows_are_drawn_alike_and_filter_with_the_same_kernels():
    impulse = torch.zeros(DRAWS, 3, 17, 17)
    impulse[:, :, 8, 8] = 1.0
    batched, per_sample = both_paths(impulse, "deblur")
    widths = [((out[:, 0, 8] > 0).sum(-1)) for out in (batched, per_sample)]  # the window, read off the response
    for window in BLUR_WINDOWS:
        shares = [(w == window).float().mean().item() for w in widths]
        assert abs(shares[0] - shares[1]) < 0.05, (window, shares)
    for window in BLUR_WINDOWS:  # the same window gives the same filter (sigma, normalisation)
        row = (widths[0] == window).nonzero()[0, 0]
        reference = degrade(impulse[:1], "deblur", kernel_size=window)
        torch.testing.assert_close(batched[row : row + 1], reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize("task, scale", [("pepper", 0.1), ("derain", 0.25)])
def test_corrupted_fractions_have_the_same_distribution(task, scale):
    gray = torch.full((DRAWS, 3, 32, 32), 0.5)
    batched, per_sample = both_paths(gray, task)
    fractions = [(out != gray).any(1).flatten(1).float().mean(-1) for out in (batched, per_sample)]
    assert_same_distribution(*fractions, scale=scale)


def test_mask_zeroes_exactly_the_same_number_of_blocks():
    ones = torch.ones(64, 3, 32, 32)
    batched, per_sample = both_paths(ones, "mask")
    blocks = round(0.1 * (32 // MASK_SIZE) ** 2) * MASK_SIZE**2 * 3
    for out in (batched, per_sample):
        assert ((out == 0).flatten(1).sum(-1) == blocks).all()
    again = BATCHED_DEGRADATIONS["mask"](ones, torch.Generator().manual_seed(0))
    assert torch.equal(again, batched) and not torch.equal(batched[0], batched[1])


def test_degrade_batch_keeps_each_samples_task_and_one_seed_gives_one_batch():
    images = random_images(6)
    tasks = ["denoise", "rotate", "flip"]
    task_ids = torch.tensor([0, 1, 2, 1, 2, 0])
    first = degrade_batch(images, task_ids, tasks, torch.Generator().manual_seed(3))
    assert torch.equal(first, degrade_batch(images, task_ids, tasks, torch.Generator().manual_seed(3)))
    assert torch.equal(first[[1, 3]], torch.rot90(images[[1, 3]], 1, (2, 3)))
    assert torch.equal(first[[2, 4]], torch.flip(images[[2, 4]], (3,)))
    assert not torch.equal(first[[0, 5]], images[[0, 5]]) and first.shape == images.shape
    assert set(BATCHED_DEGRADATIONS) == set(TASKS)


@pytest.fixture(scope="module")
def stream_parts():
    model, processor = build_tiny(task_names=("denoise", "rotate"))
    corpus = datasets.Dataset.from_dict({"image": processor.postprocess(random_images(10) * 4 - 2)})
    return model, processor, decode_images(corpus, 32)


def test_device_batches_hold_the_processors_template_and_repeat_per_step(stream_parts):
    model, processor, images = stream_parts
    stream = DevicePairedBatches(images, processor, ["denoise", "rotate"], batch_size=4, seed=1)
    batch = stream.batch(2)
    reference = processor(images=torch.rand(4, 3, 32, 32), targets=torch.rand(4, 3, 32, 32), task="denoise")
    assert torch.equal(batch["input_ids"], reference["input_ids"]) and torch.equal(batch["labels"], reference["labels"])
    assert "attention_mask" not in batch and batch["pixel_values"].shape == (4, 3, 32, 32)
    again = DevicePairedBatches(images, processor, ["denoise", "rotate"], batch_size=4, seed=1).batch(2)
    assert all(torch.equal(batch[name], again[name]) for name in batch)
    assert not torch.equal(stream.batch(3)["target_pixel_values"], batch["target_pixel_values"])
    rotated = batch["task_ids"] == model.config.task_index("rotate")
    assert torch.equal(batch["pixel_values"][rotated], torch.rot90(batch["target_pixel_values"][rotated], 1, (2, 3)))
    out = model(**batch, check_inputs=True)  # the batch passes every input check
    assert torch.isfinite(out.loss)


def test_device_batches_cover_each_epoch_once_and_split_processes(stream_parts):
    _, processor, images = stream_parts
    stream = DevicePairedBatches(images, processor, ["denoise"], batch_size=5)
    epoch = torch.cat([stream.image_indices(step) for step in range(2)])
    assert sorted(epoch.tolist()) == list(range(10))
    parts = [DevicePairedBatches(images, processor, ["denoise"], 5, process_index=p, num_processes=2) for p in (0, 1)]
    assert torch.equal(torch.cat([part.image_indices(0) for part in parts]), epoch)
    assert torch.equal(stream.image_indices(3), DevicePairedBatches(images, processor, ["denoise"], 5).image_indices(3))


def test_trainer_reads_device_batches_and_refuses_a_mismatched_batch_size(stream_parts, tmp_path):
    from lm4lv.trainers import LM4LVTrainer, LM4LVTrainingArguments

    model, processor, images = stream_parts
    args = LM4LVTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3,
                                  logging_steps=1, use_cpu=True, disable_tqdm=True, save_strategy="no", report_to=[])
    stream = DevicePairedBatches(images, processor, ["denoise", "rotate"], batch_size=4)
    trainer = LM4LVTrainer(model=model.train(), args=args, train_dataset=stream, processing_class=processor)
    trainer.train()
    assert len([entry for entry in trainer.state.log_history if "vision_loss" in entry]) == 3
    wrong = DevicePairedBatches(images, processor, ["denoise"], batch_size=8)
    with pytest.raises(ValueError, match="makes batches of 8 for process 0 of 1, but this run has batches of 4"):
        LM4LVTrainer(model=model, args=args, train_dataset=wrong, processing_class=processor).get_train_dataloader()


def test_every_task_has_a_batched_degradation_in_task_order():
    assert tuple(BATCHED_DEGRADATIONS) == TASKS


@pytest.mark.parametrize("task, params", [
    ("denoise", {}), ("denoise", {"sigma": 0.1}), ("deblur", {}), ("deblur", {"kernel_size": 5, "sigma": 2.0}),
    ("pepper", {}), ("pepper", {"amount": 0.3}), ("derain", {}), ("derain", {"amount": 15.0, "streak_length": 5}),
])
def test_one_image_is_degraded_the_same_by_both_paths_from_the_same_draws(task, params):
    """Both paths run one transform: on one image, from a generator in the same state (so the same draws), the
    per-sample and the batched functions give the same image, for every parameter either accepts."""
    from lm4lv.processing.degradations import DEGRADATIONS

    image = random_images(1, seed=3)
    per_sample = DEGRADATIONS[task](image[0], torch.Generator().manual_seed(11), **params)
    batched = BATCHED_DEGRADATIONS[task](image, torch.Generator().manual_seed(11), **params)
    assert torch.equal(batched[0], per_sample)


def test_the_mask_transform_zeroes_each_samples_own_blocks():
    """The mask draws differ between the paths (a permutation per sample, one argsort per batch), the transform is
    one: the batch with each sample's drawn blocks equals each sample masked alone with its blocks."""
    from lm4lv.processing.degradations import mask_transform

    images = random_images(3, size=16)
    kept = (torch.rand(3, 16, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    together = mask_transform(images, kept, 4)
    for i in range(3):
        assert torch.equal(together[i], mask_transform(images[i : i + 1], kept[i : i + 1], 4)[0])
    assert int((together[:, 0] == 0).sum()) == int((kept == 0).sum()) * 16


@pytest.mark.parametrize("task, params, message", [
    ("deblur", {"kernel_size": 0}, "deblur: kernel_size must be >= 1, got 0"),
    ("denoise", {"sigma": -0.1}, "denoise: sigma must be"),
    ("mask", {"mask_size": 64}, "mask: mask_size 64 is larger than the image side 32"),
])
def test_batched_degradations_refuse_the_parameters_the_per_sample_path_refuses(task, params, message):
    images = torch.rand(2, 3, 32, 32)
    for degrade_images in (lambda: degrade(images, task, **params),
                           lambda: degrade_batch(images, torch.zeros(2, dtype=torch.long), [task],
                                                 torch.Generator().manual_seed(0), {task: params})):
        with pytest.raises(ValueError, match=message):
            degrade_images()
