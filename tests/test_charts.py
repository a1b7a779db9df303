"""The research reports' line charts: series, references, ticks."""

import pytest

from lm4lv.research.charts import PALETTE, line_chart, round_ticks


def test_line_chart_draws_each_series_and_reference_and_refuses_what_it_cannot_draw():
    falling = [(step, 1.0 / step) for step in range(1, 101)]
    chart = line_chart({"falling": falling, "flat": [(1, 0.2), (100, 0.2)]}, {"target": 0.05}, x_label="step")
    assert chart.size == (720, 400)
    pixels = chart.load()
    rows_of = {colour: sorted({y for x in range(chart.width) for y in range(chart.height) if pixels[x, y] == colour})
               for colour in PALETTE[:3]}
    assert all(rows_of.values())  # both lines and the dashed reference are drawn
    legend_bottom = 8 + 12 * 4
    plot_rows = {colour: [y for y in rows if y > legend_bottom] for colour, rows in rows_of.items()}
    first_x = min(x for x in range(chart.width) for y in range(legend_bottom, chart.height)
                  if pixels[x, y] == PALETTE[0])
    last_x = max(x for x in range(chart.width) for y in range(legend_bottom, chart.height)
                 if pixels[x, y] == PALETTE[0])
    y_at = {x: [y for y in range(legend_bottom, chart.height) if pixels[x, y] == PALETTE[0]] for x in (first_x, last_x)}
    assert max(y_at[first_x]) < min(y_at[last_x])  # the falling series starts high and ends low
    # on a log axis 0.2 lies above 0.05 (the reference) and both inside the falling series' span
    assert max(plot_rows[PALETTE[1]]) < min(plot_rows[PALETTE[2]]) < max(y_at[last_x])
    assert round_ticks(25, 2000, log=False) == [500, 1000, 1500, 2000]
    assert round_ticks(-1.2, 0.14, log=True) == [0.1, 0.2, 0.5, 1.0]  # log10 bounds: 0.063 to 1.38
    assert round_ticks(-0.85, -0.72, log=True) == pytest.approx([0.15, 0.16, 0.17, 0.18, 0.19])  # too narrow for 1-2-5
    with pytest.raises(ValueError, match="positive values"):
        line_chart({"zero": [(0, 0.0), (1, 1.0)]})
    with pytest.raises(ValueError, match="at most 5"):
        line_chart({str(i): [(0, 1.0), (1, 2.0)] for i in range(6)})
