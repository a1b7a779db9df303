"""Evaluation: the feature-space baselines, the paper-style tables, grids, the model card and the Hub upload."""

import json
import os

import pytest
import torch
from huggingface_hub import ModelCard

from lm4lv.processing.data import bundled_corpus, materialize_eval_set
from lm4lv.trainers.evaluation import (
    evaluate_restoration,
    feature_errors,
    input_feature_mse,
    mae_reconstruct,
    restore,
    results_markdown,
    write_results,
)
from lm4lv.trainers.model_card import build_model_card, push_to_hub

from conftest import build_tiny


def test_input_feature_mse_is_the_copy_baseline_on_the_vision_loss_scale(tmp_path):
    model, processor = build_tiny(task_names=("denoise",))
    validation = bundled_corpus()["validation"].select(range(5))
    eval_set = materialize_eval_set(validation, ["denoise"], 32, str(tmp_path / "eval"), seed=1)
    degraded = torch.stack([processor.preprocess_images(image)[0] for image in eval_set["degraded"]])
    clean = torch.stack([processor.preprocess_images(image)[0] for image in eval_set["clean"]])
    expected = torch.nn.functional.mse_loss(model.encode_images(degraded), model.encode_images(clean)).item()
    assert input_feature_mse(model, processor, eval_set, "denoise", batch_size=2) == pytest.approx(expected, rel=1e-5)
    assert expected > 0
    unchanged = eval_set.map(lambda row: {"degraded": row["clean"]})
    assert input_feature_mse(model, processor, unchanged, "denoise") == 0.0


def test_feature_errors_are_the_vision_loss_and_the_generated_error_by_position(tmp_path):
    model, processor = build_tiny(task_names=("denoise",))
    validation = bundled_corpus()["validation"].select(range(5))
    eval_set = materialize_eval_set(validation, ["denoise"], 32, str(tmp_path / "eval"), seed=1)
    clean = torch.stack([processor.preprocess_images(image)[0] for image in eval_set["clean"]])
    prompts = processor(images=list(eval_set["degraded"]), task="denoise")
    generated = model.generate(**prompts).visual_features
    expected_by_position = (generated - model.encode_images(clean)).pow(2).mean(dim=(0, 2))
    errors = feature_errors(model, processor, eval_set, "denoise", batch_size=2)
    assert errors["generated_mse_by_position"] == pytest.approx(expected_by_position.tolist(), abs=1e-4)
    assert len(errors["generated_mse_by_position"]) == model.config.num_visual_tokens
    assert errors["generated_mse"] == pytest.approx(expected_by_position.mean().item(), rel=1e-5)
    teacher_forced = model(**processor(images=list(eval_set["degraded"]), targets=list(eval_set["clean"]),
                                       task="denoise")).vision_loss.item()
    assert errors["teacher_forced_mse"] == pytest.approx(teacher_forced, rel=1e-5)
    assert errors["gap"] == pytest.approx(errors["generated_mse"] - errors["teacher_forced_mse"])
    assert errors["generated_mse"] > 0


def test_evaluation_tables_grids_and_card(tmp_path, monkeypatch):
    model, processor = build_tiny(task_names=("denoise", "flip"))
    validation = bundled_corpus()["validation"].select(range(6))
    eval_set = materialize_eval_set(validation, ["denoise", "flip"], 32, str(tmp_path / "eval"), seed=1)
    methods = {
        "Input": lambda degraded, task: degraded,
        "MAE-r": lambda degraded, task: mae_reconstruct(model, degraded),
        "LM4LV": lambda degraded, task: restore(model, processor, degraded, task),
    }
    results, examples = evaluate_restoration(eval_set, methods, batch_size=4, grid_samples=2)
    assert set(results) == {"denoise", "flip"}
    for task in results:
        count = sum(1 for t in eval_set["task"] if t == task)
        assert results[task]["LM4LV"]["psnr"]["count"] == count
        assert len(examples[task]) == min(2, count) and len(examples[task][0]) == 4  # degraded, MAE-r, LM4LV, clean
    table = results_markdown(results)
    assert table.splitlines()[0].startswith("| Task | Input PSNR / SSIM | MAE-r PSNR / SSIM | LM4LV PSNR / SSIM")
    gain = results["flip"]["LM4LV"]["psnr"]["mean"] - results["flip"]["MAE-r"]["psnr"]["mean"]
    assert f"{gain:+.2f} dB" in table
    two_gains = results_markdown(results, ours=("LM4LV", "Input", "absent")).splitlines()
    assert two_gains[0].endswith("| Gain (LM4LV - MAE-r) | Gain (Input - MAE-r) |")
    assert two_gains[1].count("---") == 6 and all(row.count("|") == 7 for row in two_gains)
    paths = write_results(results, examples, str(tmp_path / "results"), list(methods))
    assert json.loads(open(paths["json"]).read())["flip"]["Input"]["psnr"]["count"] > 0
    assert os.path.getsize(paths["grid_flip"]) > 0

    card = build_model_card(model, "someone/lm4lv-tiny", results)
    assert card.data.library_name == "transformers"
    assert "lm4lv" in card.data.tags and "denoise" in card.data.tags
    values = {(r.task_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert values[("denoise", "psnr")] == round(results["denoise"]["LM4LV"]["psnr"]["mean"], 4)
    assert "| denoise |" in card.text and "someone/lm4lv-tiny" in card.text
    # metadata huggingface_hub validates: Hub ids only (the tiny base models are local folders), one metric name each
    assert card.data.base_model is None and card.data.datasets is None
    assert {r.metric_name for r in card.data.eval_results} == {"PSNR", "SSIM"}
    reparsed = ModelCard(str(card)).data.eval_results
    assert [(r.task_name, r.dataset_config, r.metric_name, r.metric_value) for r in reparsed] == [
        (r.task_name, r.dataset_config, r.metric_name, r.metric_value) for r in card.data.eval_results]
    assert build_model_card(model, "x/y", results, base_models=("org/llm", "a-folder")).data.base_model == ["org/llm"]

    uploaded = {}

    def fake_upload_folder(self, repo_id, folder_path, commit_message, **kwargs):
        uploaded["repo"] = repo_id
        uploaded["files"] = sorted(os.listdir(folder_path))
        uploaded["card"] = open(os.path.join(folder_path, "README.md")).read()
        return "https://hub.invalid/commit/1"

    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, repo_id, **kwargs: repo_id)
    monkeypatch.setattr("huggingface_hub.HfApi.upload_folder", fake_upload_folder)
    assert push_to_hub(model, processor, "someone/lm4lv-tiny", results) == "https://hub.invalid/commit/1"
    assert uploaded["repo"] == "someone/lm4lv-tiny"
    for name in ("README.md", "config.json", "model.safetensors", "processor_config.json", "tokenizer.json"):
        assert name in uploaded["files"], uploaded["files"]
    assert "eval_results" not in uploaded["card"] or "model-index" in uploaded["card"]
    assert "model-index" in uploaded["card"]
