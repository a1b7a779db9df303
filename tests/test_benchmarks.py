"""The benchmark scripts run end to end on the tiny shapes (they are measured by hand on bigger machines, so they must
not rot between runs): every printed time and ratio exists and is a finite positive number, and the outputs they
compare are equal. Nothing here asserts a speed."""

import json
import math
import os

import pytest

import lm4lv

from benchmarks import bench_generation, bench_gpu, bench_llm_dtype, bench_training


def table_rows(out: str, header_start: str) -> list[list[str]]:
    """The data rows (cells stripped) of the Markdown table whose header starts with `header_start`: the lines that
    start with "|" up to the next heading (a benchmark's own log lines may stand between rows)."""
    lines = out.split(header_start, 1)[1].splitlines()[2:]
    end = next((i for i, line in enumerate(lines) if line.startswith("#")), len(lines))
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:end] if line.startswith("|")]


def positive_finite(cell: str) -> bool:
    value = float(cell.removesuffix("x"))
    return math.isfinite(value) and value > 0


def test_generation_benchmark_runs(capsys):
    bench_generation.main(["--llm", "tiny", "--quick"])
    out = capsys.readouterr().out
    for section in ("## 1. generate() vs bare", "## 2. KV cache vs", "## 3. Batch scaling"):
        assert section in out
    assert "| tiny | 17 |" in out
    recompute_row = out.split("## 2. KV cache")[1].split("\n| 17 |")[1].splitlines()[0]
    assert float(recompute_row.split("|")[-2]) < 1e-3  # largest pixel difference: same outputs
    (first,) = table_rows(out, "| LLM | visual tokens")
    assert all(positive_finite(cell) for cell in first[2:])  # times, ratios, per-call time
    batches = table_rows(out, "| batch | s per call")
    assert batches[0][0] == "1" and all(positive_finite(cell) for row in batches for cell in row)


def test_training_benchmark_runs(capsys):
    bench_training.main(["--llm", "tiny", "--batch_size", "2"])
    out = capsys.readouterr().out
    (step,) = table_rows(out, "| sequence length |")
    assert all(positive_finite(cell) for cell in step)
    memory = table_rows(out, "| gradient checkpointing |")
    assert [row[0] for row in memory] == ["False", "True"] and all(positive_finite(row[1]) for row in memory)
    (data,) = table_rows(out, "| data samples/s")
    assert all(positive_finite(cell) for cell in data)


def test_llm_dtype_benchmark_runs(capsys):
    bench_llm_dtype.main(["--llm", "tiny", "--batch_size", "2"])
    rows = table_rows(capsys.readouterr().out, "| frozen LLM |")
    assert [row[0] for row in rows] == ["float32", "bfloat16"]
    assert rows[0][3:] == ["1.00x", "1.00x"] and all(positive_finite(cell) for row in rows for cell in row[1:])


