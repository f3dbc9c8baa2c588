"""The report index: ``index.html`` in the report folder, listing every report, newest first.

Built from the reports' own head tags (see :mod:`flask_perfalert.report_meta`),
so it needs nothing but the folder: a row per report (what was slow, how long,
how unusual, status, time, escalation, suppressed before it) linking to the
report by its file name, and a chart of slow requests per endpoint over the
alert window (:mod:`.chart`).

The file subscriber rewrites it after each report it writes and after pruning,
atomically, holding the folder's lock so that of processes sharing the folder
the last to write lists every report. Each report's head is read once: rows
are kept by file name (a name is never reused), so a rewrite reads only the
new reports. An ``index.html`` this module did not write is never replaced.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from .._files import write_atomic
from ..latency import seconds_text
from ..report_meta import ReportInfo, read_report_info
from .chart import Slow, render_chart, safe_text, slow_of

INDEX_NAME = "index.html"
#: Marks an index this module wrote (in its first bytes): only such a file is replaced.
_GENERATOR = '<meta name="generator" content="Flask-PerfAlert report index">'

_HEAD = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{_GENERATOR}
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TITLE</title>
<style>
body {{ font: 14px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, Helvetica, Arial,
  sans-serif; color: #1d2330; margin: 0; padding: 18px 24px; }}
h1 {{ font-size: 20px; margin: 0 0 4px; font-weight: 600; }}
h2 {{ font-size: 15px; margin: 20px 0 6px; }}
.sub, .note, .none {{ color: #5c6370; margin: 0 0 10px; }}
#perfalert-chart {{ max-width: 100%; height: auto; }}
#perfalert-chart text {{ font-size: 12px; fill: #1d2330; }}
#perfalert-chart .axis, #perfalert-chart .total {{ fill: #5c6370; }}
#perfalert-chart .track {{ fill: #f1f3f6; }}
#perfalert-chart .bar {{ fill: #d9822b; }}
table {{ border-collapse: collapse; }}
th {{ text-align: left; font-weight: 600; color: #5c6370; padding: 4px 14px 4px 0;
  border-bottom: 2px solid #d9822b; position: sticky; top: 0; background: #fff; }}
td {{ padding: 3px 14px 3px 0; border-bottom: 1px solid #edf0f3; vertical-align: top; }}
td.n {{ text-align: right; white-space: nowrap; }}
td.t {{ white-space: nowrap; font-variant-numeric: tabular-nums; }}
td .u {{ color: #5c6370; font-size: 12px; word-break: break-all; max-width: 520px; }}
td.esc {{ color: #c23030; }}
a {{ color: #1a5fb4; }}
</style></head><body>
"""
_TAIL = "</body></html>\n"

_COLUMNS = (
    "Time (UTC)",
    "Endpoint",
    "Duration",
    "How unusual",
    "Status",
    "Escalation",
    "Suppressed before",
)


def _window_text(seconds: float) -> str:
    days = seconds / 86400
    if days >= 1:
        return f"{days:g} day{'' if days == 1 else 's'}"
    hours = seconds / 3600
    return f"{hours:.3g} hour{'' if hours == 1 else 's'}"


def render_row(info: ReportInfo) -> str:
    """One report's row of the table; it depends on nothing but the report."""
    what = safe_text(info.what() or info.path.name)
    url = ""
    if info.url:
        url = f'<div class="u">{safe_text(info.url)}</div>'
    unusual = ""
    if info.unusual():
        p95 = "" if info.usual_p95 is None else f"p95 {seconds_text(info.usual_p95)}"
        unusual = f'<span title="{p95}">{safe_text(info.unusual())}</span>'
    escalation = ""
    if info.escalated_from and info.duration is not None:
        escalation = (
            f"yes: {info.duration / info.escalated_from:.1f} x the worst before "
            f"({info.escalated_from:.3f} s)"
        )
    return (
        f'<tr data-report="{escape(info.path.name, quote=True)}">'
        f'<td class="t">{info.short_time()}</td>'
        f'<td class="w"><a href="{escape(quote(info.path.name), quote=True)}">{what}</a>{url}</td>'
        f'<td class="n">{"?" if info.duration is None else f"{info.duration:.3f} s"}</td>'
        f"<td>{unusual}</td>"
        f'<td class="n">{"" if info.status is None else info.status}</td>'
        f'<td class="esc">{escalation}</td>'
        f'<td class="n">{info.suppressed}</td></tr>\n'
    )


