"""A web app for a trained LM4LV checkpoint (Gradio; `pip install "lm4lv[app]"`), like a Hub Space:

    lm4lv app [--model CKPT] [--port 7860]      # default: the shipped denoiser (lm4lv-denoise-smollm2)

Upload an image, choose one of the checkpoint's tasks, optionally degrade the image first with the package's
degradations (then it is the clean reference and PSNR/SSIM are shown), and see the degraded image, MAE-r and LM4LV
side by side. Runs offline: no analytics, no share links, no calls out. As a Space's `app.py`:

    from lm4lv.commands.app import build_app
    build_app("path/to/checkpoint").launch()
"""

import argparse
import os

from PIL import Image

from lm4lv import metrics
from lm4lv.commands.arguments import checkpoint_location, port_number
from lm4lv.modeling_lm4lv.shipped import DEFAULT_MODEL
from lm4lv.pipelines import LM4LVRestorationPipeline
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.degradations import SPATIAL_TASKS, degrade
from lm4lv.processing.images import ImageLoadError, load_rgb_image
from lm4lv.trainers.evaluation import DEGRADED, LM4LV, MAE_R, load_restoration_model

MAX_SIDE = 256  # larger uploads are downscaled first: every 32x32 tile is one generate() row on the CPU
METRICS_CROP_BORDER = 4
IMAGE_HEIGHT = 320  # pixels on the page (small images are shown larger)


def fit_for_task(image: Image.Image, task: str, tile: tuple[int, int]) -> tuple[Image.Image, str]:
    """The image the app restores, and a note when it had to change it: spatial tasks act on whole images of the
    model's input size (`tile`: `(height, width)`); other tasks take any size up to `MAX_SIDE` pixels on the longer
    side."""
    size = tile[::-1]  # PIL sizes are (width, height)
    if task in SPATIAL_TASKS and image.size != size:
        return image.resize(size, Image.BICUBIC), f"{task} acts on whole {size[0]}x{size[1]} images: resized. "
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.BICUBIC), f"downscaled to {size[0]}x{size[1]} (at most {MAX_SIDE} pixels). "
    return image, ""


def scores_markdown(outputs: dict, clean: Image.Image) -> str:
    rows = [f"| {name} | {metrics.psnr(image, clean, crop_border=METRICS_CROP_BORDER):.2f} | "
            f"{metrics.ssim(image, clean, crop_border=METRICS_CROP_BORDER):.4f} |" for name, image in outputs.items()]
    return "| | PSNR (dB) | SSIM |\n| --- | --- | --- |\n" + "\n".join(rows)


def build_app(model_path: str, llm: str | None = None, vision: str | None = None):
    """The Gradio `Blocks` app for the checkpoint at `model_path` (`llm` / `vision` override its base models)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read when gradio is imported: nothing is sent out
    import gradio as gr

    model = load_restoration_model(model_path, llm=llm, vision=vision)
    restorer = LM4LVRestorationPipeline(model=model, processor=LM4LVProcessor.from_pretrained(model_path))
    tasks = list(model.config.task_names)
    tile = restorer.restoration_processor.image_size

    def run(upload, task, degrade_first, progress=gr.Progress()):
        if upload is None:
            return None, None, None, "Upload an image first."
        try:
            image = load_rgb_image(upload, name=os.path.basename(upload))
        except ImageLoadError as error:
            return None, None, None, f"**Cannot use this file.** {error}"
        image, note = fit_for_task(image, task, tile)
        clean = None
        if degrade_first:
            progress(0.1, desc=f"degrading ({task})")
            clean, image = image, degrade(image, task, seed=0)
        progress(0.3, desc=MAE_R)
        reconstruction = restorer(image, task=task, method="reconstruction")
        restored = restorer(image, task=task, progress=lambda done, total: progress(
            0.4 + 0.6 * done / total, desc=f"LM4LV generating: {done} of {total} tiles"))
        status = note + (scores_markdown({DEGRADED: image, MAE_R: reconstruction, LM4LV: restored}, clean)
                         if clean is not None else "No clean reference: tick *Degrade first* to see PSNR/SSIM.")
        return image, reconstruction, restored, status

    with gr.Blocks(title="LM4LV", analytics_enabled=False) as app:
        gr.Markdown(f"# LM4LV: a frozen LLM restores images\nCheckpoint `{model_path}`; tasks: {', '.join(tasks)}.")
        with gr.Row():
            upload = gr.File(label="Image", file_types=["image"], type="filepath", elem_id="upload")
            with gr.Column():
                task = gr.Radio(tasks, value=tasks[0], label="Task", elem_id="task")
                degrade_first = gr.Checkbox(label="Degrade first (the upload is the clean image)",
                                            elem_id="degrade_first")
                button = gr.Button("Restore", variant="primary", elem_id="run")
        with gr.Row():
            views = [gr.Image(label=label, type="pil", elem_id=elem_id, format="png", height=IMAGE_HEIGHT)
                     for label, elem_id in ((DEGRADED, "degraded"), (MAE_R, "mae_r"), (LM4LV, "lm4lv"))]
        status = gr.Markdown(elem_id="status")
        button.click(run, [upload, task, degrade_first], [*views, status])
    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, type=checkpoint_location,
                        help=f"LM4LV checkpoint folder, Hub id or shipped model's name (default: {DEFAULT_MODEL}).")
    parser.add_argument("--port", type=port_number, default=7860, help="Port to serve on (127.0.0.1).")
    parser.add_argument("--llm", default=None, help="Override the base LLM location named in the checkpoint.")
    parser.add_argument("--vision", default=None, help="Override the vision module location.")
    args = parser.parse_args(argv)
    build_app(args.model, args.llm, args.vision).launch(server_name="127.0.0.1", server_port=args.port, share=False)


if __name__ == "__main__":
    main()
