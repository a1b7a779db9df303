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
