"""The console's bar charts: round axis steps, bars in proportion, every bucket present."""

from __future__ import annotations

import datetime as dt

import pytest

from receiver.console.charts import BOTTOM, HEIGHT, TOP, bar_chart, y_scale

START = dt.datetime(2026, 12, 5, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("largest", "top", "step"),
    [(0, 1, 1), (3, 3, 1), (7, 8, 2), (20.4, 25, 5), (99, 100, 20), (2000, 2000, 500)],
)
def test_the_y_axis_goes_up_in_round_steps_just_past_the_largest_value(
    largest: float, top: float, step: float
) -> None:
    assert y_scale(largest, None) == (top, step)


def test_bars_are_in_proportion_and_every_bucket_has_one_per_series() -> None:
    starts = [START + dt.timedelta(hours=i) for i in range(3)]
    series = [("started", [0, 2, 4]), ("ended", [1, 0, None])]
    chart = bar_chart("m", "Meetings", starts, "hour", series)
    assert [(b.series, b.start, b.value) for b in chart.bars] == [
        ("started", "2026-12-05T10:00:00Z", 0),
        ("ended", "2026-12-05T10:00:00Z", 1),
        ("started", "2026-12-05T11:00:00Z", 2),
        ("ended", "2026-12-05T11:00:00Z", 0),
        ("started", "2026-12-05T12:00:00Z", 4),
        ("ended", "2026-12-05T12:00:00Z", None),
    ]
    plot = HEIGHT - TOP - BOTTOM
    heights = {(b.series, b.start[11:13]): b.height for b in chart.bars}
    assert heights[("started", "12")] == plot  # 4 of 4
    assert heights[("started", "11")] == plot / 2
    assert heights[("ended", "12")] == 0  # unknown: no bar
    assert [t.label for t in chart.y_ticks] == ["0", "1", "2", "3", "4"]
    assert chart.rows[2] == ("12-05 12:00", [4, None])
    # Bars of one bucket sit side by side, left of the next bucket's.
    xs = [b.x for b in chart.bars]
    assert xs == sorted(xs)


def test_a_fixed_ceiling_caps_bars_and_labels_quarters() -> None:
    chart = bar_chart("s", "Success", [START], "day", [("success", [100.0])], ceiling=100)
    assert [t.label for t in chart.y_ticks] == ["0", "25", "50", "75", "100"]
    assert chart.rows == [("2026-12-05", [100.0])]
