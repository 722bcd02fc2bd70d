"""Small SVG bar charts of per-minute counts: the geometry, which the template draws.

One bar per minute, the oldest on the left and the current minute on the right, scaled
to the largest count of the series (at least 1, so that an idle hour draws flat).
"""

from __future__ import annotations

from dataclasses import dataclass

BAR_WIDTH = 5
GAP = 1
HEIGHT = 48
#: Room below the bars for the axis labels.
AXIS = 14


@dataclass(frozen=True)
class Bar:
    x: int
    y: float
    height: float
    count: int
    minutes_ago: int


@dataclass(frozen=True)
class Chart:
    title: str
    total: int
    peak: int
    bars: list[Bar]
    width: int
    height: int
    plot_height: int = HEIGHT


def bar_chart(title: str, counts: list[int]) -> Chart:
    counts = [int(c or 0) for c in counts]
    peak = max(counts, default=0)
    scale = HEIGHT / max(peak, 1)
    bars = []
    for index, count in enumerate(counts):
        height = count * scale
        if count and height < 1:
            height = 1
        bars.append(Bar(index * (BAR_WIDTH + GAP), HEIGHT - height, height, count, len(counts) - 1 - index))
    width = max(len(counts), 1) * (BAR_WIDTH + GAP)
    return Chart(title, sum(counts), peak, bars, width, HEIGHT + AXIS)
