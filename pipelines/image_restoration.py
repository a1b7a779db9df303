"""The one restoration code path: `LM4LVRestorationPipeline`, a `transformers` pipeline for the task
"image-restoration", and the tensor-level restorers it runs (`restore`, `mae_reconstruct`), which the evaluation code
calls directly on crops of the model's input size.

    >>> import lm4lv
    >>> from transformers import pipeline
    >>> restorer = pipeline("image-restoration", model="path/to/checkpoint")
    >>> restorer("noisy.png", task="denoise").save("restored.png")

Images of any size are restored tile by tile: overlapping tiles of the model's input size, batched across tiles and
images (`batch_size=`), blended with weights that ramp down over the overlap. Spatial tasks (rotate, flip) act on the
whole image, so they take only images of the model's input size.
"""

import torch
from tqdm.auto import tqdm
from transformers.pipelines.base import ChunkPipeline

from lm4lv.modeling_lm4lv.configuration_lm4lv import image_size_pair
from lm4lv.modeling_lm4lv.vision import reconstruct_images
from lm4lv.processing.degradations import SPATIAL_TASKS, tensor_to_pil
from lm4lv.processing.images import load_rgb_image, to_tensor
from lm4lv.processing.processing_lm4lv import LM4LVProcessor

# LM4LV itself, or the MAE-r baseline (encode and decode, nothing between)
RESTORATION_METHODS = ("lm4lv", "reconstruction")


def image_budget(config) -> int:
    """The generation budget of a restoration: `<Img>`, the visual tokens and `</Img>`, no text after them."""
    return len(config.image_start_token_ids) + config.num_visual_tokens + len(config.image_end_token_ids)


@torch.no_grad()
def restore(model, processor, degraded: torch.Tensor, task: str) -> torch.Tensor:
    """LM4LV restoration of `(B, 3, H, W)` images in [0, 1] of the model's input size (KV-cached batched
    generation of the answer's image, `image_budget`); returns [0, 1] images. Refuses outputs that are not images
    (no image generated, non-finite)."""
    batch = processor(images=degraded, task=task).to(model.device)
    generated = model.generate(**batch, max_new_tokens=image_budget(model.config))
    if not generated.has_image.all():
        raise RuntimeError(f"{int((~generated.has_image).sum())} samples produced no image for task {task!r}")
    return processor.to_unit_range(generated.pixel_values)


def mae_reconstruct(model, degraded: torch.Tensor) -> torch.Tensor:
    """The MAE-r baseline of `model`'s vision module (`reconstruct_images`) on `(B, 3, H, W)` images in [0, 1];
    returns [0, 1] images on the CPU."""
    return reconstruct_images(model.vision_model, degraded.to(model.device)).cpu()


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering `length` (the last tile is flush with the end)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def edge_ramp(length: int, overlap: int) -> torch.Tensor:
    """`(length,)` weights that ramp linearly over `overlap` pixels at both ends (never exactly 0)."""
    ramp = torch.ones(length)
    if overlap:
        edge = torch.linspace(1 / (overlap + 1), 1, overlap + 1)[:-1]
        ramp[:overlap], ramp[-overlap:] = edge, edge.flip(0)
    return ramp


def blend_window(tile, overlap: int) -> torch.Tensor:
    """A `(height, width)` weight (`tile`: an int for square tiles or `(height, width)`) that ramps linearly over
    `overlap` pixels at each border (never exactly 0)."""
    height, width = image_size_pair(tile)
    return edge_ramp(height, overlap)[:, None] * edge_ramp(width, overlap)[None, :]


def pad_to_tile(pixels: torch.Tensor, tile) -> torch.Tensor:
    """Pad a `(3, H, W)` image smaller than `tile` (an int or `(height, width)`) on the bottom/right, by reflection
    (or edge copies when it is too small to reflect)."""
    (height, width), (tile_h, tile_w) = pixels.shape[1:], image_size_pair(tile)
    pad_h, pad_w = max(0, tile_h - height), max(0, tile_w - width)
    if not (pad_h or pad_w):
        return pixels
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return torch.nn.functional.pad(pixels[None], (0, pad_w, 0, pad_h), mode=mode)[0]


def tile_boxes(height: int, width: int, tile, overlap: int) -> list[tuple[int, int]]:
    """The `(top, left)` of every tile (`tile`: an int or `(height, width)`) covering a `height` x `width` image (at
    least a tile on each side: pad smaller images with `pad_to_tile`), neighbours sharing `overlap` pixels, row by
    row."""
    tile_h, tile_w = image_size_pair(tile)
    return [(y, x) for y in tile_starts(height, tile_h, tile_h - overlap)
            for x in tile_starts(width, tile_w, tile_w - overlap)]


