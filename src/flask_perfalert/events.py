"""The slow-request event: what subscribers of the signal receive."""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import report
from .latency import UsualLatency, seconds_text
from .time_by_kind import TimeShare, summary

if TYPE_CHECKING:
    from pyinstrument.session import Session

logger = logging.getLogger("flask_perfalert")


@dataclass(frozen=True)
class HotFrame:
    """One of the functions that took the most time in a profile."""

    function: str
    file: str
    line: int
    #: Share of the profiled time spent in this function itself, 0..1.
    share: float

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Escalation:
    """A slow request markedly slower than the worst one alerted in the window."""

    #: Seconds the worst request of this key alerted so far in the window took.
    previous_worst: float
    #: How much slower it had to be (``PERFALERT_ESCALATION_FACTOR``).
    factor: float


@dataclass(eq=False)
class SlowRequestEvent:
    """A request, or a call of a watched function, that was slower than its threshold.

    Request-derived values (``url``, ``params``, ``headers``) are already
    redacted: a value whose name looks secret reads ``"[Filtered]"``.
    """

    #: ``"request"`` for a monitored request, ``"function"`` for ``@perf.watch``.
    kind: Literal["request", "function"]
    #: The Flask endpoint (``None`` when no route matched), or the watched
    #: function's module-qualified name.
    endpoint: str | None
    #: The full URL of the request, or ``None`` for a function outside a request.
    url: str | None
    method: str | None
    #: Query-string and form values, and the JSON body's keys and values.
    params: dict[str, Any]
    #: Request headers worth showing; credentials are never captured.
    headers: dict[str, str]
    #: HTTP status sent to the client; ``None`` for a watched function.
    status_code: int | None
    #: Seconds the request or call took.
    duration: float
    #: Seconds it was allowed.
    threshold: float
    #: When it started (timezone-aware, UTC).
    timestamp: datetime
    #: True when an alert with the same :attr:`key` was already sent inside the window.
    duplicate: bool
    #: The pyinstrument session of the profile, or ``None`` when none was taken.
    profile: Session | None
    #: Which part of the request the profile covers, or why there is none.
    profile_note: str
    #: Host name and process id of the worker that served the request.
    host: str
    pid: int
    #: Unique id of this event; deliveries use it to avoid duplicate posts.
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: The profile's time by kind of work (database, outgoing HTTP, templates, the
    #: app's own code, ...), most first; empty without a profile.
    time_by_kind: list[TimeShare] = field(default_factory=list)
    #: How long this endpoint usually takes, or ``None`` until enough of its requests
    #: were sampled.
    usual: UsualLatency | None = None
    #: Slow requests (or calls) of this key that the window suppressed since its
    #: previous alert, in every worker and host sharing the store.
    suppressed: int = 0
    #: Set when this is not the first alert of the window but an escalation: it is
    #: markedly slower than the worst one alerted so far.
    escalation: Escalation | None = None
    #: Where the file subscriber wrote the HTML report, once it has (else ``None``).
    report_path: Path | None = field(default=None, repr=False)
    _html: str | None = field(default=None, repr=False)
    _html_done: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def key(self) -> str:
        """The de-duplication key: method and endpoint (or the function's name)."""
        if self.kind == "function":
            return f"function {self.endpoint}"
        return f"{self.method} {self.endpoint}"

    @property
    def html(self) -> str | None:
        """The HTML report, rendered on first use; ``None`` if rendering failed."""
        with self._lock:
            if not self._html_done:
                try:
                    self._html = report.render_report(self)
                except Exception:
                    logger.exception("Could not render the report for %s", self.key)
                    self._html = None
                self._html_done = True
            return self._html

    def hot_frames(self, limit: int = 5) -> list[HotFrame]:
        """The functions with the most own time in the profile, hottest first."""
        if self.profile is None:
            return []
        return hot_frames(self.profile, limit)

    def time_summary(self) -> str:
        """``"62 % database (sqlalchemy), 30 % app code (shop.orders), 8 % templates"``."""
        return summary(self.time_by_kind)

    def unusual(self) -> str:
        """``"23 x this endpoint's median of 80 ms (p95 210 ms)"``, or ``""`` when not known."""
        usual = self.usual
        if usual is None:
            return ""
        whose = "this function's" if self.kind == "function" else "this endpoint's"
        return (
            f"{usual.times(self.duration):.0f} x {whose} median of {seconds_text(usual.median)} "
            f"(p95 {seconds_text(usual.p95)})"
        )

    def headline(self) -> str:
        """The alert in one line: what, how unusual, what kind of time, how often.

        ``"Slow request: GET orders (200) took 1.840s ...; 23 x this endpoint's median
        of 80 ms (p95 210 ms); 62 % database (sqlalchemy), 38 % app code (shop);
        14 more since the previous alert"``.
        """
        parts = [f"{'Getting worse' if self.escalation else 'Slow'} {self.kind}: {self.summary()}"]
        if self.escalation is not None:
            previous = self.escalation.previous_worst
            parts.append(
                f"{self.duration / previous:.1f} x the worst alerted so far ({previous:.3f}s)"
            )
        parts.extend(part for part in (self.unusual(), self.time_summary()) if part)
        if self.suppressed:
            parts.append(f"{self.suppressed} more since the previous alert")
        return "; ".join(parts)

    def summary(self) -> str:
        """One line saying what was slow, for logs and messages."""
        what = self.endpoint or "(no endpoint)"
        if self.kind == "request":
            what = f"{self.method} {what} ({self.status_code})"
        return (
            f"{what} took {self.duration:.3f}s (threshold {self.threshold:.3f}s) "
            f"at {self.timestamp.isoformat(timespec='seconds')}"
        )


def hot_frames(session: Session, limit: int = 5) -> list[HotFrame]:
    """Functions of ``session`` by their own ("self") time, hottest first, as shares."""
    root = session.root_frame()
    if root is None or root.time <= 0:
        return []
    total = root.time
    own: dict[tuple[str, str, int], float] = {}
    stack = [root]
    while stack:
        frame = stack.pop()
        stack.extend(frame.children)
        # The tree is made for this count only: without the links back to the parent
        # it is freed at once instead of waiting, with every frame of a deep profile,
        # for a full garbage collection (which an app busy allocating rarely gets to).
        frame.parent = None
        if frame.is_synthetic:
            continue
        self_time = frame.total_self_time
        if self_time <= 0:
            continue
        key = (frame.function, frame.file_path or "?", frame.line_no or 0)
        own[key] = own.get(key, 0.0) + self_time
    ranked = sorted(own.items(), key=lambda item: item[1], reverse=True)[:limit]
    return [
        HotFrame(function=func, file=session.shorten_path(path), line=line, share=t / total)
        for (func, path, line), t in ranked
    ]
