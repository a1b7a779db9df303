"""`LM4LVRestorationPipeline` ("image-restoration"): inputs of any kind and size, tiling, batching, the MAE-r method,
loading checkpoints through `transformers.pipeline`, and clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import lm4lv.pipelines.image_restoration as restoration_module
from lm4lv.modeling_lm4lv import LM4LVForConditionalGeneration
from lm4lv.pipelines import LM4LVRestorationPipeline, mae_reconstruct
from lm4lv.pipelines.image_restoration import blend_window, tile_starts
from lm4lv.processing import LM4LVProcessor
from lm4lv.processing.degradations import tensor_to_pil
from lm4lv.processing.images import ImageLoadError, to_tensor

from conftest import build_tiny, tiny_tokenizer


def random_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def checkpoints(base_model_dirs, tmp_path_factory):
    """A trainable-only and a full checkpoint (each with its processor) of one model with tasks denoise and flip."""
    llm, vision = base_model_dirs
    torch.manual_seed(0)
    model = LM4LVForConditionalGeneration.from_base_models(llm, vision, task_names=["denoise", "flip"],
                                                           task_token_length=3)
    processor = LM4LVProcessor.from_config(model.config, tiny_tokenizer())
    folders = {}
    for kind, save_full in (("trainable_only", False), ("full", True)):
        folders[kind] = tmp_path_factory.mktemp(kind)
        model.save_pretrained(folders[kind], save_full=save_full)
        processor.save_pretrained(folders[kind])
    return {kind: str(folder) for kind, folder in folders.items()}


def test_tile_starts_cover_the_image():
    assert tile_starts(32, 32, 24) == [0]
    assert tile_starts(70, 32, 24) == [0, 24, 38]
    for length in (33, 64, 100):
        starts = tile_starts(length, 32, 24)
        covered = set()
        for s in starts:
            covered |= set(range(s, s + 32))
        assert covered == set(range(length))
    assert blend_window(32, 8).min() > 0


@pytest.mark.parametrize("batch_size", [1, 4])
def test_tiling_with_an_identity_restorer_is_lossless(batch_size, monkeypatch):
    model, processor = build_tiny()
    monkeypatch.setattr(restoration_module, "restore", lambda model, processor, tiles, task: tiles)
    restorer = LM4LVRestorationPipeline(model=model, processor=processor, batch_size=batch_size)
    images = [random_picture(*size, seed=i) for i, size in enumerate([(70, 50), (32, 32), (20, 12), (200, 33)])]
    for image, out in zip(images, restorer(images, overlap=8)):
        assert out.size == image.size
        assert np.abs(np.asarray(out).astype(int) - np.asarray(image).astype(int)).max() <= 1


@pytest.mark.parametrize("kind", ["trainable_only", "full"])
def test_pipeline_loads_a_checkpoint_and_restores_mixed_inputs(kind, checkpoints, tmp_path):
    restorer = pipeline("image-restoration", model=checkpoints[kind])
    assert isinstance(restorer, LM4LVRestorationPipeline)
    random_picture(50, 37).convert("LA").save(tmp_path / "gray_alpha.png")  # converted to RGB by the image policy
    inputs = [str(tmp_path / "gray_alpha.png"), random_picture(45, 40, seed=1),
              np.asarray(random_picture(32, 32, seed=2)), np.asarray(random_picture(33, 20, seed=3)) / 255.0]
    outputs = restorer(inputs, task="denoise")
    assert [out.size for out in outputs] == [(50, 37), (45, 40), (32, 32), (33, 20)]
    assert all(out.mode == "RGB" for out in outputs)
    single = restorer(inputs[1], task="denoise")  # one input: one image, not a list
    assert isinstance(single, Image.Image) and single.size == (45, 40)


def test_batched_equals_one_by_one(checkpoints):
    restorer = pipeline("image-restoration", model=checkpoints["trainable_only"])
    images = [random_picture(*size, seed=i) for i, size in enumerate([(70, 50), (32, 32), (40, 33)])]
    one_by_one = [np.asarray(restorer(image, task="denoise", batch_size=1)).astype(int) for image in images]
    batched = [np.asarray(out).astype(int) for out in restorer(images, task="denoise", batch_size=16)]
    for single, together in zip(one_by_one, batched):
        assert np.abs(single - together).max() <= 1  # float reduction order only


def test_reconstruction_method_is_the_mae_r_baseline(checkpoints):
    restorer = pipeline("image-restoration", model=checkpoints["full"])
    image = random_picture(32, 32)  # one tile: the pipeline's output is the MAE-r image itself
    expected = mae_reconstruct(restorer.model, to_tensor(image)[None])[0]
    out = restorer(image, task="denoise", method="reconstruction")
    assert np.array_equal(np.asarray(out), np.asarray(tensor_to_pil(expected)))
    assert not np.array_equal(np.asarray(out), np.asarray(restorer(image, task="denoise")))


def test_spatial_tasks_take_whole_images_of_the_input_size(checkpoints):
    restorer = pipeline("image-restoration", model=checkpoints["trainable_only"])
    assert restorer(random_picture(32, 32), task="flip").size == (32, 32)
    with pytest.raises(ValueError, match="flip acts on the whole image: give a 32x32 image"):
        restorer(random_picture(40, 32), task="flip")


def test_bad_arguments_and_files_raise_clear_errors(checkpoints, tmp_path):
    restorer = pipeline("image-restoration", model=checkpoints["trainable_only"])
    image = random_picture(32, 32)
    with pytest.raises(ValueError, match="several tasks"):
        restorer(image)
    with pytest.raises(ValueError, match="Unknown task 'derain'"):
        restorer(image, task="derain")
    with pytest.raises(ValueError, match="method must be one of"):
        restorer(image, task="denoise", method="magic")
    with pytest.raises(ValueError, match=r"overlap must be an integer in \[0, 32\)"):
        restorer(image, task="denoise", overlap=32)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ImageLoadError, match="corrupt.png: cannot read image"):
        restorer(str(tmp_path / "corrupt.png"), task="denoise")
    with pytest.raises(ValueError, match="Float image arrays must be finite and in"):
        restorer(np.full((32, 32, 3), 2.0), task="denoise")
    with pytest.raises(ValueError, match=r"Image arrays must be \(H, W\) or \(H, W, 3\|4\)"):
        restorer(np.zeros((3, 32, 32), np.uint8), task="denoise")


def test_exported_folder_runs_the_pipeline_without_the_package(checkpoints, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from lm4lv.pipelines import export_with_pipeline

    restorer = pipeline("image-restoration", model=checkpoints["trainable_only"])
    export_with_pipeline(restorer.model, restorer.restoration_processor, tmp_path / "hub")
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["custom_pipelines"]["image-restoration"]["impl"] == "image_restoration.LM4LVRestorationPipeline"
    random_picture(45, 40).save(tmp_path / "in.png")
    expected = restorer(str(tmp_path / "in.png"), task="denoise")
    script = f"""
