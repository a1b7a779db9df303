"""The installed product: one top-level package built from the repository's folders, and imports that flow one way."""

import ast
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# repository folder -> the layer it is in the import graph (README, Layout)
LAYERS = {
    "metrics": "metrics",
    "modeling_lm4lv": "modeling",
    "processing": "processing",
    "pipelines": "pipelines",
    "trainers": "trainers",
    "research": "research",
    "lm4lv": "cli",
}
# what each layer may import from lm4lv (besides itself); degradations is processing's dependency-free module
ALLOWED = {
    "metrics": set(),
    "degradations": set(),
    "modeling": set(),
    "processing": {"modeling", "degradations"},
    "pipelines": {"modeling", "processing", "degradations"},
    "trainers": {"metrics", "modeling", "processing", "degradations", "pipelines"},
    "research": {"metrics", "modeling", "processing", "degradations", "pipelines", "trainers"},
    "cli": {"metrics", "modeling", "processing", "degradations", "pipelines", "trainers", "research"},
    "library cli": {"metrics", "modeling", "processing", "degradations", "pipelines", "trainers"},
}
ROOT_IMPORTS = ("lm4lv", "lm4lv.metrics")  # what the layers below the CLI may import of the package root
# the CLI's commands that run the lab (the offline default's jobs); every other module of the CLI is the library's and
# must not load the lab
LAB_COMMANDS = ("demo.py", "ablate.py")


def own_layer(folder: str, path: str) -> str:
    """The layer a file is in: its folder's, except for processing's dependency-free degradations module and the
    CLI's library commands."""
    if path.endswith(os.path.join("processing", "degradations.py")):
        return "degradations"
    if LAYERS[folder] == "cli" and os.path.basename(path) not in LAB_COMMANDS:
        return "library cli"
    return LAYERS[folder]


def layer_of_module(name: str) -> str | None:
    """The layer of an absolute module name inside `lm4lv` (None for third-party modules)."""
    parts = name.split(".")
    if parts[0] != "lm4lv":
        return None
    if len(parts) == 1:
        return "package root"
    if parts[1:3] == ["processing", "degradations"]:
        return "degradations"
    return {"metrics": "metrics", "modeling_lm4lv": "modeling", "processing": "processing", "pipelines": "pipelines",
            "trainers": "trainers", "research": "research", "commands": "commands",
            "cli": "commands"}.get(parts[1], "package root")


def imports_of(path: str, package: str) -> list[str]:
    """Absolute names of every module `path` imports (relative imports resolved against `package`)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def python_files(folder: str):
    for root, _, files in os.walk(os.path.join(REPOSITORY, folder)):
        for file in files:
            if file.endswith(".py"):
                yield os.path.join(root, file)


def package_of(path: str) -> str:
    relative = os.path.relpath(os.path.dirname(path), REPOSITORY).split(os.sep)
    return ".".join(["lm4lv"] + (relative[1:] if relative[0] == "lm4lv" else relative))


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_imports_flow_one_way(folder):
    violations = []
    for path in python_files(folder):
        own = own_layer(folder, path)
        for name in imports_of(path, package_of(path)):
            target = layer_of_module(name)
            if name.split(".")[0] in ("examples", "benchmarks", "tests", "conftest"):
                violations.append(f"{path}: imports {name}")
            elif target == "commands" and own not in ("cli", "library cli"):
                violations.append(f"{path}: imports the CLI ({name})")
            elif target not in (None, own, "package root", "commands") and target not in ALLOWED[own]:
                violations.append(f"{path} ({own}) imports {name} ({target})")
            elif target == "package root" and own not in ("cli", "library cli") and name not in ROOT_IMPORTS:
                violations.append(f"{path} ({own}) imports the package root ({name})")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("folder", ["examples", "benchmarks"])
def test_examples_and_benchmarks_use_only_the_installed_package(folder):
    for path in python_files(folder):
        for name in imports_of(path, folder):
            top = name.split(".")[0]
            assert top not in ("examples", "modeling_lm4lv", "processing", "pipelines", "trainers", "research",
                               "metrics"), (path, name)
            if folder == "examples":
                assert top != "benchmarks", (path, name)


def test_no_generic_top_level_modules_come_from_this_repository():
    """The repository's folders are reachable only as `lm4lv.*`: from outside the repository none of their bare
    names resolves to our files (another distribution may own such a name; that is not ours to check)."""
    names = ["modeling_lm4lv", "processing", "pipelines", "trainers", "research", "metrics", "examples", "benchmarks"]
    script = ("import importlib.util, sys\n"
              "for name in sys.argv[1:]:\n"
              "    spec = importlib.util.find_spec(name)\n"
              "    print(name, spec and (spec.origin or list(spec.submodule_search_locations)))\n")
    result = subprocess.run([sys.executable, "-c", script, *names], cwd=os.path.expanduser("~"), capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert REPOSITORY not in result.stdout, result.stdout


WHEEL_CHECK = r"""
import os, subprocess, sys
target = sys.argv[1]
import lm4lv
from lm4lv import LM4LVConfig, LM4LVForConditionalGeneration, LM4LVProcessor, metrics
from lm4lv.modeling_lm4lv import LM4LVConfig as _
for module in (lm4lv, metrics, sys.modules["lm4lv.modeling_lm4lv"]):
    assert module.__file__.startswith(target), (module.__name__, module.__file__)
