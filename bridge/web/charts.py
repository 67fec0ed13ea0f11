"""Small inline-SVG charts for the owner page, built from numbers only (nothing to escape)."""

from __future__ import annotations

from collections.abc import Sequence

WIDTH = 480
HEIGHT = 120
AXIS = 16  # room for the hour labels under the bars


def budget_svg(per_hour: Sequence[int], *, used: int, limit: int, hourly_cap: int = 0) -> str:
    """24 bars of provider calls per hour today, with the day's total against the budget.

    Bars are drawn to the scale of the hourly cap (and the cap as a line), so 11 calls against a
    cap of 40 look like a quarter, not like a full hour: scaled to the busiest hour instead,
    the busiest bar always looked full."""
    hours = list(per_hour)[:24] + [0] * max(0, 24 - len(per_hour))
    top = max([*hours, hourly_cap, 1])
    slot = WIDTH / 24
    plot = HEIGHT - AXIS
    bars = [_cap_line(hourly_cap, top, plot)] if hourly_cap > 0 else []
    for hour, count in enumerate(hours):
        height = round(plot * count / top, 1)
        x = round(hour * slot + 1, 1)
        bars.append(
            f'<rect x="{x}" y="{round(plot - height, 1)}" width="{round(slot - 2, 1)}" '
            f'height="{height}"><title>{hour:02d}:00 — {int(count)} calls</title></rect>'
        )
    labels = "".join(
        f'<text x="{round(h * slot + slot / 2, 1)}" y="{HEIGHT - 3}">{h:02d}</text>'
        for h in range(0, 24, 3)
    )
    summary = f"{int(used)} of {int(limit)} provider calls used today"
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{summary}">'
        f'<title>{summary}</title>{"".join(bars)}<g class="labels">{labels}</g></svg>'
    )


def _cap_line(cap: int, top: int, plot: int) -> str:
    y = round(plot - plot * cap / top, 1)
    return (
        f'<line class="cap" x1="0" x2="{WIDTH}" y1="{y}" y2="{y}"/>'
        f'<text class="cap" x="{WIDTH - 2}" y="{max(8.0, y - 2)}">{int(cap)} an hour</text>'
    )


def usage_ratio(used: int, limit: int) -> float:
    """Share of the budget used, 0..1 (for the meter element)."""
    return 0.0 if limit <= 0 else min(1.0, max(0.0, used / limit))
