"""The HTML report: what was slow, above pyinstrument's interactive call tree.

Every request-derived string is HTML-escaped; a URL carrying ``<script>``
shows as text.
"""

from __future__ import annotations

import json
from html import escape
from typing import TYPE_CHECKING, Any

from pyinstrument.renderers import HTMLRenderer

from ._redaction import printable
from .report_meta import render_meta, title_of

if TYPE_CHECKING:
    from pyinstrument.session import Session

    from .events import SlowRequestEvent
    from .time_by_kind import TimeShare

_STYLE = """
<style>
/* pyinstrument's call tree fills its #app box (position: absolute; inset: 0): the page
   is a column of the header, then the tree in the rest of the window. */
html, body { height: 100%; }
body { display: flex; flex-direction: column; margin: 0; }
#app { flex: 1 1 auto; position: relative; min-height: 0; }
#perfalert-header { flex: 0 0 auto; max-height: 55vh; overflow: auto; box-sizing: border-box; }
#perfalert-header { font: 14px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto,
  Helvetica, Arial, sans-serif; color: #1d2330; background: #fff; margin: 0;
  padding: 18px 24px 14px; border-bottom: 3px solid #d9822b; }
#perfalert-header h1 { font-size: 20px; margin: 0 0 4px; font-weight: 600; }
#perfalert-header h1 .dur { color: #c23030; }
#perfalert-header .sub { color: #5c6370; margin: 0 0 12px; }
#perfalert-header table { border-collapse: collapse; margin: 0 24px 10px 0; vertical-align: top;
  display: inline-table; }
#perfalert-header th { text-align: left; font-weight: 600; padding: 2px 12px 2px 0;
  color: #5c6370; white-space: nowrap; vertical-align: top; }
#perfalert-header td { padding: 2px 0; font-family: ui-monospace, SFMono-Regular, Menlo,
  Consolas, monospace; font-size: 13px; word-break: break-all; max-width: 720px; }
#perfalert-header h2 { font-size: 14px; margin: 10px 0 4px; }
#perfalert-header .note { color: #5c6370; font-size: 13px; margin: 6px 0 0; }
#perfalert-header .share { text-align: right; padding-right: 12px; }
#perfalert-header details { margin: 0; }
#perfalert-header summary { font-weight: 600; color: #5c6370; cursor: pointer; padding: 2px 0; }
#perfalert-header .cols { display: flex; flex-wrap: wrap; align-items: flex-start;
  gap: 6px 40px; }
#perfalert-header .cols table { margin: 0; }
#perfalert-header .context { margin: -6px 0 12px; }
#perfalert-header .esc { color: #c23030; }
#perfalert-kinds { margin: 0 0 12px; }
#perfalert-kinds .bar { display: flex; height: 14px; border-radius: 3px; overflow: hidden;
  max-width: 960px; background: #edf2f7; margin: 0 0 6px; }
#perfalert-kinds .seg { display: block; height: 100%; }
#perfalert-kinds .dot { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 6px; vertical-align: -1px; }
#perfalert-kinds table { border-collapse: collapse; }
#perfalert-kinds td { font-size: 13px; padding: 1px 12px 1px 0; }
#perfalert-kinds .loc { color: #5c6370; }
</style>
"""


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "".join(
        f"<tr><th>{escape(str(key))}</th><td>{escape(_text(value))}</td></tr>"
        for key, value in pairs
    )


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def render_header(event: SlowRequestEvent) -> str:
    """The report's header block, as HTML."""
    what = event.endpoint or "(no endpoint)"
    title = title_of(event)
    request_rows: list[tuple[str, Any]] = [
        ("Endpoint" if event.kind == "request" else "Function", what),
        ("Method", event.method),
        ("URL", event.url),
        ("Status", event.status_code),
        # Duration and threshold are in the title and the line below it.
        ("Time", event.timestamp.isoformat(timespec="milliseconds")),
        ("Host / process", f"{event.host} / {event.pid}"),
    ]
    if event.kind == "function":
        request_rows = [row for row in request_rows if row[1] is not None]
    parts = [
        _STYLE,
        '<section id="perfalert-header">',
        f"<h1>{escape(title)} took <span class=dur>{event.duration:.3f} s</span></h1>",
        f'<p class="sub">Threshold {event.threshold:.3f} s &middot; '
        f"{escape(event.timestamp.strftime('%Y-%m-%d %H:%M:%S %Z'))} &middot; Flask-PerfAlert</p>",
        render_context(event),
        '<div class="cols">',
        f'<table id="perfalert-request">{_rows(request_rows)}</table>',
    ]
    if event.time_by_kind:
        parts.insert(5, render_time_by_kind(event.time_by_kind))
    hot = event.hot_frames(5)
    if hot:
        parts.append('<table id="perfalert-hot"><tr><th colspan=2>Where the time went</th></tr>')
        parts.extend(
            f'<tr><td class="share">{frame.share:.0%}</td><td>{escape(frame.function)} '
            f"&nbsp;<span style='color:#5c6370'>{escape(frame.location)}</span></td></tr>"
            for frame in hot
        )
        parts.append("</table>")
    if event.params:
        parts.append(
            "<details open><summary>Parameters</summary>"
            f'<table id="perfalert-params">{_rows(list(event.params.items()))}</table></details>'
        )
    if event.headers:
        parts.append(
            "<details open><summary>Request headers</summary>"
            f'<table id="perfalert-headers">{_rows(list(event.headers.items()))}</table>'
            "</details>"
        )
    parts.append("</div>")
    parts.append(f'<p class="note" id="perfalert-profile-note">{escape(event.profile_note)}</p>')
    parts.append("</section>")
    # Names of the app's own (endpoints, functions) may hold control characters too.
    return printable("".join(parts), keep="\n\r\t")


