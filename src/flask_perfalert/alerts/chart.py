"""The report index's chart: slow requests per endpoint over the alert window, as inline SVG.

Counted from the reports alone: each report is one slow request (its alert)
plus the slow requests of the same key that it says the window suppressed
before it, all on the day of the report (the suppressed ones happened between
the previous alert and this one; their own times are not kept). One row per
endpoint, the busiest first; one bar per day (UTC), or per hour for a window
of up to two days, or per several days for a window of months.

No script, no external file: everything is drawn by the SVG itself, and every
name from a report is escaped and shown printable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from typing import NamedTuple

from .._redaction import printable
from ..report_meta import ReportInfo

#: Rows of the chart: the endpoints with the most slow requests in the window.
TOP_ENDPOINTS = 10
#: A window of up to this many seconds is drawn with a bar per hour.
_HOURLY_UP_TO = 2 * 86400
#: At most this many bars per row: a longer window puts several days in a bar.
_MAX_BARS = 60
#: Drawing sizes, in pixels.
_LABEL_WIDTH = 300
_BARS_WIDTH = 600
_TOTAL_WIDTH = 70
_ROW_HEIGHT = 24
_BAR_MAX = 18
_AXIS_HEIGHT = 22
_LABEL_CHARS = 40


def safe_text(value: str) -> str:
    """``value`` as escaped, printable text (element content and quoted attributes alike)."""
    return escape(printable(value), quote=True)


@dataclass(frozen=True)
class Buckets:
    """The window cut into equal periods, aligned on UTC hours or days."""

    #: Epoch seconds at which the first period starts.
    start: float
    #: Seconds per period.
    size: float
    count: int

    @classmethod
    def for_window(cls, now: float, window: float) -> Buckets:
        if window <= _HOURLY_UP_TO:
            size = 3600.0
        else:
            size = 86400.0 * max(1, math.ceil(window / 86400 / _MAX_BARS))
        first = math.floor((now - window) / size)
        last = math.floor(now / size)
        return cls(start=first * size, size=size, count=last - first + 1)

    def index(self, when: float) -> int | None:
        """The period ``when`` falls in (a time after the window's end: the last), or None."""
        if when < self.start:
            return None
        return min(self.count - 1, int((when - self.start) // self.size))

    def label(self, index: int) -> str:
        begin = datetime.fromtimestamp(self.start + index * self.size, tz=timezone.utc)
        if self.size < 86400:
            return begin.strftime("%Y-%m-%d %H:00")
        if self.size == 86400:
            return begin.strftime("%Y-%m-%d")
        end = datetime.fromtimestamp(self.start + (index + 1) * self.size - 1, tz=timezone.utc)
        return f"{begin:%Y-%m-%d} to {end:%Y-%m-%d}"

    def unit(self) -> str:
        if self.size < 86400:
            return "hour"
        if self.size == 86400:
            return "day"
        return f"{self.size / 86400:g} days"


@dataclass
class EndpointRow:
    """One endpoint's slow requests per period."""

    name: str
    counts: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts)


class Slow(NamedTuple):
    """What one report adds to the chart."""

    #: ``GET orders.show`` or ``shop.jobs.nightly()``.
    endpoint: str
    #: When (epoch seconds).
    when: float
    #: Slow requests: the alert itself and those suppressed before it.
    slow: int


def slow_of(info: ReportInfo) -> Slow | None:
    """What the report ``info`` adds to the chart; None when it does not say when it was."""
    if info.time is None:
        return None
    return Slow(info.what() or "(unknown)", info.time.timestamp(), 1 + info.suppressed)


def slow_per_endpoint(
    points: Iterable[Slow | None], now: float, window: float
) -> tuple[Buckets, list[EndpointRow]]:
    """Every endpoint with slow requests in the window (busiest first), and the periods."""
    buckets = Buckets.for_window(now, window)
    rows: dict[str, EndpointRow] = {}
    begin = now - window
    for point in points:
        if point is None or point.when < begin:
            continue
        index = buckets.index(point.when)
        if index is None:
            continue
        row = rows.get(point.endpoint)
        if row is None:
            row = rows[point.endpoint] = EndpointRow(point.endpoint, [0] * buckets.count)
        row.counts[index] += point.slow
    ranked = sorted(rows.values(), key=lambda row: (-row.total, row.name))
    return buckets, ranked


def _short(name: str) -> str:
    return name if len(name) <= _LABEL_CHARS else name[: _LABEL_CHARS - 1] + "\u2026"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def render_chart(
    points: Iterable[Slow | None], now: float, window: float, top: int = TOP_ENDPOINTS
) -> str:
    """The SVG chart of ``points`` (see :func:`slow_of`), or a line saying there is none."""
    buckets, rows = slow_per_endpoint(points, now, window)
    if not rows:
        return '<p class="none" id="perfalert-chart">No slow requests in the window.</p>'
    shown, rest = rows[:top], rows[top:]
    peak = max(max(row.counts) for row in shown)
    slot = _BARS_WIDTH / buckets.count
    bar = max(1.0, slot * 0.7)
    width = _LABEL_WIDTH + _BARS_WIDTH + _TOTAL_WIDTH
    height = len(shown) * _ROW_HEIGHT + _AXIS_HEIGHT
    parts = [
        f'<svg id="perfalert-chart" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="Slow requests per endpoint and {buckets.unit()}">'
    ]
    for number, row in enumerate(shown):
        top_y = number * _ROW_HEIGHT
        base = top_y + _ROW_HEIGHT - 4
        name = safe_text(row.name)
        parts.append(
            f'<g class="endpoint" data-endpoint="{name}" data-total="{row.total}">'
            f"<title>{name}: {_plural(row.total, 'slow request')}</title>"
            f'<text class="label" x="{_LABEL_WIDTH - 10}" y="{base - 4}" '
            f'text-anchor="end">{safe_text(_short(row.name))}</text>'
            f'<rect class="track" x="{_LABEL_WIDTH}" y="{base - _BAR_MAX}" '
            f'width="{_BARS_WIDTH}" height="{_BAR_MAX}"/>'
        )
        for index, count in enumerate(row.counts):
            if not count:
                continue
            tall = max(2.0, _BAR_MAX * count / peak)
            label = buckets.label(index)
            parts.append(
                f'<rect class="bar" data-period="{label}" data-count="{count}" '
                f'x="{_LABEL_WIDTH + index * slot + (slot - bar) / 2:.1f}" '
                f'y="{base - tall:.1f}" width="{bar:.1f}" height="{tall:.1f}">'
                f"<title>{name}: {_plural(count, 'slow request')}, {label}</title></rect>"
            )
        parts.append(
            f'<text class="total" x="{_LABEL_WIDTH + _BARS_WIDTH + 8}" y="{base - 4}">'
            f"{row.total}</text></g>"
        )
    axis_y = len(shown) * _ROW_HEIGHT + 15
    ends = [(0, "start"), (buckets.count - 1, "end")] if buckets.count > 1 else [(0, "start")]
    for index, anchor in ends:
        x = _LABEL_WIDTH + (index * slot if anchor == "start" else (index + 1) * slot)
        parts.append(
            f'<text class="axis" x="{x:.1f}" y="{axis_y}" text-anchor="{anchor}">'
            f"{buckets.label(index)}</text>"
        )
    parts.append("</svg>")
    if rest:
        others = sum(row.total for row in rest)
        parts.append(
            f'<p class="note">And {_plural(len(rest), "other endpoint")} with '
            f"{_plural(others, 'slow request')} in the window.</p>"
        )
    return "".join(parts)
