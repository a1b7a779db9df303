"""The research reports' line charts (matplotlib): lines, labelled references, legend, axes, log scale."""

import io

import pytest
from PIL import Image

from lm4lv.research.charts import line_chart


def test_line_chart_draws_each_series_and_a_labelled_reference_on_a_log_axis_when_values_span_decades():
    falling = [(step, 1.0 / step) for step in range(1, 101)]
    figure = line_chart({"falling": falling, "flat": [(1, 0.2), (100, 0.2)]}, {"target": 0.05}, x_label="step",
                        y_label="loss")
    axes = figure.axes[0]
    assert axes.get_yscale() == "log" and axes.get_xlabel() == "step" and axes.get_ylabel() == "loss"
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert list(lines) == ["falling", "flat", "target: 0.05"]
    assert list(lines["falling"].get_ydata()) == [y for _, y in falling]
    assert lines["target: 0.05"].get_linestyle() == "--"
    assert [text.get_text() for text in axes.get_legend().get_texts()] == list(lines)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    assert Image.open(png).size == (720, 400)


def test_line_chart_keeps_a_linear_axis_for_values_within_a_decade_and_refuses_no_points():
    figure = line_chart({"a": [(0, 0.3), (10, 0.2)]}, {"level": 0.25})
    assert figure.axes[0].get_yscale() == "linear"
    assert line_chart({"with zero": [(0, 0.0), (1, 5.0)]}).axes[0].get_yscale() == "linear"
    with pytest.raises(ValueError, match="at least one point"):
        line_chart({"empty": []})


def test_line_chart_draws_a_log_x_axis_and_tells_references_apart_by_line_style():
    figure = line_chart({"PSNR": [(4000, 24.0), (32000, 26.5)]}, {"MAE-r": 27.5, "Input": 20.7}, log_x=True)
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and axes.get_yscale() == "linear"
    styles = {line.get_label(): line.get_linestyle() for line in axes.get_lines()}
    assert styles["MAE-r: 27.5"] == "--" and styles["Input: 20.7"] == ":"
