"""The parts of the Mattermost alerts that need no server: message, address, spool."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flask_perfalert import SlowRequestEvent
from flask_perfalert.alerts.mattermost.address import parse_server_url
from flask_perfalert.alerts.mattermost.client import scrub
from flask_perfalert.alerts.mattermost.message import MAX_MESSAGE_CHARS, code, format_message
from flask_perfalert.alerts.mattermost.spool import KEY_NAME, Spool

MENTION = re.compile(r"(?<![\w@])[@~\uff20][\w.\-]")


def outside_code(message: str) -> str:
    """The text of ``message`` that Markdown does not show as inline code."""
    return re.sub(r"`[^`\n]*`", "", message)


def event(**changes: object) -> SlowRequestEvent:
    values: dict[str, object] = dict(
        kind="request",
        endpoint="orders.show",
        url="https://shop.example/orders/42?page=2",
        method="GET",
        params={"page": "2"},
        headers={},
        status_code=200,
        duration=2.5,
        threshold=1.0,
        timestamp=datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        duplicate=False,
        profile=None,
        profile_note="profiling was off",
        host="web-1",
        pid=4321,
    )
    values.update(changes)
    return SlowRequestEvent(**values)  # type: ignore[arg-type]


# -- escaping ---------------------------------------------------------------------------
@given(st.text())
def test_any_value_becomes_exactly_one_harmless_code_span(value: str) -> None:
    span = code(value)
    assert span.startswith("`") and span.endswith("`") and len(span) >= 3
    inner = span[1:-1]
    assert "`" not in inner, "a backtick would end the span early"
    assert "\n" not in inner and "\r" not in inner, "a line break would start a new block"
    assert inner.strip(), "an empty span is not a code span"
    assert not MENTION.search(inner), "a mention or channel link survived"


def test_markdown_and_mentions_in_parameters_stay_text() -> None:
    hostile = {
        "q": "@channel please look",
        "who": "@all @here @alice ~town-square",
        "md": "**bold** [click](https://evil.example) ![img](x.png) `tick`\n# Heading\n| a | b |",
        "[key](https://evil.example)": "@channel",
    }
    message = format_message(
        event(params=hostile, url="https://shop.example/?q=%40channel&x=`a`**b**")
    )
    visible = outside_code(message)
    for needle in ("@", "evil", "bold", "Heading", "click", "img", "town-square", "tick"):
        assert needle not in visible, needle
    assert not MENTION.search(message), "no mention anywhere, not even in code"
    # Every line is ours: the request could not add one.
    assert message.count("\n") == format_message(event()).count("\n")


def test_message_tells_what_was_slow_without_opening_the_report() -> None:
    message = format_message(event(params={"page": "2", "password": "[Filtered]"}))
    for part in (
        "`orders.show`",
        "`GET`",
        "`https://shop.example/orders/42?page=2`",
        "`page`=`2`",
        "`password`=`[Filtered]`",
        "`200`",
        "2.500 s against a threshold of 1.000 s (2.5×)",
        "2030-01-02T03:04:05+00:00",
        "`web-1`",
        "**Process:** 4321",
        "profiling was off",
    ):
        assert part in message, part


def test_a_watched_function_has_no_request_lines() -> None:
    message = format_message(
        event(kind="function", endpoint="app.jobs.rebuild", url=None, method=None, status_code=None)
    )
    assert "Slow function: `app.jobs.rebuild`" in message
    assert "URL" not in message and "Status" not in message


def test_huge_requests_give_a_message_mattermost_accepts() -> None:
    params = {f"key{i}" * 30: "v" * 5000 for i in range(200)}
    message = format_message(event(params=params, url="https://x/" + "a" * 10000))
    assert len(message) <= MAX_MESSAGE_CHARS
    assert "and 190 more in the report" in message
    assert message.count("`") % 2 == 0, "no code span was cut in half"


# -- the server's address ------------------------------------------------------------------
CHAT = "https://chat.example.com"
HTTPS = ("https", "chat.example.com", 443, "/api/v4")
LOCAL = "http://127.0.0.1:8065"


@pytest.mark.parametrize(
    ("url", "display", "options", "trimmed"),
    [
        (CHAT, CHAT, HTTPS, False),
        ("chat.example.com", CHAT, HTTPS, False),
        (CHAT + "/myteam/channels/town-square", CHAT, HTTPS, True),
        (CHAT + "/login?redirect_to=x", CHAT, HTTPS, True),
        (CHAT + "/api/v4/", CHAT, HTTPS, True),
        (CHAT + "/mm/myteam/pl/abc", CHAT + "/mm", HTTPS[:3] + ("/mm/api/v4",), True),
        (LOCAL, LOCAL, ("http", "127.0.0.1", 8065, "/api/v4"), False),
        (LOCAL + "/mm/", LOCAL + "/mm", ("http", "127.0.0.1", 8065, "/mm/api/v4"), False),
        ("HTTP://[::1]:8065", "http://[::1]:8065", ("http", "[::1]", 8065, "/api/v4"), False),
    ],
)
def test_the_address_copied_from_the_browser_works(
    url: str, display: str, options: tuple[str, str, int, str], trimmed: bool
) -> None:
    address, note = parse_server_url(url)
    assert address.display == display
    driver = address.driver_options("t", 3.0)
    assert (driver["scheme"], driver["url"], driver["port"], driver["basepath"]) == options
    assert driver["request_timeout"] == 3.0
    assert (note is not None) == trimmed


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://chat.example.com", "scheme must be http or https"),
        ("https://bot:secret@chat.example.com", "must not contain a user name or password"),
        ("https://chat.example.com:99999", "port"),
        ("https://", "no host name"),
        ("   ", "empty"),
    ],
)
def test_an_unusable_address_is_explained(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        parse_server_url(url)
    assert "secret" not in str(info.value)


def test_scrub_masks_tokens_and_bearer_values() -> None:
    assert "s3cr3t" not in scrub("Authorization: Bearer s3cr3t", {"s3cr3t"})
    assert "xyz" not in scrub("header Bearer xyz in text")


# -- the spool ---------------------------------------------------------------------------
def entry(event_id: str = "ab" * 16) -> dict[str, object]:
    return {
        "event_id": event_id,
        "created": 1.0,
        "app": "shop",
        "summary": "GET x",
        "message": "m",
        "report_name": "r.html",
        "report_html": "<p>r</p>",
        "post_sent_at": None,
    }


def written(path: Path) -> dict[str, object]:
    """An entry's data: the JSON after its signed first line."""
    header, _, payload = path.read_text().partition("\n")
    assert header.startswith("PERFALERT-SPOOL-1 ")
    data: dict[str, object] = json.loads(payload)
    return data


