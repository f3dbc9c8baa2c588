"""The Markdown message of a Mattermost alert, and the spool entry that holds it.

Everything the request supplied (URL, parameter names and values) and
everything else that is not our own wording (endpoint, host, function and file
names) is shown through :func:`code`, which makes it one inline code span:

* inside a code span Markdown is not interpreted, so ``**x**``, ``[x](y)``,
  ``# x`` or a table stay text;
* a backtick in the value is replaced by the look-alike ``ˋ`` (U+02CB), so the
  value cannot close the span early; line breaks and other control characters
  become spaces, so it cannot start a new block either;
* Mattermost ignores code when it looks for mentions (``@channel``, ``@all``,
  ``@here``, ``@user``) and channel links (``~town-square``); as a second
  guard a zero-width space follows every ``@`` and ``~`` that precedes a name,
  which breaks the mention for the server and for every client.

The message stays far below Mattermost's post size limit (the older servers'
4000 characters): every value is truncated and the parameter list is capped.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..file import report_name

if TYPE_CHECKING:
    from ...events import SlowRequestEvent

#: Mattermost servers before 5.0 refuse posts longer than this (in characters).
MAX_MESSAGE_CHARS = 4000
#: At most this many parameters are listed; the report has them all.
MAX_PARAMS = 10
#: How many of the hottest frames the message lists.
HOT_FRAMES = 5
#: Version of the spool entries this code writes.
ENTRY_VERSION = 2

_ZWSP = "\u200b"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
# "@" or "~" followed by something a mention or channel link could start with.
_MENTION = re.compile(r"([@~\uff20])(?=[\w.\-])")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code(value: Any, limit: int = 200) -> str:
    """``value`` as one inline code span that cannot reformat the message or ping anyone."""
    text = value if isinstance(value, str) else _to_text(value)
    text = _clip(text, limit)
    text = _CONTROL.sub(" ", text).replace("`", "\u02cb")
    text = _MENTION.sub(lambda m: m.group(1) + _ZWSP, text)
    if not text.strip():
        # An empty or blank span is not a code span in Markdown; show the quotes.
        text = f'"{text}"'
    return f"`{text}`"


def _to_text(value: Any) -> str:
    if value is None:
        return "None"
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # pragma: no cover - default=str accepts everything
        return repr(value)


def _params(params: Mapping[str, Any]) -> str:
    items = list(params.items())
    shown = ", ".join(f"{code(key, 40)}={code(value, 80)}" for key, value in items[:MAX_PARAMS])
    if len(items) > MAX_PARAMS:
        shown += f", and {len(items) - MAX_PARAMS} more in the report"
    return shown or "none"


def _ratio(duration: float, threshold: float) -> str:
    return f"{duration / threshold:.1f}×" if threshold > 0 else "n/a"


def format_message(event: SlowRequestEvent, *, test: bool = False) -> str:
    """The post's text: what was slow, where, and where the time went."""
    what = code(event.endpoint or "(no endpoint)", 120)
    duration = f"**{event.duration:.3f} s**"
    if test:
        heading = (
            "#### :white_check_mark: Flask-PerfAlert test alert: delivery to this channel works"
        )
    elif event.escalation is not None:
        what_kind = f"{code(event.method, 16)} {what}" if event.kind == "request" else what
        heading = f"#### :chart_with_upwards_trend: Getting worse: {what_kind} took {duration}"
    elif event.kind == "request":
        heading = f"#### :hourglass: Slow request: {code(event.method, 16)} {what} took {duration}"
    else:
        heading = f"#### :hourglass: Slow function: {what} took {duration}"
    lines = [heading]
    if event.escalation is not None:
        previous = event.escalation.previous_worst
        lines.append(
            f"**Getting worse:** {event.duration / previous:.1f} × the worst alerted so far in "
            f"the window ({previous:.3f} s)"
        )
    if event.kind == "request":
        lines.append(f"**Endpoint:** {what} · **Method:** {code(event.method, 16)}")
        lines.append(f"**URL:** {code(event.url, 400)}")
        lines.append(f"**Params:** {_params(event.params)}")
        lines.append(f"**Status:** {code(event.status_code, 8)}")
    else:
        lines.append(f"**Function:** {what}")
    lines.append(
        f"**Duration:** {event.duration:.3f} s against a threshold of {event.threshold:.3f} s "
        f"({_ratio(event.duration, event.threshold)})"
    )
    if event.usual is not None:
        lines.append(f"**Usual:** {event.unusual()}")
    if event.time_by_kind:
        lines.append(f"**Kind of time:** {code(event.time_summary(), 300)}")
    if event.suppressed:
        plural = "" if event.suppressed == 1 else "s"
        lines.append(
            f"**Since the previous alert:** {event.suppressed} more slow "
            f"{'request' if event.kind == 'request' else 'call'}{plural}, not alerted"
        )
    lines.append(f"**Time:** {event.timestamp.isoformat(timespec='seconds')}")
    lines.append(f"**Host:** {code(event.host, 80)} · **Process:** {event.pid}")
    frames = event.hot_frames(HOT_FRAMES)
    if frames:
        lines.append("**Where the time went** (own time, share of the profile):")
        lines.extend(
            f"{rank}. {code(frame.function, 80)} at {code(frame.location, 160)}: {frame.share:.0%}"
            for rank, frame in enumerate(frames, 1)
        )
    else:
        lines.append(f"**Profile:** none ({code(event.profile_note, 200)})")
    lines.append("The full report with the call tree is attached.")
    return _fit(lines)