def render_context(event: SlowRequestEvent) -> str:
    """How unusual, how often, and whether it got worse: one line under the title."""
    said = []
    if event.escalation is not None:
        previous = event.escalation.previous_worst
        said.append(
            f'<strong class="esc">Getting worse:</strong> {event.duration / previous:.1f} x '
            f"the worst alerted so far in the window ({previous:.3f} s)"
        )
    unusual = event.unusual()
    if unusual:
        said.append(escape(unusual))
    if event.suppressed:
        plural = "" if event.suppressed == 1 else "s"
        said.append(f"{event.suppressed} more slow request{plural} since the previous alert")
    if not said:
        return ""
    return f'<p class="context" id="perfalert-context">{" &middot; ".join(said)}</p>'


#: A colour per kind of time (the bar and its legend).
KIND_COLOURS = {
    "database": "#2b6cb0",
    "outgoing HTTP": "#805ad5",
    "templates": "#d69e2e",
    "JSON and serialization": "#dd6b20",
    "waiting (locks, sleep)": "#718096",
    "app code": "#38a169",
    "framework": "#a0aec0",
    "other libraries": "#cbd5e0",
}


def render_time_by_kind(shares: list[TimeShare]) -> str:
    """A bar of the profile's time by kind, with the hottest functions of each."""
    segments = []
    rows = []
    for share in shares:
        colour = KIND_COLOURS.get(share.kind, "#cbd5e0")
        label = escape(share.label())
        percent = f"{share.share:.0%}"
        segments.append(
            f'<span class="seg" style="width:{share.share * 100:.2f}%;background:{colour}" '
            f'title="{escape(percent)} {label}"></span>'
        )
        hot = ", ".join(
            f"{escape(frame.function)} <span class=loc>{escape(frame.location)}</span>"
            for frame in share.hot_frames
        )
        rows.append(
            f'<tr><td class="share">{percent}</td>'
            f'<td><span class="dot" style="background:{colour}"></span>{label}</td>'
            f"<td>{hot}</td></tr>"
        )
    return (
        '<div id="perfalert-kinds"><div class="bar">'
        + "".join(segments)
        + '</div><table id="perfalert-kinds-table">'
        + "".join(rows)
        + "</table></div>"
    )


def render_html_page(session: Session | None, header_html: str) -> str:
    """pyinstrument's interactive HTML page with ``header_html`` above the call tree."""
    if session is None or not session.frame_records:
        return (
            '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
            f"{header_html}</body></html>"
        )
    page = HTMLRenderer().render(session)
    head, sep, tail = page.partition("<body>")
    if not sep:  # a pyinstrument whose page has no <body>: no call tree, the header stays
        return render_html_page(None, header_html)
    return f"{head}{sep}{header_html}{tail}"


def render_report(event: SlowRequestEvent) -> str:
    """The whole report page for ``event``."""
    page = render_html_page(event.profile, render_header(event))
    # Right after <head> and its charset declaration, so the tags are in the first bytes.
    head, sep, tail = page.partition("<head>")
    if not sep:  # pragma: no cover - both page templates have a <head>
        return page
    charset = '<meta charset="utf-8">'
    stripped = tail.lstrip()
    if stripped.startswith(charset):
        sep, tail = sep + charset, stripped[len(charset) :]
    return f"{head}{sep}{render_meta(event)}{tail}"
