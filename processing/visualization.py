"""Pictures for people to look at: labelled image grids (degradations; degraded / MAE-r / LM4LV / clean
comparisons)."""

import torch
from PIL import Image, ImageDraw

from .degradations import tensor_to_pil

LINE_HEIGHT = 12


def wrap_words(draw: ImageDraw.ImageDraw, text: str, width: int) -> list[str]:
    """Split `text` into lines no wider than `width` pixels (a single long word keeps its own line)."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and draw.textlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line]


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
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    header = [wrap_words(measure, label, width - 4) for label in column_labels or []]
    top = 4 + LINE_HEIGHT * max(map(len, header)) if header else 0
    columns = max(len(row) for row in rows)
    canvas = Image.new(
        "RGB", (left + columns * (width + padding), top + len(rows) * (height + padding)), (255, 255, 255)
    )
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(header):
        for i, line in enumerate(lines):
            draw.text((left + c * (width + padding) + 2, 2 + i * LINE_HEIGHT), line, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        y = top + r * (height + padding)
        if row_labels:
            draw.text((4, y + height // 2 - 6), row_labels[r], fill=(0, 0, 0))
        for c, image in enumerate(row):
            cell = tensor_to_pil(image.float().cpu()).resize((width, height), Image.NEAREST)
            canvas.paste(cell, (left + c * (width + padding), y))
    return canvas


__all__ = ["image_grid", "wrap_words"]