def test_gpu_benchmark_runs_on_tiny_shapes_on_the_cpu(tmp_path):
    """The documented quick command, as written in bench_gpu's docstring (plus where to write the numbers)."""
    assert "python -m benchmarks.bench_gpu --llm tiny --device cpu --quick " in bench_gpu.__doc__
    output = tmp_path / "gpu.json"
    bench_gpu.main(["--llm", "tiny", "--device", "cpu", "--quick", "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["card"] == "CPU" and report["llm"] == "tiny"
    assert [row["batch"] for row in report["generate"]] == [1, 2]
    for row in report["generate"]:
        assert all(positive_finite(str(row[key])) for key in (
            "images_per_s", "static_ms_per_token", "dynamic_ms_per_token", "roofline_ms_per_token", "first_call_s"))
        assert row["static_over_roofline"] == pytest.approx(row["static_ms_per_token"] / row["roofline_ms_per_token"])
        assert row["dynamic_over_static"] == pytest.approx(row["dynamic_ms_per_token"] / row["static_ms_per_token"])
    assert report["recompute"]["weight_bytes"] == sum(  # the roofline reads the tiny LLM's float32 weights
        4 * p.numel() for p in bench_gpu.build_model("tiny", bench_gpu.PATCHES_SIDE_QUICK).language_model.parameters())
    assert report["recompute"]["recompute_s"] > 0
    assert report["recompute"]["max_abs_difference"] < 1e-3  # the KV cache gives the authors' algorithm's image
    assert [row["checkpointing"] for row in report["training"]] == [False, True]
    assert report["photo"]["tiles"] == 9 and report["photo"]["seconds"] > 0  # 64 px: 3 x 3 tiles of 32 at stride 24
    assert all(row["samples_per_s"] > 0 for row in report["training"])


def test_pipeline_benchmark_compares_two_checkouts_on_a_tiny_checkpoint(base_model_dirs, tmp_path, capsys):
    """The documented comparison, with this checkout as its own baseline: every figure of both versions, their
    ratios, and the frozen LLM's share of the restore against its work."""
    from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
    from lm4lv.processing import LM4LVProcessor

    from benchmarks import bench_pipeline
    from conftest import tiny_tokenizer

    llm, vision = base_model_dirs
    model = LM4LVForConditionalGeneration.from_base_models(llm, vision, task_token_length=3)
    model.save_pretrained(tmp_path / "tiny")
    LM4LVProcessor.from_config(model.config, tiny_tokenizer()).save_pretrained(tmp_path / "tiny")
    repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bench_pipeline.main(["--model", str(tmp_path / "tiny"), "--quick", "--baseline", repository, "--output",
                         str(tmp_path / "figures.json")])
    table = capsys.readouterr().out
    assert f"| | lm4lv {lm4lv.__version__} | lm4lv {lm4lv.__version__} | ratio |" in table
    for _, label in bench_pipeline.ROWS:
        assert f"| {label} | " in table
    baseline, this = json.load(open(tmp_path / "figures.json"))["versions"]
    assert baseline["batch_size"] == 16 and this["batch_size"] > 16  # 0.3.0's restore default; the memory budget
    assert all(version[key] > 0 for version in (baseline, this) for key in ("photo_s", "llm_s", "llm_gflop"))


def test_image_folder_benchmark_runs(capsys):
    from benchmarks import bench_image_folder

    bench_image_folder.main(["--images", "12", "--size", "32"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| decoded", "| paths"))]
    assert len(rows) == 2 and all(float(row.split("|")[2]) >= 0 for row in rows)


def test_trainer_step_benchmark_runs(tmp_path, capsys):
    from benchmarks import bench_trainer_step

    bench_trainer_step.main(["--llm", "tiny", "--batch_sizes", "2", "--steps", "2", "--output",
                             str(tmp_path / "rows.json")])
    rows = table_rows(capsys.readouterr().out, "| frozen LLM | batch |")
    assert [row[:2] for row in rows] == [["float32", "2"], ["bfloat16", "2"]]
    assert all(positive_finite(cell) for row in rows for cell in row[2:])
    assert all(len(row) == 8 for row in rows)  # both data paths, each with its ratio
    for row in json.loads((tmp_path / "rows.json").read_text())["rows"]:  # (b)/(a) = (a)'s rate over (b)'s
        for path in ("per_sample", "device"):
            assert row[f"{path}_ratio"] == pytest.approx(row["bare_samples_per_s"] / row[f"{path}_samples_per_s"])


def test_trainer_step_benchmark_against_a_baseline_checkout(capfd):
    """`--baseline` installs another checkout (here this one) into a temporary folder, runs the benchmark there in a
    subprocess that imports that copy, and prints each row's time ratio of the two runs."""
    from benchmarks import bench_trainer_step

    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bench_trainer_step.main(["--llm", "tiny", "--batch_sizes", "2", "--steps", "2", "--data", "per_sample",
                             "--baseline", checkout])
    out = capfd.readouterr().out
    assert out.count("| frozen LLM | batch | sequence length |") == 2  # the baseline's table, then this run's
    rows = table_rows(out, f"| frozen LLM | batch | per_sample: {lm4lv.__version__} samples/s |")
    assert [row[:2] for row in rows] == [["float32", "2"], ["bfloat16", "2"]]
    for row in rows:  # the ratio is the baseline's rate over this run's
        assert float(row[4]) == pytest.approx(float(row[2]) / float(row[3]), rel=0.01, abs=0.002)
