"""LM4LVConfig: validation of values and types, on construction and on loading."""

import json

import pytest

from lm4lv.modeling_lm4lv import LM4LVConfig

from conftest import build_tiny, tiny_text_config, tiny_vision_config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task_token_length=0), r"task_token_length must be in \[1, 4096\], got 0"),
        (dict(task_token_length=10**9), r"task_token_length must be in \[1, 4096\], got 1000000000"),
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
    with pytest.raises(ValueError, match=r"task_token_length must be in \[1, 4096\], got -2"):
        LM4LVConfig.from_pretrained(tmp_path)


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


def test_num_visual_tokens_is_derived_and_never_set(tmp_path):
    with pytest.raises(ValueError, match="LM4LVConfig: num_visual_tokens is derived from vision_config and cannot be "
                                         "set; remove it"):
        LM4LVConfig(text_config=tiny_text_config(), vision_config=tiny_vision_config(), num_visual_tokens=99)
    config = LM4LVConfig(text_config=tiny_text_config(), vision_config=tiny_vision_config())
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(saved | {"num_visual_tokens": 99}))
    with pytest.raises(ValueError, match="config.json: num_visual_tokens is derived from vision_config"):
        LM4LVConfig.from_pretrained(tmp_path)
    vision_config = tiny_vision_config()
    vision_config.num_visual_tokens = 5
    with pytest.raises(ValueError, match=r"vision_config.num_visual_tokens is 5, but this ViT-MAE \(image_size 32, "
                                         r"patch_size 8\) has 17 \(patches \+ CLS\)"):
        LM4LVConfig(text_config=tiny_text_config(), vision_config=vision_config)