import sys
sys.modules["lm4lv"] = None  # this package cannot be imported here
from transformers import pipeline
restorer = pipeline(model={str(tmp_path / "hub")!r}, trust_remote_code=True)
assert type(restorer).__module__.startswith("transformers_modules"), type(restorer).__module__
restorer({str(tmp_path / "in.png")!r}, task="denoise").save({str(tmp_path / "out.png")!r})
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, timeout=300, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), np.asarray(expected))


def test_a_model_with_a_non_square_input_restores_in_tiles_of_that_shape(monkeypatch):
    # transformers' ViT-MAE builds square models only: the processor of a config with a (16, 24) input stands for
    # such a model (the pipeline tiles by the processor's size; generation is replaced by the identity)
    import copy

    model, _ = build_tiny()
    config = copy.deepcopy(model.config)
    config.vision_config.image_size = (16, 24)
    processor = LM4LVProcessor.from_config(config, tiny_tokenizer())
    assert processor.image_size == (16, 24)
    seen = []

    def identity(model, processor, tiles, task):
        seen.append(tuple(tiles.shape[2:]))
        return tiles

    monkeypatch.setattr(restoration_module, "restore", identity)
    restorer = LM4LVRestorationPipeline(model=model, processor=processor, batch_size=4)
    for size in ((50, 37), (20, 12)):  # (width, height): larger than a tile, and smaller (padded)
        image = random_picture(*size)
        assert np.array_equal(np.asarray(restorer(image, overlap=4)), np.asarray(image))
    assert set(seen) == {(16, 24)}
    with pytest.raises(ValueError, match=r"overlap must be an integer in \[0, 16\)"):
        restorer(random_picture(50, 37), overlap=16)


