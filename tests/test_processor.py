"""LM4LVProcessor and the model's inputs: every image, tensor and parameter is validated where it enters (the
processor, degradation-free inputs, generate()), with an error that says what was expected instead of a silently
wrong result."""

import numpy as np
import pytest
import torch
from PIL import Image

from lm4lv.trainers.evaluation import restore

from conftest import build_tiny, random_images


def test_placeholder_count_mismatch(tiny):
    model, processor = tiny
    batch = processor(images=random_images(2))
    batch["input_ids"][0, 5] = model.config.image_token_id  # one extra placeholder in sample 0
    with pytest.raises(ValueError, match=r"placeholder counts per sample are \[18, 17\]"):
        model.generate(**batch)


def test_task_token_count_mismatch(tiny):
    model, processor = tiny
    batch = processor(images=random_images(1))
    ids = batch["input_ids"]
    ids[ids == model.config.task_token_id] = 5
    ids[0, 2] = model.config.task_token_id
    with pytest.raises(ValueError, match="exactly 3 task-token placeholders, got \\[1\\]"):
        model(**batch)


def test_unknown_task(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match="Unknown task 'derain'.*\\['denoise'\\]"):
        processor(images=random_images(1), task="derain")
    with pytest.raises(ValueError, match="Unknown task 'x'"):
        model.config.task_index("x")
    batch = processor(images=random_images(1))
    batch["task_ids"] = torch.tensor([3])
    with pytest.raises(ValueError, match="task_ids must index task_names"):
        model(**batch)


def test_image_size_not_matching_vision_config(tiny):
    model, processor = tiny
    expected = r"shape \(batch, 3, 32, 32\) to match the vision config, got \(1, 3, 48, 48\)"
    with pytest.raises(ValueError, match=expected):
        processor(images=random_images(1, size=48))
    batch = processor(images=random_images(1))
    batch["pixel_values"] = torch.zeros(1, 3, 48, 48)
    with pytest.raises(ValueError, match=r"to match the vision config, got \(1, 3, 48, 48\)"):
        model.generate(**batch)


def test_bad_pixel_values(tiny):
    model, processor = tiny
    bad = random_images(1)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        processor(images=bad)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        processor(images=random_images(1) * 255)
    batch = processor(images=random_images(1))
    batch["pixel_values"][0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        model.generate(**batch)


def test_pil_mode_is_checked(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="mode 'RGBA'"):
        processor(images=Image.new("RGBA", (32, 32)))
    assert processor(images=Image.new("RGB", (40, 20)))["pixel_values"].shape == (1, 3, 32, 32)  # resized


def test_targets_must_match_images(tiny):
    _, processor = tiny
    with pytest.raises(ValueError, match="targets"):
        processor(images=random_images(2), targets=random_images(1))






def test_generate_needs_image_delimiter_ids():
    model, processor = build_tiny()
    prompt = processor(images=random_images(1))
    model.config.image_start_token_ids = None
    with pytest.raises(ValueError, match="set_image_delimiter_ids"):
        model.generate(**prompt)


def test_numpy_images_are_scaled_once_whatever_their_dtype():
    _, processor = build_tiny()
    floats = np.random.default_rng(0).random((32, 32, 3))
    as_uint8 = (floats * 255).round().astype(np.uint8)
    torch.testing.assert_close(processor.preprocess_images([floats]), processor.preprocess_images([as_uint8]))
    with pytest.raises(ValueError, match="Float image arrays must be finite and in \\[0, 1\\]"):
        processor.preprocess_images([floats * 255])


def test_empty_batches_and_raw_pixels_are_refused():
    model, processor = build_tiny()
    with pytest.raises(ValueError, match="No images given"):
        processor.preprocess_images([])
    batch = processor(images=random_images(1))
    batch["pixel_values"] = (random_images(1) * 255).to(torch.uint8)
    with pytest.raises(ValueError, match="pixel_values must be normalised float images from LM4LVProcessor, got a "
                                         "torch.uint8 tensor"):
        model.generate(**batch)


def test_non_finite_weights_never_come_out_as_an_image():
    model, processor = build_tiny()
    with torch.no_grad():
        model.out_adapter.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        restore(model, processor, random_images(1), "denoise")


@pytest.mark.parametrize("task, max_new_tokens, message", [
    (0, None, r"task must be a task name or a list of names \(one per image\) from \['denoise', 'rotate'\], got 0"),
    (["denoise", 1], None, "task must be a task name or a list of names"),
    ("deblur", None, r"Unknown task 'deblur': this model has task tokens for \['denoise', 'rotate'\]"),
    ("denoise", -1, "max_new_tokens must be a positive integer, got -1"),
    ("denoise", 0, "max_new_tokens must be a positive integer, got 0"),
    ("denoise", 2.5, "max_new_tokens must be a positive integer, got 2.5"),
])
def test_generate_arguments_are_validated(task, max_new_tokens, message):
    model, processor = build_tiny(task_names=("denoise", "rotate"))
    images = random_images(2)
    with pytest.raises(ValueError, match=message):
        model.generate(**processor(images=images, task=task), max_new_tokens=max_new_tokens)


def test_empty_batches_are_refused_naming_what_is_missing(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match="the image tensor has batch size 0; pass at least one image"):
        processor(images=torch.empty(0, 3, 32, 32), task="denoise")
    batch = processor(images=random_images(1), task="denoise")
    empty = {name: tensor[:0] for name, tensor in batch.items()}
    with pytest.raises(ValueError, match=r"generate\(\) needs a batch of at least one prompt"):
        model.generate(**empty)
