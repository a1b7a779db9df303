"""Image grids for people to look at: degradations, and degraded / MAE-r / LM4LV / clean comparisons."""

import torch
from PIL import Image, ImageDraw

from .degradations import tensor_to_pil


def image_grid(rows: list[list[torch.Tensor]], row_labels=None, column_labels=None, scale: int = 3,
               padding: int = 2) -> Image.Image:
    r"""
    A labelled PNG-ready grid.

    Args:
        rows: `rows[r][c]` is a `(3, H, W)` tensor in [0, 1]; all of the same size.
        row_labels, column_labels (`list[str]`, *optional*): Text left of each row / above each column.
        scale (`int`): Nearest-neighbour upscaling so small crops stay visible.
        padding (`int`): White pixels between cells.
    """
    height, width = rows[0][0].shape[1] * scale, rows[0][0].shape[2] * scale
    left = 8 + 7 * max((len(label) for label in row_labels or []), default=0)
    top = 16 if column_labels else 0
    columns = max(len(row) for row in rows)
    canvas = Image.new(
        "RGB", (left + columns * (width + padding), top + len(rows) * (height + padding)), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(column_labels or []):
        draw.text((left + c * (width + padding) + 2, 2), label, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        y = top + r * (height + padding)
        if row_labels:
            draw.text((4, y + height // 2 - 6), row_labels[r], fill=(0, 0, 0))
        for c, image in enumerate(row):
            cell = tensor_to_pil(image.float().cpu()).resize((width, height), Image.NEAREST)
            canvas.paste(cell, (left + c * (width + padding), y))
    return canvas


__all__ = ["image_grid"]
