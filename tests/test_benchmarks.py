"""The benchmark scripts run end to end on the tiny shapes (they are measured by hand on bigger machines, so they must
not rot between runs). Nothing here asserts a speed."""

import json

from benchmarks import bench_generation, bench_gpu


def test_generation_benchmark_runs(capsys):
    bench_generation.main(["--llm", "tiny", "--quick"])
    out = capsys.readouterr().out
    for section in ("## 1. generate() vs bare", "## 2. KV cache vs", "## 3. Batch scaling"):
        assert section in out
    assert "| tiny | 17 |" in out
    recompute_row = out.split("## 2. KV cache")[1].split("\n| 17 |")[1].splitlines()[0]
    assert float(recompute_row.split("|")[-2]) < 1e-3  # largest pixel difference: same outputs


def test_gpu_benchmark_runs_on_tiny_shapes_on_the_cpu(tmp_path):
    output = tmp_path / "gpu.json"
    bench_gpu.main(["--llm", "tiny", "--device", "cpu", "--quick", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["card"] == "CPU" and report["llm"] == "tiny"
    assert [row["batch"] for row in report["generate"]] == [1, 2]
    assert all(row["images_per_s"] > 0 for row in report["generate"])
    assert report["recompute"]["recompute_s"] > 0
    assert report["recompute"]["max_abs_difference"] < 1e-3  # the KV cache gives the authors' algorithm's image
    assert [row["checkpointing"] for row in report["training"]] == [False, True]
    assert all(row["samples_per_s"] > 0 for row in report["training"])


def test_pipeline_benchmark_runs_on_a_tiny_checkpoint(base_model_dirs, tmp_path, capsys):
    from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
    from lm4lv.processing import LM4LVProcessor

    from benchmarks import bench_pipeline
    from conftest import tiny_tokenizer

    llm, vision = base_model_dirs
    model = LM4LVForConditionalGeneration.from_base_models(llm, vision, task_token_length=3)
    model.save_pretrained(tmp_path / "tiny")
    LM4LVProcessor.from_config(model.config, tiny_tokenizer()).save_pretrained(tmp_path / "tiny")
    bench_pipeline.main(["--model", str(tmp_path / "tiny"), "--quick"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")]
    assert [row.split("|")[2].strip() for row in rows] == ["1", "16"]
    assert all(float(row.split("|")[3]) > 0 for row in rows)


def test_image_folder_benchmark_runs(capsys):
    from benchmarks import bench_image_folder

    bench_image_folder.main(["--images", "12", "--size", "32"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| decoded", "| paths"))]
    assert len(rows) == 2 and all(float(row.split("|")[2]) >= 0 for row in rows)
