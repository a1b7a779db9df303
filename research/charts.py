"""Line charts of training curves for the research reports, drawn with matplotlib (the `demo` extra)."""

import itertools

DECADE = 10.0  # a y axis whose values span at least this ratio is drawn on a log scale


def line_chart(series: dict, references: dict | None = None, x_label: str = "", y_label: str = "",
               size: tuple[float, float] = (7.2, 4.0), log_x: bool = False):
    r"""
    A line chart, e.g. losses over training steps: one line per series, a labelled dashed line per reference level,
    a legend, and a log y axis where the values span a decade or more.

    Args:
        series (`dict[str, list[tuple[float, float]]]`): Name -> `(x, y)` points.
        references (`dict[str, float]`, *optional*): Name -> y, drawn as dashed horizontal lines (a target level).
        x_label, y_label (`str`): Axis titles.
        size (`tuple[float, float]`): Width and height in inches (at 100 dpi when saved as PNG).
        log_x (`bool`): A log x axis (e.g. training samples over decades).

    Returns:
        A `matplotlib.figure.Figure` (save it with `figure.savefig(path, format="png")`).
    """
    from matplotlib.figure import Figure

    references = references or {}
    points = [point for values in series.values() for point in values]
    if not points:
        raise ValueError("line_chart needs at least one point")
    ys = [y for _, y in points] + list(references.values())
    figure = Figure(figsize=size, dpi=100, layout="constrained")
    axes = figure.subplots()
    for name, values in series.items():
        axes.plot([x for x, _ in values], [y for _, y in values], label=name, linewidth=1.5, marker=".")
    for (name, value), style in zip(references.items(), itertools.cycle(("--", ":", "-."))):
        axes.axhline(value, linestyle=style, linewidth=1.2, color="0.3", label=f"{name}: {value:.4g}")
    if log_x:
        axes.set_xscale("log")
    if min(ys) > 0 and max(ys) / min(ys) >= DECADE:
        axes.set_yscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize="small")
    return figure


__all__ = ["line_chart"]
