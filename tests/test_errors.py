"""Clear errors for bad inputs and configs."""

import pytest
import torch
from PIL import Image

from lm4lv.modeling_lm4lv import LM4LVConfig

from conftest import build_tiny, random_images, tiny_text_config, tiny_vision_config


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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task_token_length=0), "task_token_length must be >= 1"),
        (dict(task_names=["a", "a"]), "distinct names"),
        (dict(task_names=[]), "non-empty"),
        (dict(task_token_init="ones"), "task_token_init"),
        (dict(vision_loss_weight=-1.0), "vision_loss_weight"),
        (dict(image_token_id=5), "negative placeholder"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LM4LVConfig(text_config=tiny_text_config(), vision_config=tiny_vision_config(), **kwargs)


def test_config_validation_on_load(tmp_path):
    config = LM4LVConfig(text_config=tiny_text_config(), vision_config=tiny_vision_config())
    config.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text().replace('"task_token_length": 10', '"task_token_length": -2')
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match="task_token_length must be >= 1"):
        LM4LVConfig.from_pretrained(tmp_path)


def test_generate_needs_image_delimiter_ids():
    model, processor = build_tiny()
    prompt = processor(images=random_images(1))
    model.config.image_start_token_ids = None
    with pytest.raises(ValueError, match="set_image_delimiter_ids"):
        model.generate(**prompt)


def test_a_tokenizer_that_encodes_the_delimiters_differently_is_refused():
    model, processor = build_tiny()
    model.config.image_start_token_ids = [1, 2, 3]
    with pytest.raises(ValueError, match="not the one of the LLM"):
        type(processor).from_config(model.config, processor.tokenizer)


@pytest.mark.parametrize("field, value, message", [
    ("task_names", "deblur", r"task_names must be a list of task names \(e.g. \['denoise'\]\), got 'deblur'"),
    ("task_names", ["denoise", 3], r"task_names must be a list of task names"),
    ("task_token_length", "3", "LM4LVConfig.task_token_length must be int, got str '3'"),
    ("lora_r", 2.0, "LM4LVConfig.lora_r must be int, got float 2.0"),
    ("vision_loss_weight", "1", "LM4LVConfig.vision_loss_weight must be float, got str '1'"),
    ("visual_skip_connection", 1, "LM4LVConfig.visual_skip_connection must be bool, got int 1"),
    ("task_token_length", True, "LM4LVConfig.task_token_length must be int, got bool True"),
])
def test_config_fields_of_the_wrong_type_raise_naming_the_field(field, value, message):
    from lm4lv.modeling_lm4lv import LM4LVConfig

    with pytest.raises(TypeError, match=message):
        LM4LVConfig(**{field: value})
    assert LM4LVConfig(vision_loss_weight=2).vision_loss_weight == 2  # an int is a valid float