def test_every_loading_path_runs_the_llm_in_the_dtype_the_checkpoint_names(base_model_dirs, tmp_path):
    """A checkpoint trained with a bfloat16 LLM: `from_pretrained`, `pipeline(...)` (which passes dtype="auto") and
    `lm4lv restore` all load it in bfloat16, and the pipeline and the command line restore a tile bit for bit alike;
    asking for float32 is still honoured."""
    from lm4lv.cli import main

    llm, vision = base_model_dirs
    torch.manual_seed(0)
    model = LM4LVForConditionalGeneration.from_base_models(llm, vision, task_names=["denoise"], task_token_length=3,
                                                           dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "ckpt")
    LM4LVProcessor.from_config(model.config, tiny_tokenizer()).save_pretrained(tmp_path / "ckpt")
    folder = str(tmp_path / "ckpt")
    assert LM4LVForConditionalGeneration.from_pretrained(folder).language_model.dtype == torch.bfloat16
    restorer = pipeline("image-restoration", model=folder)
    assert restorer.model.language_model.dtype == torch.bfloat16
    as_float32 = LM4LVForConditionalGeneration.from_pretrained(folder, dtype="float32")
    assert as_float32.language_model.dtype == torch.float32
    tile = random_picture(32, 32, seed=3)
    tile.save(tmp_path / "tile.png")
    main(["restore", str(tmp_path / "tile.png"), "-o", str(tmp_path / "restored.png"), "--model", folder])
    from_cli = np.asarray(Image.open(tmp_path / "restored.png"))
    assert np.array_equal(np.asarray(restorer(tile, task="denoise")), from_cli)


def test_restoring_generates_the_image_and_no_text_after_it(tiny):
    from lm4lv.pipelines import restore

    model, processor = tiny
    degraded = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    full = model.generate(**processor(images=degraded, task="denoise"))  # the default budget: text after </Img>
    assert full.sequences.shape[1] > processor(images=degraded, task="denoise")["input_ids"].shape[1] + 20
    assert torch.equal(restore(model, processor, degraded, "denoise"), processor.to_unit_range(full.pixel_values))


def test_progress_counts_every_tile_of_a_call_and_batches_fit_the_memory_budget(tiny, monkeypatch):
    from lm4lv.pipelines.image_restoration import tiles_per_batch

    model, processor = tiny
    monkeypatch.setattr(restoration_module, "restore", lambda model, processor, tiles, task: tiles)
    restorer = LM4LVRestorationPipeline(model=model, processor=processor, batch_size=4)
    reports = []
    restorer([random_picture(70, 50), random_picture(32, 32)], progress=lambda done, total: reports.append(
        (done, total)))
    tiles = len(tile_starts(50, 32, 24)) * len(tile_starts(70, 32, 24)) + 1
    assert reports[-1] == (tiles, tiles) and [done for done, _ in reports] == sorted({done for done, _ in reports})
    assert restorer(random_picture(40, 40), progress=True).size == (40, 40)  # the tqdm bar
    assert tiles_per_batch(model, processor, budget=2**20) < tiles_per_batch(model, processor, budget=2**24)
    assert tiles_per_batch(model, processor, budget=1) == 1
    assert LM4LVRestorationPipeline(model=model, processor=processor)._batch_size == tiles_per_batch(model, processor)
