"""What a report says about itself: the ``<meta name="perfalert-*">`` tags in its head.

:func:`render_meta` writes them; :func:`read_report_info` reads them back from
a report's first bytes, for ``flask perfalert reports`` and the report index,
so neither has to parse a whole page. The format is defined here only.
"""

from __future__ import annotations

import html
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._redaction import printable
from .latency import seconds_text

if TYPE_CHECKING:
    from .events import SlowRequestEvent

#: Prefix of the ``<meta name=...>`` tags in a report's head.
META_PREFIX = "perfalert-"


def title_of(event: SlowRequestEvent) -> str:
    """What a person recognises: ``GET /orders/7`` for a request, ``name()`` for a function."""
    what = event.endpoint or "(no endpoint)"
    if event.kind != "request":
        return f"{what}()"
    try:
        path = urlsplit(event.url).path if event.url else ""
    except ValueError:  # a placeholder such as "[URL not available: ...]"
        path = ""
    return f"{event.method} {path or what}"


def render_meta(event: SlowRequestEvent) -> str:
    """``<meta name="perfalert-*">`` tags and the ``<title>`` for the page's head.

    ``flask perfalert reports`` and the report index read them from the first
    bytes of a report (:func:`read_report_info`) without parsing the whole
    page: the short tags come first, then the endpoint, the URL (cut) and the
    title, whose lengths depend on the request.
    """
    title = title_of(event)
    url = event.url or ""
    meta = {
        "kind": event.kind,
        "method": event.method or "",
        "status": "" if event.status_code is None else str(event.status_code),
        "duration": repr(float(event.duration)),
        "threshold": repr(float(event.threshold)),
        "time": event.timestamp.isoformat(timespec="milliseconds"),
        "suppressed": str(event.suppressed),
        "usual-median": "" if event.usual is None else repr(float(event.usual.median)),
        "usual-p95": "" if event.usual is None else repr(float(event.usual.p95)),
        "escalated-from": (
            "" if event.escalation is None else repr(float(event.escalation.previous_worst))
        ),
        "endpoint": (event.endpoint or "")[:META_ENDPOINT_CHARS],
        "url": url if len(url) <= META_URL_CHARS else url[:META_URL_CHARS] + "...",
    }
    tags = "".join(
        f'<meta name="{META_PREFIX}{name}" content="{escape(value, quote=True)}">'
        for name, value in meta.items()
    )
    heading = f"{title} took {event.duration:.3f} s - Flask-PerfAlert"
    return printable(f"{tags}<title>{escape(heading)}</title>")


#: A report's <meta> tags are in its first bytes (see render_meta); no more is read.
HEAD_BYTES = 8192
#: The endpoint and URL in the meta tags are cut so that every tag fits in HEAD_BYTES.
META_ENDPOINT_CHARS = 1024
META_URL_CHARS = 512
_META = re.compile(r'<meta name="perfalert-([a-z0-9-]+)" content="([^"]*)">')
_NAME_TIME = re.compile(r"^perfalert-(\d{8}T\d{6}\.\d{6})Z-")


@dataclass(frozen=True)
class ReportInfo:
    """What a report says about itself in its head (see :func:`render_meta`)."""

    path: Path
    #: When the request started (UTC); from the file name if the head does not say.
    time: datetime | None = None
    #: ``"request"`` or ``"function"``; ``""`` when the head could not be read.
    kind: str = ""
    endpoint: str | None = None
    method: str | None = None
    status: int | None = None
    duration: float | None = None
    threshold: float | None = None
    #: Slow requests of the same key the window suppressed before this alert.
    suppressed: int = 0
    usual_median: float | None = None
    usual_p95: float | None = None
    #: The worst duration alerted before in the window, when this is an escalation.
    escalated_from: float | None = None
    url: str | None = None

    def what(self) -> str | None:
        """``GET orders.show`` for a request, ``shop.jobs.nightly()`` for a function."""
        if self.kind == "function" and self.endpoint:
            return f"{self.endpoint}()"
        if self.method:
            return f"{self.method} {self.endpoint or '(no endpoint)'}"
        return self.endpoint

    def iso_time(self) -> str | None:
        return None if self.time is None else self.time.isoformat(timespec="milliseconds")

    def short_time(self) -> str:
        """``2026-01-02 03:04:05`` (UTC), or ``?``."""
        if self.time is None:
            return "?"
        return self.time.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    def times_median(self) -> float | None:
        """How many times the endpoint's usual median this report's duration is."""
        if self.duration is None or not self.usual_median or self.usual_median <= 0:
            return None
        return self.duration / self.usual_median

    def unusual(self) -> str:
        """``23 x median 80 ms``, or ``""`` when the usual latency was not known."""
        times = self.times_median()
        if times is None or self.usual_median is None:
            return ""
        return f"{times:.0f} x median {seconds_text(self.usual_median)}"

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "time": self.iso_time(),
            "endpoint": self.what(),
            "duration": self.duration,
            "status": self.status,
            "threshold": self.threshold,
            "suppressed": self.suppressed,
            "usual_median": self.usual_median,
            "usual_p95": self.usual_p95,
            "escalated_from": self.escalated_from,
            "url": self.url,
        }


def read_report_info(path: Path) -> ReportInfo:
    """What the report at ``path`` says about itself, from its first :data:`HEAD_BYTES`.

    A file that cannot be read (or a link: never followed) gives what its name says.
    """
    when = None
    match = _NAME_TIME.match(path.name)
    if match:
        stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%f")
        when = stamp.replace(tzinfo=timezone.utc)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            head = os.read(fd, HEAD_BYTES).decode("utf-8", "replace")
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return ReportInfo(path=path, time=when)
    head = head.partition("</head>")[0]
    meta = {name: html.unescape(value) for name, value in _META.findall(head)}
    try:
        when = datetime.fromisoformat(meta["time"])
    except (KeyError, ValueError):
        pass
    return ReportInfo(
        path=path,
        time=when,
        kind=meta.get("kind", ""),
        endpoint=meta.get("endpoint") or None,
        method=meta.get("method") or None,
        status=_number(meta.get("status"), int),
        duration=_number(meta.get("duration"), float),
        threshold=_number(meta.get("threshold"), float),
        suppressed=max(0, _number(meta.get("suppressed"), int) or 0),
        usual_median=_number(meta.get("usual-median"), float),
        usual_p95=_number(meta.get("usual-p95"), float),
        escalated_from=_number(meta.get("escalated-from"), float),
        url=meta.get("url") or None,
    )


def _number(text: str | None, kind: type[int] | type[float]) -> Any:
    """``text`` as a finite ``kind``, or None."""
    if not text:
        return None
    try:
        value = kind(text)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) else None
