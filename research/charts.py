"""Line charts of training curves for the research reports."""

import math

from PIL import Image, ImageDraw

from lm4lv.processing.visualization import LINE_HEIGHT

# line colours, in order (the usual ten-colour palette's first five)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def round_ticks(low: float, high: float, log: bool) -> list[float]:
    """Axis ticks at round values between `low` and `high`: 1, 2 or 5 times a power of ten apart (at most about six),
    or, on a log axis (`low` and `high` are log10 values), at 1, 2 and 5 times each power of ten (evenly spaced
    values where the axis spans too little for two of those)."""
    if log:
        candidates = [m * 10.0**e for e in range(math.floor(low), math.ceil(high) + 1) for m in (1, 2, 5)]
        ticks = [value for value in candidates if low <= math.log10(value) <= high]
        return ticks if len(ticks) >= 2 else round_ticks(10**low, 10**high, log=False)
    spacing = next(m * 10.0**e for e in range(math.floor(math.log10(high - low)) - 1, 99) for m in (1, 2, 5)
                   if (high - low) / (m * 10.0**e) <= 5)
    return [i * spacing for i in range(math.ceil(low / spacing), math.floor(high / spacing) + 1)]


def line_chart(series: dict, references: dict | None = None, x_label: str = "", y_label: str = "",
               size: tuple[int, int] = (720, 400), log_y: bool = True) -> Image.Image:
    r"""
    A labelled PNG-ready line chart, e.g. losses over training steps.

    Args:
        series (`dict[str, list[tuple[float, float]]]`): Name -> `(x, y)` points, drawn as lines in `PALETTE` order.
        references (`dict[str, float]`, *optional*): Name -> y, drawn as dashed horizontal lines (a target level).
        x_label, y_label (`str`): Axis titles.
        size (`tuple[int, int]`): Width and height in pixels.
        log_y (`bool`): Logarithmic y axis (all values must be positive).
    """
    references = references or {}
    entries = [*series, *references]
    if len(entries) > len(PALETTE):
        raise ValueError(f"line_chart draws at most {len(PALETTE)} lines and references, got {len(entries)}")
    points = [point for values in series.values() for point in values]
    if not points:
        raise ValueError("line_chart needs at least one point")
    ys = [y for _, y in points] + list(references.values())
    if log_y and min(ys) <= 0:
        raise ValueError(f"log_y needs positive values, got {min(ys)}")
    scale = math.log10 if log_y else float
    low, high = scale(min(ys)), scale(max(ys))
    low, high = (low - 0.5, high + 0.5) if high == low else (low - 0.05 * (high - low), high + 0.05 * (high - low))
    x_low, x_high = min(x for x, _ in points), max(x for x, _ in points)
    x_high = x_high if x_high > x_low else x_low + 1
    width, height = size
    left, right, top, bottom = 64, 16, 8 + LINE_HEIGHT * (len(entries) + 1) + 8, 40
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    def position(x, y):
        return (left + (x - x_low) / (x_high - x_low) * (width - left - right),
                height - bottom - (scale(y) - low) / (high - low) * (height - top - bottom))

    draw.rectangle((left, top, width - right, height - bottom), outline=(0, 0, 0))
    for y_value in round_ticks(low, high, log_y):
        _, y = position(x_low, y_value)
        draw.line((left - 4, y, left, y), fill=(0, 0, 0))
        draw.text((4, y - 6), f"{y_value:g}", fill=(0, 0, 0))
    for x_value in round_ticks(x_low, x_high, log=False):
        x, _ = position(x_value, 10**low if log_y else low)
        draw.line((x, height - bottom, x, height - bottom + 4), fill=(0, 0, 0))
        draw.text((x - 3 * len(f"{x_value:g}"), height - bottom + 6), f"{x_value:g}", fill=(0, 0, 0))
    draw.text((left + (width - left - right) // 2 - 3 * len(x_label), height - LINE_HEIGHT - 4), x_label,
              fill=(0, 0, 0))
    draw.text((4, 6 + LINE_HEIGHT * len(entries)), y_label + (" (log scale)" if log_y else ""), fill=(0, 0, 0))
    for colour, values in zip(PALETTE, series.values()):
        draw.line([position(x, y) for x, y in values], fill=colour, width=2)
    for colour, value in zip(PALETTE[len(series):], references.values()):
        _, y = position(x_low, value)
        for x in range(left, width - right, 12):  # dashed
            draw.line((x, y, min(x + 6, width - right), y), fill=colour, width=2)
    for i, (colour, name) in enumerate(zip(PALETTE, entries)):
        y = 6 + i * LINE_HEIGHT
        draw.line((left, y + 6, left + 20, y + 6), fill=colour, width=3 if name in series else 1)
        draw.text((left + 26, y), name + ("" if name in series else " (dashed)"), fill=(0, 0, 0))
    return canvas


__all__ = ["line_chart"]