from transformers import LlamaConfig, ViTMAEConfig
import numpy as np
image = np.zeros((16, 16, 3), np.uint8)
for name in metrics.METRIC_NAMES:
    assert metrics.load(name).compute(predictions=[image], references=[image], crop_border=0)[name] > 0.99
config = LM4LVConfig(
    text_config=LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                            num_key_value_heads=1, vocab_size=64),
    vision_config=ViTMAEConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                               decoder_num_attention_heads=2, decoder_intermediate_size=32),
    task_names=["denoise"], text_model_name_or_path="my-llm", vision_model_name_or_path="my-mae")
from lm4lv.trainers.model_card import TEMPLATE_PATH, build_model_card
assert TEMPLATE_PATH.startswith(target), TEMPLATE_PATH
card = str(build_model_card(LM4LVForConditionalGeneration(config), "someone/lm4lv-test"))
assert "lm4lv-test" in card and "my-llm" in card and "{{" not in card, card[:2000]
print("wheel ok")
"""


def test_the_wheel_installs_one_package_that_works_outside_the_repository(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPOSITORY, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "outputs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("lm4lv-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"lm4lv"}
    for shipped in ("lm4lv/model_card.md", "lm4lv/metrics/psnr/psnr.py", "lm4lv/metrics/ssim/ssim.py",
                    "lm4lv/cli.py", "lm4lv/modeling_lm4lv/modeling_lm4lv.py"):
        assert shipped in names
    assert not any(name.startswith(("lm4lv/examples", "lm4lv/tests", "lm4lv/benchmarks")) for name in names)

    target = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                              str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    check = subprocess.run([sys.executable, "-c", WHEEL_CHECK, str(target)], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=600)
    assert check.returncode == 0 and "wheel ok" in check.stdout, check.stderr[-4000:]

    from lm4lv.cli import COMMANDS

    script = target / "bin" / "lm4lv"
    for command in ([], *([name] for name in COMMANDS)):
        result = subprocess.run([sys.executable, str(script), *command, "--help"], cwd=elsewhere, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        assert "usage:" in result.stdout, (command, result.stdout[:500])


MAX_FUNCTION_LINES = 60


def test_no_function_of_the_package_is_longer_than_60_lines():
    long_functions = []
    for folder in (*LAYERS, "research"):
        for path in python_files(folder):
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > MAX_FUNCTION_LINES:
                        long_functions.append(f"{path}:{node.lineno} {node.name} ({length} lines)")
    assert not long_functions, "\n".join(long_functions)
