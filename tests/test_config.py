"""LM4LVConfig: validation of values and types, on construction and on loading."""

import json

import pytest
from huggingface_hub.errors import StrictDataclassError

from lm4lv.modeling_lm4lv import LM4LVConfig

from conftest import build_tiny, tiny_text_config, tiny_vision_config


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(task_token_length=0), r"task_token_length must be in \[1, 4096\], got 0"),
        (dict(task_token_length=10**9), r"task_token_length must be in \[1, 4096\], got 1000000000"),
        (dict(task_names=["a", "a"]), "distinct names"),
        (dict(task_names=[]), "non-empty"),
        (dict(vision_loss_weight=-1.0), "vision_loss_weight"),
        (dict(image_token_id=5), "negative placeholder"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(StrictDataclassError, match=message):
        LM4LVConfig(text_config=tiny_text_config(), vision_config=tiny_vision_config(), **kwargs)


def test_config_validation_on_load(tmp_path):
    config = LM4LVConfig(text_config=tiny_text_config(), vision_config=tiny_vision_config())
    config.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text().replace('"task_token_length": 10', '"task_token_length": -2')
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(StrictDataclassError, match=r"task_token_length must be in \[1, 4096\], got -2"):
        LM4LVConfig.from_pretrained(tmp_path)


def test_a_tokenizer_that_encodes_the_delimiters_differently_is_refused():
    model, processor = build_tiny()
    model.config.image_start_token_ids = [1, 2, 3]
    with pytest.raises(ValueError, match="not the one of the LLM"):
        type(processor).from_config(model.config, processor.tokenizer)


@pytest.mark.parametrize("field, value, message", [
    ("task_names", "deblur", "Field 'task_names' expected a list, got str"),
    ("task_names", ["denoise", 3], "Invalid item at index 1 in list 'task_names'"),
    ("task_token_length", "3", "Field 'task_token_length' expected int, got str"),
    ("lora_r", 2.0, "Field 'lora_r' expected int, got float"),
    ("vision_loss_weight", "1", "Field 'vision_loss_weight' expected float, got str"),
    ("visual_skip_connection", 1, "Field 'visual_skip_connection' expected bool, got int"),
    ("task_token_length", True, "Field 'task_token_length' expected int, got bool"),
    ("task_token_init", "ones", r"Field 'task_token_init' expected one of \('zeros', 'random', 'text'\), got ones"),
    ("in_adapter_init", "pca", "Field 'in_adapter_init' expected one of"),
])
def test_config_fields_of_the_wrong_type_or_choice_raise_naming_the_field(field, value, message):
    with pytest.raises(StrictDataclassError, match=message):
        LM4LVConfig(**{field: value})
    config = LM4LVConfig()
    with pytest.raises(StrictDataclassError, match=message):  # assignment is checked too
        setattr(config, field, value)


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
    with pytest.raises(StrictDataclassError, match=r"vision_config.num_visual_tokens is 5, but this ViT-MAE "
                                                   r"\(image_size 32, patch_size 8\) has 17 \(patches \+ CLS\)"):
        LM4LVConfig(text_config=tiny_text_config(), vision_config=vision_config)


def test_a_config_field_declared_as_an_option_is_a_training_flag_that_reaches_the_model(base_model_dirs, monkeypatch,
                                                                                        capsys):
    """One declaration: a field added to the config with `option(...)` appears in `lm4lv train --help` (type,
    choices, help) and its value reaches the trained model's config, with nothing else edited."""
    from typing import Literal

    from huggingface_hub.dataclasses import strict

    from lm4lv import cli
    from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
    from lm4lv.modeling_lm4lv.configuration_lm4lv import option
    from lm4lv.trainers import training

    @strict
    class ExtendedConfig(LM4LVConfig):
        feature_dropout_kind: Literal["none", "token", "channel"] = option("none", "How to drop features (a test).")

    monkeypatch.setattr(LM4LVForConditionalGeneration, "config_class", ExtendedConfig)
    monkeypatch.setattr(training, "ModelArguments", training.model_arguments_class(ExtendedConfig))
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "--feature_dropout_kind {none,token,channel}" in capsys.readouterr().out
    llm, vision = base_model_dirs
    model_args, _, _ = training.parse_arguments(["--llm", llm, "--vision", vision, "--feature_dropout_kind", "token",
                                                 "--output_dir", "unused", "--use_cpu"])
    model, _ = training.build_model_and_processor(model_args, ["denoise"])
    assert model.config.feature_dropout_kind == "token"
