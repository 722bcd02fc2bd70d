"""The geometry of a task's timeline: one row per stage, each attempt drawn to scale as
its time in the queue (queued → running) and its run (running → ended), with a mark
where the stage was created and where each attempt ended.

Pure: numbers in, numbers out; the template draws the SVG.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LABEL_WIDTH = 180
PLOT_WIDTH = 760
ROW_HEIGHT = 26
BAR_HEIGHT = 14
AXIS_HEIGHT = 24
#: The narrowest bar: an attempt of a millisecond must still show.
MIN_BAR = 2


@dataclass(frozen=True)
class Attempt:
    """One attempt of a stage, as far as the document knows its times (epoch ms)."""

    number: int
    queued_ms: float | None
    started_ms: float | None
    ended_ms: float | None
    #: PENDING, RUNNING, SUCCESS, FAILED, or LOST (replaced while live)
    status: str


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    kind: str  # queued | running
    status: str
    title: str


@dataclass(frozen=True)
class Mark:
    x: float
    kind: str  # created | ended | reuse
    status: str
    title: str


@dataclass
class Row:
    label: str
    y: float
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass
class Timeline:
    width: int
    height: int
    rows: list[Row]
    ticks: list[Tick]
    start_ms: float
    span_ms: float
    label_width: int = LABEL_WIDTH
    plot_width: int = PLOT_WIDTH
    row_height: int = ROW_HEIGHT
    bar_height: int = BAR_HEIGHT


def seconds_text(ms: float) -> str:
    seconds = ms / 1000
    if seconds < 1:
        return f"{ms:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s".replace(".00 s", " s")
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def build(stages: list[tuple[str, float | None, list[Attempt], list[float]]], now_ms: float) -> Timeline:
    """The timeline of ``stages``: (name, created_ms, attempts oldest first, the times of
    the recorded requests that reused it) each. A live attempt reaches ``now_ms``."""
    moments = [created for _, created, _, _ in stages if created is not None]
    for _, _, attempts, reuses in stages:
        moments += reuses
        for attempt in attempts:
            moments += [t for t in (attempt.queued_ms, attempt.started_ms, attempt.ended_ms) if t is not None]
    start = min(moments) if moments else now_ms
    end = max([*moments, now_ms if _any_live(stages) else start])
    span = max(end - start, 1.0)

    def x(ms: float) -> float:
        return LABEL_WIDTH + (ms - start) / span * PLOT_WIDTH

    rows = []
    for index, (name, created_ms, attempts, reuses) in enumerate(stages):
        row = Row(label=name, y=AXIS_HEIGHT + index * ROW_HEIGHT)
        if created_ms is not None:
            row.marks.append(
                Mark(x(created_ms), "created", "", f"{name}: created at +{seconds_text(created_ms - start)}")
            )
        for attempt in attempts:
            ended = attempt.ended_ms if attempt.ended_ms is not None else now_ms
            running_from = attempt.started_ms
            if attempt.queued_ms is not None:
                queued_until = running_from if running_from is not None else ended
                row.bars.append(_bar(x, attempt, "queued", attempt.queued_ms, queued_until))
            if running_from is not None:
                row.bars.append(_bar(x, attempt, "running", running_from, ended))
            if attempt.ended_ms is not None:
                title = f"attempt {attempt.number}: {attempt.status} at +{seconds_text(attempt.ended_ms - start)}"
                row.marks.append(Mark(x(attempt.ended_ms), "ended", attempt.status, title))
        for reused_ms in reuses:
            title = f"reused by a request at +{seconds_text(reused_ms - start)}"
            row.marks.append(Mark(x(reused_ms), "reuse", "", title))
        rows.append(row)
    ticks = [Tick(LABEL_WIDTH + PLOT_WIDTH * f, "+" + seconds_text(span * f)) for f in (0, 0.25, 0.5, 0.75, 1)]
    height = AXIS_HEIGHT + max(len(stages), 1) * ROW_HEIGHT + 4
    return Timeline(LABEL_WIDTH + PLOT_WIDTH + 40, height, rows, ticks, start, span)


def _bar(x, attempt: Attempt, kind: str, since_ms: float, until_ms: float) -> Bar:
    left, right = x(since_ms), x(until_ms)
    what = "in the queue" if kind == "queued" else "running"
    title = f"attempt {attempt.number}: {what} {seconds_text(until_ms - since_ms)} ({attempt.status})"
    return Bar(left, max(right - left, MIN_BAR), kind, attempt.status, title)


def _any_live(stages) -> bool:
    return any(a.ended_ms is None for _, _, attempts, _ in stages for a in attempts)
