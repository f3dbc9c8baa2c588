"""Raw control characters never reach an alert; an event's URL always parses.

NUL and other control characters in a request are shown escaped (``\\x00``)
where the values are made, so every channel (report, post, your receivers)
gets them harmless; ``printable()`` is the helper the CLI uses for endpoint
names. A URL that cannot be read as sent (a host refused by
``TRUSTED_HOSTS``, an error) still parses with ``urllib.parse.urlsplit``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask, request
from test_redaction import run_wsgi
from werkzeug.test import EnvironBuilder

from flask_perfalert import PerfAlert, SlowRequestEvent
from flask_perfalert._redaction import Redactor, printable

SLOW = {"threshold_seconds": 1e-6, "profiler": "none"}
#: C0 and C1 controls but tab, line feed and carriage return, which HTML allows.
RAW_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@pytest.fixture
def slow_app(app: Flask) -> Flask:
    @app.route("/", methods=["GET", "POST"])
    @app.route("/<path:rest>", methods=["GET", "POST"])
    def index(rest: str = "") -> str:
        return str(len(request.form))

    PerfAlert(app, **SLOW)
    return app


def test_control_characters_in_a_request_reach_no_event_and_no_report(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    environ = EnvironBuilder(
        path="/",
        method="POST",
        query_string="q=a%00b%1bc",
        data={"name": "x\x00y\x07z", "multi": "line one\nline two"},
        headers={"X-Note": "bell\x07 del\x7f"},
    ).get_environ()
    environ["PATH_INFO"] = "/a\x00b"  # a server hands it on as it came
    run_wsgi(slow_app, environ)
    [event] = events
    for text in (str(event.params), str(event.headers), event.url or "", event.html or ""):
        assert not RAW_CONTROL.search(text), text
    assert event.params["q"] == "a\\x00b\\x1bc"
    assert event.params["name"] == "x\\x00y\\x07z"
    assert event.params["multi"] == "line one\nline two", "line breaks are kept"
    assert "\\x07" in event.headers["X-Note"]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("orders.show", "orders.show"),
        ("a\nb", "a\\nb"),
        ("a\x00b\x1b[31mred", "a\\x00b\\x1b[31mred"),
        ("tab\tand\rcr", "tab\\tand\\rcr"),
        ("bidi\u202etxt", "bidi\\u202etxt"),
        ("ünïcødé 视图", "ünïcødé 视图"),
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_redactor_keeps_text_printable_but_line_breaks() -> None:
    out = Redactor().mapping([("k", "a\x00\nb")])
    assert out == {"k": "a\\x00\nb"}


# -- the URL parses ------------------------------------------------------------------------------
def test_a_host_refused_by_trusted_hosts_gives_the_servers_own_address(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    class TrustingFewHosts(slow_app.request_class):  # type: ignore[name-defined,misc]
        trusted_hosts = ["good.example"]

    slow_app.request_class = TrustingFewHosts
    environ = EnvironBuilder(path="/", query_string="q=1", headers={"Host": "evil.example"})
    wsgi = environ.get_environ()
    wsgi.update(SERVER_NAME="10.0.0.5", SERVER_PORT="8080")
    run_wsgi(slow_app, wsgi)
    [event] = events
    parts = urlsplit(event.url)
    assert (parts.hostname, parts.port, parts.path, parts.query) == ("10.0.0.5", 8080, "/", "q=1")
    assert "evil" not in (event.url or "")


@pytest.mark.allow_internal_errors  # the failure is logged, without the request's data
def test_a_url_that_cannot_be_read_still_parses(
    slow_app: Flask, events: list[SlowRequestEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Redactor, pairs: Any, secrets: Any = None) -> Any:
        raise ValueError("boom")

    monkeypatch.setattr(Redactor, "mapping", broken)
    slow_app.test_client().get("/?q=1")
    [event] = events
    parts = urlsplit(event.url)
    assert parts.scheme == "http" and parts.hostname == "localhost"
    assert parts.fragment == "query-not-available"


@pytest.mark.parametrize("server_name", ["", "bad host[", "::1", "[::1]"])
def test_any_server_name_gives_a_url_that_parses(
    slow_app: Flask, events: list[SlowRequestEvent], server_name: str
) -> None:
    class TrustingFewHosts(slow_app.request_class):  # type: ignore[name-defined,misc]
        trusted_hosts = ["good.example"]

    slow_app.request_class = TrustingFewHosts
    wsgi = EnvironBuilder(path="/", headers={"Host": "evil.example"}).get_environ()
    wsgi.update(SERVER_NAME=server_name, SERVER_PORT="80")
    run_wsgi(slow_app, wsgi)
    [event] = events
    parts = urlsplit(event.url)  # raises ValueError when it does not parse
    assert parts.scheme == "http" and parts.hostname is not None and parts.path == "/"
    assert event.url and event.url.isascii()


def test_reports_lists_an_endpoint_name_with_line_breaks_on_one_line(app: Flask) -> None:
    # An endpoint is the app's own name, not request data: it reaches the report's
    # meta tags as it is, and the listing must not let it break or recolour lines.
    app.add_url_rule("/odd", "odd\nname\x1b[31m", lambda: "ok")
    PerfAlert(app, **SLOW)
    app.test_client().get("/odd")
    result = app.test_cli_runner().invoke(args=["perfalert", "reports"])
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if "perfalert-" in line]
    assert "GET odd\\nname\\x1b[31m" in row
    assert "\x1b" not in result.output
    [report] = Path(app.config["PERFALERT_FILE_DIR"]).glob("perfalert-*.html")
    assert not RAW_CONTROL.search(report.read_text(encoding="utf-8"))