def blend_tiles(tiles, boxes: list[tuple[int, int]], height: int, width: int, overlap: int) -> torch.Tensor:
    """The `(3, height, width)` image made of restored `tiles` (`(3, tile_h, tile_w)` each, at `boxes`), blended
    with `blend_window` over the overlaps."""
    tile_h, tile_w = tiles[0].shape[-2:]
    weight = blend_window((tile_h, tile_w), overlap)
    output, total = torch.zeros(3, height, width), torch.zeros(height, width)
    for restored, (y, x) in zip(tiles, boxes):
        output[:, y : y + tile_h, x : x + tile_w] += restored * weight
        total[y : y + tile_h, x : x + tile_w] += weight
    return output / total


def cut_tiles(pixels: torch.Tensor, tile, overlap: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """`(tiles, boxes)` of a `(3, H, W)` image padded to at least a tile (`pad_to_tile`): `(N, 3, tile_h, tile_w)`
    tiles at `tile_boxes`."""
    tile_h, tile_w = image_size_pair(tile)
    padded = pad_to_tile(pixels, tile)
    boxes = tile_boxes(*padded.shape[1:], tile, overlap)
    return torch.stack([padded[:, y : y + tile_h, x : x + tile_w] for y, x in boxes]), boxes


def restore_tiled(pixels: torch.Tensor, restore_tiles, tile, overlap: int = 8, batch_size: int = 64):
    """`(3, H, W)` image in [0, 1] restored tile by tile as the pipeline restores it: `restore_tiles` maps a
    `(B, 3, tile_h, tile_w)` batch (`tile`: an int or `(height, width)`) to its restorations; tiles are blended over
    `overlap` pixels."""
    height, width = pixels.shape[1:]
    tiles, boxes = cut_tiles(pixels, tile, overlap)
    restored = torch.cat([restore_tiles(tiles[start : start + batch_size]).float().cpu()
                          for start in range(0, len(tiles), batch_size)])
    padded_h, padded_w = max(height, tiles.shape[2]), max(width, tiles.shape[3])
    return blend_tiles(restored, boxes, padded_h, padded_w, overlap)[:, :height, :width]


MEMORY_BUDGET_BYTES = 2**30  # what one batch of tiles may hold while generating: its KV cache and activations


def tiles_per_batch(model, processor, budget: int = MEMORY_BUDGET_BYTES) -> int:
    """How many tiles one `generate()` call takes within `budget` bytes: each tile's sequence (its prompt and
    `image_budget`) holds a KV cache entry per layer and position, and the prefill's activations (the MLP's and a few
    hidden-size tensors, float32) per position. Large batches keep the matrix units busy; at least 1, at most 1024."""
    config, text = model.config, model.config.text_config
    prompt = processor(images=torch.zeros(1, 3, *processor.image_size), task=config.task_names[0])["input_ids"]
    positions = prompt.shape[1] + image_budget(config)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    element = torch.finfo(model.language_model.dtype).bits // 8
    per_position = text.num_hidden_layers * 2 * kv_heads * head_dim * element
    per_position += 4 * (getattr(text, "intermediate_size", 4 * text.hidden_size) + 4 * text.hidden_size)
    return max(1, min(1024, budget // (positions * per_position)))


class TileProgress:
    """A restore's progress over its tiles: a tqdm bar (shown once the restore takes two seconds) or `callback(done,
    total)`, for the tiles of every image of a call."""

    def __init__(self, progress):
        self.callback = progress if callable(progress) else None
        self.bar = None if self.callback else tqdm(total=0, desc="Restoring", unit="tile", delay=2)
        self.total = self.count = 0

    def add(self, tiles: int):
        self.total += tiles
        if self.bar is not None:
            self.bar.total = self.total

    def done(self, tiles: int):
        self.count += tiles
        if self.callback:
            self.callback(self.count, self.total)
        else:
            self.bar.update(tiles)
            if self.count >= self.total:
                self.bar.close()


class LM4LVRestorationPipeline(ChunkPipeline):
    r"""
    Restore images with an LM4LV checkpoint: `pipeline("image-restoration", model=CHECKPOINT)` (after `import lm4lv`,
    which registers the task), or `LM4LVRestorationPipeline(model=model, processor=processor)` for a model in memory.

    Call with one image or a list: paths, PIL images, bytes or numpy arrays, any size and mode (converted to RGB by
    the package's image policy). Returns a PIL RGB image of the input's size for each input.

    Args (of the call):
        task (`str`, *optional*): One of the checkpoint's tasks; required when it has more than one.
        method (`str`, *optional*, defaults to `"lm4lv"`): `"lm4lv"`, or `"reconstruction"` for the MAE-r baseline
            (the vision module's encode + decode) through the same tiling.
        overlap (`int`, *optional*, defaults to 8): Pixels shared by neighbouring tiles, in `[0, tile)`.
        batch_size (`int`, *optional*): Tiles per `generate()` call, across images; by default as many as fit in
            `MEMORY_BUDGET_BYTES` (`tiles_per_batch`).
        progress (`bool` or callable, *optional*, defaults to `False`): `True` shows a progress bar of the tiles
            (tqdm, from two seconds on); a callable is called with `(tiles done, tiles so far)` after every batch.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, model, processor: LM4LVProcessor | None = None, **kwargs):
        # bound to the loaded model's config (also where the model's code came from a Hub folder's remote code)
        self.restoration_processor = processor or LM4LVProcessor.from_pretrained(model.name_or_path,
                                                                                 model_config=model.config)
        # the image processor lets the base class batch tiles (they need no padding); the tokenizer stays with the
        # LM4LV processor, which pads prompts itself (LLMs without a pad token included)
        super().__init__(model=model, image_processor=self.restoration_processor.image_processor, **kwargs)
        if self._batch_size is None:
            self._batch_size = tiles_per_batch(self.model, self.restoration_processor)
        self.progress = None  # the current call's TileProgress

    def _sanitize_parameters(self, task=None, method=None, overlap=None, progress=None, **kwargs):
        if kwargs:
            raise TypeError(f"Unknown arguments for image restoration: {sorted(kwargs)}")
        preprocess, forward = {}, {}
        self.progress = TileProgress(progress) if progress else None
        if task is not None:
            self.model.config.task_index(task)  # unknown task -> a clear ValueError naming the checkpoint's tasks
            preprocess["task"] = forward["task"] = task
        if method is not None:
            if method not in RESTORATION_METHODS:
                raise ValueError(f"method must be one of {RESTORATION_METHODS}, got {method!r}")
            forward["method"] = method
        if overlap is not None:
            shortest = min(self.restoration_processor.image_size)
            if not isinstance(overlap, int) or not 0 <= overlap < shortest:
                raise ValueError(f"overlap must be an integer in [0, {shortest}), got {overlap!r}")
            preprocess["overlap"] = overlap
        return preprocess, forward, {}

    def task_or_default(self, task: str | None) -> str:
        """`task`, or the checkpoint's only task when none is given."""
        if task is None:
            tasks = self.model.config.task_names
            if len(tasks) > 1:
                raise ValueError(f"This checkpoint has several tasks {tasks}: pass task=")
            task = tasks[0]
        return task

    def preprocess(self, image, task: str | None = None, overlap: int = 8):
        task = self.task_or_default(task)
        pixels = to_tensor(load_rgb_image(image))
        height, width = pixels.shape[1:]
        tile_h, tile_w = tile = self.restoration_processor.image_size
        if task in SPATIAL_TASKS and (height, width) != tile:
            raise ValueError(f"{task} acts on the whole image: give a {tile_w}x{tile_h} image (got {width}x{height})")
        tiles, boxes = cut_tiles(pixels, tile, overlap)
        if self.progress:
            self.progress.add(len(boxes))
        layout = torch.tensor([[height, width, max(height, tile_h), max(width, tile_w), overlap]])
        for index, (tile_pixels, (y, x)) in enumerate(zip(tiles, boxes)):
            yield {"pixel_values": tile_pixels[None], "box": torch.tensor([[y, x]]), "layout": layout,
                   "is_last": index == len(boxes) - 1}

    def _forward(self, model_inputs, task: str | None = None, method: str = "lm4lv"):
        tiles = model_inputs.pop("pixel_values")
        if method == "reconstruction":
            restored = mae_reconstruct(self.model, tiles)
        else:
            restored = restore(self.model, self.restoration_processor, tiles, self.task_or_default(task))
        if self.progress:
            self.progress.done(len(tiles))
        return {"restored": restored, **model_inputs}

    def postprocess(self, tile_outputs):
        height, width, full_h, full_w, overlap = tile_outputs[0]["layout"][0].tolist()
        boxes = [tuple(item["box"][0].tolist()) for item in tile_outputs]
        output = blend_tiles([item["restored"][0] for item in tile_outputs], boxes, full_h, full_w, overlap)
        return tensor_to_pil(output[:, :height, :width])


__all__ = ["LM4LVRestorationPipeline", "mae_reconstruct", "restore", "restore_tiled", "tiles_per_batch"]