def test_spool_files_are_private_and_written_whole(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "deep" / "spool")
    item = spool.add(entry())
    assert item.path is not None
    assert stat.S_IMODE(spool.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(item.path.stat().st_mode) == 0o600
    assert written(item.path) == entry()
    spool.update(item, post_sent_at=12.5)
    assert written(item.path)["post_sent_at"] == 12.5
    assert stat.S_IMODE(item.path.stat().st_mode) == 0o600
    assert sorted(os.listdir(spool.folder)) == sorted([item.path.name, KEY_NAME]), (
        "no temporary file left"
    )
    assert stat.S_IMODE((spool.folder / KEY_NAME).stat().st_mode) == 0o600
    spool.remove(item)
    assert os.listdir(spool.folder) == [KEY_NAME]


def test_an_entry_being_sent_is_not_taken_by_anyone_else(tmp_path: Path) -> None:
    mine = Spool(tmp_path)
    other = Spool(tmp_path)  # another process or thread: its own file descriptors
    sending = mine.add(entry("01" * 16))
    waiting = mine.add(entry("02" * 16))
    mine.release(waiting)
    claimed = list(other.claim(lambda data: True))
    assert [c.data["event_id"] for c in claimed] == ["02" * 16]
    for c in claimed:
        other.release(c)
    mine.remove(sending)
    assert [c.data["event_id"] for c in mine.claim(lambda data: True)] == ["02" * 16]


def test_a_full_spool_drops_the_oldest_with_a_reason(tmp_path: Path) -> None:
    dropped: list[tuple[object, str]] = []
    spool = Spool(tmp_path, max_entries=2, on_drop=lambda d, r: dropped.append((d["event_id"], r)))
    for i in range(3):
        spool.release(spool.add(entry(f"{i:02d}" * 16)))
    assert [d[0] for d in dropped] == ["00" * 16]
    assert "spool holds 2 alerts" in dropped[0][1]
    assert spool.count() == 2


def test_an_unreadable_entry_is_left_alone_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    spool.release(spool.add(entry()))  # the folder and its key exist
    bad = tmp_path / f"mm-{1:013d}-{'cd' * 16}.json"
    bad.write_text("{not json")
    bad.chmod(0o600)
    for _ in range(3):
        claimed = list(spool.claim(lambda data: True))
        assert [c.data["event_id"] for c in claimed] == ["ab" * 16]
        for c in claimed:
            spool.release(c)
    assert bad.read_text() == "{not json"
    assert caplog.text.count(f"{bad} is ignored and left as it is: it is not signed") == 1