def _fit(lines: list[str], limit: int = MAX_MESSAGE_CHARS - 200) -> str:
    """Join ``lines``, dropping whole lines (never cutting one) until the text fits.

    The default limit leaves room for a note appended later.
    """
    while len("\n".join(lines)) > limit and len(lines) > 2:
        # The params line is the longest; then the frames, from the coldest.
        longest = max(range(1, len(lines) - 1), key=lambda i: len(lines[i]))
        del lines[longest]
    return "\n".join(lines)


#: The lengths a post refused as too large (413) is cut to, one after the other.
SHORTER_MESSAGE_CHARS = (1000, 0)


_NO_REPORT_FILE = "the report is in no report folder (file reports are off or it was not written)"


def where_the_report_is(report_path: str | None) -> str:
    """Where the full report of an alert can be read, for a log line."""
    if report_path and Path(report_path).is_file():
        return f"the full report: {report_path}"
    return _NO_REPORT_FILE


def report_note(reason: str, report_path: str | None = None) -> str:
    """A line appended to a message whose report could not be attached."""
    return f"\n_The report could not be attached: {reason}; {_where(report_path)}._"


def shorter_message(message: str, step: int, reason: str, report_path: str | None) -> str:
    """``message`` cut to the ``step``-th of :data:`SHORTER_MESSAGE_CHARS`, with a note saying so.

    Whole lines go, the longest first; the heading always stays.
    """
    lines = message.split("\n")
    limit = SHORTER_MESSAGE_CHARS[step]
    text = _fit(lines, limit) if limit else lines[0]
    return f"{text}\n_This message was cut to fit: {reason}; {_where(report_path)}._"


def _where(report_path: str | None) -> str:
    # A path is the app's own setting, shown as code all the same.
    if report_path and Path(report_path).is_file():
        return f"the full report is {code(report_path, 400)}"
    return _NO_REPORT_FILE


def spool_entry(
    event: SlowRequestEvent,
    app_key: str,
    *,
    test: bool = False,
    report_folder: Path | None = None,
) -> dict[str, Any]:
    """What the spool keeps of an alert: the post's text and the report, never the token."""
    return {
        "version": ENTRY_VERSION,
        "event_id": event.id,
        "created": time.time(),
        "app": app_key,
        "summary": event.summary(),
        "message": format_message(event, test=test),
        "report_name": report_name(event),
        "report_html": event.html,
        # Where the file subscriber writes the report (receivers run in no set
        # order, so it may not be written yet): read when Mattermost cannot take it.
        "report_path": str(report_folder / report_name(event)) if report_folder else None,
        "post_sent_at": None,
    }
