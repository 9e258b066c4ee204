"""Bar charts as geometry for inline SVG, computed on the server (no script, no network).

A chart is a list of bars with their coordinates in a fixed viewBox (the SVG scales to the
page's width) plus its axis ticks and a table of the same numbers, so that a person, a
screen reader and a test can all read the data.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 40
MAX_X_LABELS = 6
# At most this many steps up the y axis, each a round number (1, 2 or 5 times a power of ten).
MAX_Y_STEPS = 5
# Of a bucket's slot, the share its bars fill (the rest is the gap between buckets).
FILL = 0.8


@dataclass(frozen=True)
class Bar:
    """One bar: where it is drawn, and the number it shows."""

    series: str
    start: str
    value: float | None
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Tick:
    """A label on an axis, at its coordinate."""

    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    """A bar chart: its bars, axes and the table of its numbers."""

    key: str
    title: str
    series: list[str]
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    # One row per bucket: its label and each series' value (None: nothing to show).
    rows: list[tuple[str, list[float | None]]]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM
    right: int = WIDTH - RIGHT


def nice_step(value: float) -> float:
    """Return the least of 1, 2, 5 times a power of ten (at least 1) not below `value`."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(step * power for step in (1, 2, 5, 10) if step * power >= value))


def y_scale(largest: float, ceiling: float | None) -> tuple[float, float]:
    """Return the top of the y axis and its step: round numbers, at most MAX_Y_STEPS steps."""
    if ceiling is not None:
        return ceiling, ceiling / 4
    step = nice_step(largest / MAX_Y_STEPS)
    return max(step, step * math.ceil(largest / step)), step


def number(value: float) -> str:
    """Show a figure without a needless `.0`."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def bucket_label(start: dt.datetime, interval: str) -> str:
    """Name a bucket by its start in UTC: `12-05 10:00` for hours, `2026-12-05` for days."""
    return start.strftime("%m-%d %H:00" if interval == "hour" else "%Y-%m-%d")


def bar_chart(
    key: str,
    title: str,
    starts: Sequence[dt.datetime],
    interval: str,
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    ceiling: float | None = None,
) -> Chart:
    """Lay out grouped bars, one group per bucket, one bar per series."""
    values = [v for _, column in series for v in column if v is not None]
    top, step = y_scale(max(values, default=0), ceiling)
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    slot = plot_width / max(len(starts), 1)
    bar_width = slot * FILL / max(len(series), 1)
    bars = []
    for i, start in enumerate(starts):
        for j, (name, column) in enumerate(series):
            value = column[i]
            height = 0.0 if value is None else plot_height * min(value, top) / top
            bars.append(
                Bar(
                    series=name,
                    start=start.isoformat().replace("+00:00", "Z"),
                    value=value,
                    x=round(LEFT + i * slot + slot * (1 - FILL) / 2 + j * bar_width, 2),
                    y=round(TOP + plot_height - height, 2),
                    width=round(max(bar_width, 0.5), 2),
                    height=round(height, 2),
                )
            )
    y_ticks = [
        Tick(at=round(TOP + plot_height * (1 - k * step / top), 2), label=number(k * step))
        for k in range(round(top / step) + 1)
    ]
    every = max(1, math.ceil(len(starts) / MAX_X_LABELS))
    x_ticks = [
        Tick(at=round(LEFT + i * slot + slot / 2, 2), label=bucket_label(start, interval))
        for i, start in enumerate(starts)
        if i % every == 0
    ]
    rows = [
        (bucket_label(start, interval), [column[i] for _, column in series])
        for i, start in enumerate(starts)
    ]
    return Chart(
        key=key,
        title=title,
        series=[name for name, _ in series],
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        rows=rows,
    )
