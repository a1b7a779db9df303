"""Restoring at the CPU's speed: `lm4lv restore`'s parts timed the way a user meets them, this checkout side by side
with another (`--baseline`), each measured in a process of its own on the same machine.

    python -m benchmarks.bench_pipeline [--model CKPT] [--photo china.jpg] [--repeats 2] [--baseline CHECKOUT]
        [--output FILE.json] [--quick]

For each version: `lm4lv --help` and `lm4lv restore --help` (the console script's imports; best of `--repeats`
processes); loading the model (`pipeline("image-restoration", model=CKPT)`); one 32x32 tile (the fixed cost of a
call); the whole photo (a held-out photo at half scale, `research/photo_benchmark.py`, restored tile by tile with an
8-pixel overlap, each version's default batching); the restore's own time (the photo minus one tile); and the frozen
LLM's share of it: the time inside its forward calls and the work they do (2 x its non-embedding parameters x the
token positions it processes, in GFLOP, and the GFLOP/s that makes). `--baseline CHECKOUT` installs another
checkout of the package (a git worktree of an earlier version, say; no dependencies) into a temporary folder and
measures it first with this same script; the table gives each figure's ratio (baseline over this version: above
1.0, this one is faster). `--model` defaults to the shipped denoiser of this checkout; both versions restore with it.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HELP_COMMANDS = {"lm4lv --help": ["--help"], "lm4lv restore --help": ["restore", "--help"]}
# what the console script does, run as `lm4lv` (argv[0]) so that the package behaves as under the command
CONSOLE_SCRIPT = "import sys\nsys.argv[0] = 'lm4lv'\nfrom lm4lv.cli import main\ntry:\n    main(sys.argv[1:])\n" \
                 "except SystemExit:\n    pass\n"


def help_seconds(arguments: list[str], repeats: int, environment: dict, folder: str) -> float:
    """The best wall time of `repeats` fresh processes running the console script with `arguments` in `folder` (`python
    -c` puts the working folder first on the path: a checkout's own `lm4lv/` there would shadow the measured one)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", CONSOLE_SCRIPT, *arguments], env=environment, cwd=folder, check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    return min(times)


class LLMClock:
    """Forward hooks on the frozen LLM's backbone: the time inside its calls and the token positions they process."""

    def __init__(self, backbone):
        self.seconds, self.positions, self.started = 0.0, 0, None
        backbone.register_forward_pre_hook(self.enter, with_kwargs=True)
        backbone.register_forward_hook(self.leave)

    def enter(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        self.positions += embeds.shape[0] * embeds.shape[1]
        self.started = time.perf_counter()

    def leave(self, module, args, output):
        self.seconds += time.perf_counter() - self.started


def timed(function, repeats: int) -> float:
    """The best of `repeats` timed calls (after one untimed call)."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(model: str, photo_path: str, repeats: int, batch_size: int | None) -> dict:
    """Every figure of one version: the installed `lm4lv` this process imports, restoring `batch_size` tiles a batch
    (None: the pipeline's default)."""
    import torch
    from PIL import Image
    from transformers import pipeline

    import lm4lv  # noqa: F401  (registers the "image-restoration" task)

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    restorer = pipeline("image-restoration", model=model, **({"batch_size": batch_size} if batch_size else {}))
    load = time.perf_counter() - start
    photo = Image.open(photo_path).convert("RGB")
    tile = photo.crop((0, 0, 32, 32))
    tile_seconds = timed(lambda: restorer(tile, task="denoise"), repeats)
    backbone = restorer.model.language_model.model
    clock = LLMClock(backbone)
    photo_seconds = timed(lambda: restorer(photo, task="denoise"), 1)
    parameters = sum(p.numel() for p in backbone.parameters()) - backbone.get_input_embeddings().weight.numel()
    calls = 2  # the untimed and the timed call of `timed`
    gflop = 2 * parameters * clock.positions / calls / 1e9
    return {"version": lm4lv.__version__, "load_s": load, "tile_s": tile_seconds, "photo_s": photo_seconds,
            "restore_s": photo_seconds - tile_seconds, "llm_s": clock.seconds / calls, "llm_gflop": gflop,
            "llm_dtype": str(restorer.model.language_model.dtype).removeprefix("torch."),
            "batch_size": restorer._batch_size, "photo": f"{photo.width}x{photo.height}"}


def version_run(arguments: list[str], install_from: str | None = None) -> dict:
    """The figures of this checkout (`install_from` None) or of another checkout installed into a temporary folder,
    measured by this script in a process of its own."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as target:
        environment = dict(os.environ)
        if install_from:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", target, install_from], check=True)
            environment["PYTHONPATH"] = os.pathsep.join([target, here])
        else:
            environment["PYTHONPATH"] = here
        output = os.path.join(target, "figures.json")
        # run from the temporary folder: an installed copy of lm4lv comes first, this checkout gives `benchmarks`
        subprocess.run([sys.executable, "-m", "benchmarks.bench_pipeline", *arguments, "--measure", output],
                       cwd=target, env=environment, check=True)
        with open(output) as handle:
            figures = json.load(handle)
        repeats = figures.pop("repeats")
        return figures | {name: help_seconds(command, repeats, environment, target)
                          for name, command in HELP_COMMANDS.items()}


ROWS = (("lm4lv --help", "lm4lv --help (s)"), ("lm4lv restore --help", "lm4lv restore --help (s)"),
        ("load_s", "load the model (s)"), ("tile_s", "one 32x32 tile (s)"), ("photo_s", "the whole photo (s)"),
        ("restore_s", "the restore's own time: photo - tile (s)"), ("llm_s", "inside the frozen LLM (s)"))


def comparison_table(versions: list[dict]) -> str:
    """A Markdown table: a row per figure, a column per version, the ratio of the first to the last."""
    header = "| | " + " | ".join(f"lm4lv {figures['version']}" for figures in versions)
    lines = [header + (" | ratio |" if len(versions) > 1 else " |"),
             "|" + " --- |" * (len(versions) + 1 + (len(versions) > 1))]
    for key, label in ROWS:
        ratio = f" | {versions[0][key] / versions[-1][key]:.2f}" if len(versions) > 1 else ""
        lines.append(f"| {label} | " + " | ".join(f"{figures[key]:.2f}" for figures in versions) + ratio + " |")
    for figures in versions:
        share = figures["llm_s"] / figures["restore_s"] if figures["restore_s"] > 0 else float("nan")
        lines.append(f"\nlm4lv {figures['version']}: {figures['photo']} photo, LLM in {figures['llm_dtype']}, "
                     f"{figures['batch_size']} tiles a batch; the frozen LLM does {figures['llm_gflop']:.0f} GFLOP in "
                     f"{figures['llm_s']:.2f} s ({figures['llm_gflop'] / figures['llm_s']:.0f} GFLOP/s), "
                     f"{share:.0%} of the restore's own time.")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Checkpoint folder (default: this checkout's shipped model).")
    parser.add_argument("--photo", default="china.jpg", help="A held-out photo of research/photo_benchmark.py.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="A 64x48 crop of the photo and one repeat.")
    parser.add_argument("--baseline", default=None, help="Another checkout of the package, measured first.")
    parser.add_argument("--baseline_batch_size", type=int, default=16,
                        help="Tiles a batch for the baseline (16: lm4lv restore's default up to 0.3.0; this version "
                             "restores as many as fit its memory budget).")
    parser.add_argument("--output", default=None, help="Also write the figures to this JSON file.")
    parser.add_argument("--batch_size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # one version's figures (a subprocess)
    args = parser.parse_args(argv)
    if args.measure:
        figures = measure(args.model, args.photo, args.repeats, args.batch_size) | {"repeats": args.repeats}
        with open(args.measure, "w") as handle:
            json.dump(figures, handle)
        return
    from lm4lv.modeling_lm4lv.shipped import DEFAULT_MODEL, shipped_model_path
    from lm4lv.research.photo_benchmark import held_out_photo

    from benchmarks.common import machine

    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as folder:
        photo = held_out_photo(args.photo)
        photo = photo.crop((0, 0, 64, 48)) if args.quick else photo
        photo_path = os.path.join(folder, "photo.png")
        photo.save(photo_path)
        arguments = ["--model", os.path.abspath(args.model or shipped_model_path(DEFAULT_MODEL)), "--photo",
                     photo_path, "--repeats", str(repeats)]
        baseline = [version_run(arguments + ["--batch_size", str(args.baseline_batch_size)], args.baseline)]
        versions = (baseline if args.baseline else []) + [version_run(arguments)]
    print(f"# Restoring {args.photo} at half scale on {machine()}\n\n{comparison_table(versions)}")
    if args.output:
        with open(args.output, "w") as handle:
            json.dump({"machine": machine(), "photo": args.photo, "versions": versions}, handle, indent=2)


if __name__ == "__main__":
    main()