class Entry(NamedTuple):
    """What the index keeps of one report: read once, by file name."""

    info: ReportInfo
    #: Its row of the table, as written to the page.
    row: bytes
    chart: Slow | None

    @classmethod
    def read(cls, path: Path) -> Entry:
        info = read_report_info(path)
        return cls(info, render_row(info).encode("utf-8", "replace"), slow_of(info))


def render_index(entries: list[Entry], now: float, window: float) -> bytes:
    """The whole page, newest report first (``entries`` are in that order)."""
    count = len(entries)
    title = f"Flask-PerfAlert: {count} slow request report{'' if count == 1 else 's'}"
    updated = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    top = [
        _HEAD.replace("TITLE", escape(title)),
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">Newest first. Updated {updated} UTC. Each link opens the report '
        "(the request, where the time went, and the call tree).</p>",
        f"<h2>Slow requests per endpoint, last {_window_text(window)} (the alert window)</h2>",
        render_chart((entry.chart for entry in entries), now, window),
        '<p class="note">Each report counts once, plus the slow requests of its endpoint '
        "that the window suppressed before it, at the report's time. Hover a bar for its "
        "count.</p>",
        "<h2>Reports</h2>",
    ]
    if not entries:
        top.append('<p class="none">No reports yet.</p>')
        return ("".join(top) + _TAIL).encode("utf-8", "replace")
    head = "".join(f"<th>{name}</th>" for name in _COLUMNS)
    top.append(f'<table id="perfalert-reports"><thead><tr>{head}</tr></thead><tbody>\n')
    # Bytes joined as they are: at 100,000 reports the table is tens of megabytes.
    return b"".join(
        [
            "".join(top).encode("utf-8", "replace"),
            *(entry.row for entry in entries),
            ("</tbody></table>" + _TAIL).encode(),
        ]
    )


class NotOurIndex(OSError):
    """The folder holds an ``index.html`` that this module did not write."""


class ReportIndex:
    """Writes ``index.html`` for one report folder; keeps what it read of each report."""

    def __init__(
        self,
        folder: Path,
        window: float,
        temp_prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        #: Seconds of the alert window the chart covers.
        self.window = window
        self.temp_prefix = temp_prefix
        self.clock = clock
        self._known: dict[str, Entry] = {}
        self._warm = False
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.folder / INDEX_NAME

    @property
    def warm(self) -> bool:
        """Whether the reports' heads were read already (by an earlier write or :meth:`learn`)."""
        return self._warm

    def learn(self, names: list[str]) -> list[Entry]:
        """The entries of the reports ``names``: each read once, then kept while listed."""
        with self._lock:
            previous = self._known
            fresh = {name: previous.get(name) or Entry.read(self.folder / name) for name in names}
            # A report whose head could not be read is read again next time.
            self._known = {name: entry for name, entry in fresh.items() if entry.info.kind}
            self._warm = True
            return list(fresh.values())

    def write(self, names: list[str]) -> Path:
        """Write the index of the reports ``names`` (newest first); raises OSError if it cannot.

        The caller holds the folder's lock and listed the reports under it.
        """
        entries = self.learn(names)
        page = render_index(entries, self.clock(), self.window)
        path = self.folder.resolve() / INDEX_NAME
        self._check_ours(path)
        write_atomic(path, page, temp_prefix=self.temp_prefix)
        return path

    @staticmethod
    def _check_ours(path: Path) -> None:
        """Raise NotOurIndex unless ``path`` is missing or an index this module wrote."""
        advice = "it is left alone (move it, or set PERFALERT_FILE_DIR to a folder of its own)"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return
        except OSError as exc:  # a link (never followed), or not readable
            raise NotOurIndex(
                f"{path} is not an index this extension wrote ({exc.strerror}); {advice}"
            ) from exc
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            head = os.read(fd, 1024) if regular else b""
        finally:
            os.close(fd)
        if _GENERATOR.encode() not in head:
            raise NotOurIndex(f"{path} is not an index this extension wrote; {advice}")
