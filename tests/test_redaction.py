"""Secrets in requests never reach an event: keys, nesting, headers, bodies, limits."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from werkzeug.test import EnvironBuilder

from flask_perfalert import PerfAlert, SlowRequestEvent, _redaction
from flask_perfalert._redaction import (
    DEFAULT_DENYLIST,
    DENIED_NAMES,
    DENIED_PARTS,
    FILTERED,
    MAX_VALUE_CHARS,
    NEVER_CAPTURED_HEADERS,
    Redactor,
)

SLOW = {"threshold_seconds": 1e-6, "profiler": "none"}


def setup_views(app: Flask) -> None:
    @app.route("/", methods=["GET", "POST", "PUT"])
    def index() -> str:
        return "ok"

    @app.post("/form")
    def form() -> str:
        return str(len(request.form)) + str(len(request.files))

    @app.post("/json")
    def json_view() -> str:
        return str(request.get_json(silent=True) is None)

    @app.post("/data")
    def data_view() -> str:
        return str(len(request.get_data()))

    @app.get("/reset/<token>")
    def reset(token: str) -> str:
        return "reset"

    @app.get("/users/<int:user_id>/keys/<path:api_key>")
    def user_key(user_id: int, api_key: str) -> str:
        return "key"


@pytest.fixture
def slow_app(app: Flask) -> Flask:
    setup_views(app)
    PerfAlert(app, **SLOW)
    return app


def only(events: list[SlowRequestEvent]) -> SlowRequestEvent:
    assert len(events) == 1, events
    return events[0]


def everything(event: SlowRequestEvent) -> str:
    """All request-derived text of an event, as a subscriber could print it."""
    return json.dumps([event.url, event.params, event.headers, repr(event)], default=str)


# -- the deny-list -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "user_password",
        "userPassword",
        "passwd",
        "pwd",
        "client_secret",
        "access_token",
        "X-Auth-Token",
        "api_key",
        "API-KEY",
        "apiKey",
        "Api Key",
        "x-api-key",
        "private-key",
        "PrivateKey",
        "aws_access_key_id",
        "credentials",
        "sessionid",
        "csrfmiddlewaretoken",
        "_xsrf",
        "credit_card_number",
        "cvv",
        "cvc2",
        "ssn",
        "oauth_verifier",
        "authorization",
        "jwt",
        "passphrase",
        "passcode",
        "signature",
    ],
)
def test_secret_keys_are_recognised_case_insensitively_as_substrings(key: str) -> None:
    assert Redactor().is_secret(key)


@pytest.mark.parametrize("key", ["q", "page", "user", "email", "id", "query", "sort", "lang"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not Redactor().is_secret(key)


def test_author_is_filtered_too_a_documented_trade_off() -> None:
    # "auth" must hide oauth_token, x-auth, authkey...; "author" is the price (docs/security.rst).
    assert Redactor().is_secret("author")
    assert "``author``" in (Path(__file__).parents[1] / "docs" / "security.rst").read_text()


def test_every_default_word_is_documented() -> None:
    text = (Path(__file__).parents[1] / "docs" / "security.rst").read_text()
    for word in (*DEFAULT_DENYLIST, *DENIED_PARTS, *DENIED_NAMES):
        assert f"``{word}``" in text, word
    for header in NEVER_CAPTURED_HEADERS:
        assert header.lower() in text.lower(), header


def test_a_secret_word_at_the_end_of_a_very_long_key_still_counts() -> None:
    key = "x" * 300 + "_password"
    out = Redactor().mapping([(key, "hunter2")])
    assert list(out.values()) == [FILTERED]


def test_redact_keys_setting_adds_keys(app: Flask, events: list[SlowRequestEvent]) -> None:
    setup_views(app)
    app.config["PERFALERT_REDACT_KEYS"] = ["Order-Ref", " "]
    PerfAlert(app, **SLOW)
    app.test_client().get("/?order_ref=A-123&q=shoes&password=pw")
    event = only(events)
    assert event.params == {"order_ref": FILTERED, "q": "shoes", "password": FILTERED}


def test_redact_keys_from_the_environment(
    app: Flask, events: list[SlowRequestEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_views(app)
    monkeypatch.setenv("PERFALERT_REDACT_KEYS", "iban, member_no")
    PerfAlert(app, **SLOW)
    app.test_client().get("/?iban=DE00&Member-No=7&q=x")
    assert only(events).params == {"iban": FILTERED, "Member-No": FILTERED, "q": "x"}


def test_a_star_in_redact_keys_hides_every_value(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    setup_views(app)
    PerfAlert(app, redact_keys="*", **SLOW)
    app.test_client().get("/?q=shoes&page=2", headers={"User-Agent": "agent", "X-Id": "7"})
    event = only(events)
    assert event.params == {"q": FILTERED, "page": FILTERED}
    assert set(event.headers.values()) == {FILTERED}
    assert "shoes" not in everything(event) and "agent" not in everything(event)


# -- values: nesting and limits ---------------------------------------------------------------


def test_nested_values_are_redacted_at_every_level() -> None:
    body = {
        "user": {"name": "ann", "password": "pw", "profile": {"api_key": "k", "city": "Oslo"}},
        "items": [{"sku": "A1", "token": "t"}, ["x", {"secret": "s"}]],
        "credentials": {"anything": "inside"},
    }
    out = Redactor().mapping(body.items())
    assert out == {
        "user": {
            "name": "ann",
            "password": FILTERED,
            "profile": {"api_key": FILTERED, "city": "Oslo"},
        },
        "items": [{"sku": "A1", "token": FILTERED}, ["x", {"secret": FILTERED}]],
        "credentials": FILTERED,
    }


def test_long_values_are_cut_with_their_length() -> None:
    out = Redactor().mapping([("q", "a" * 50_000)])
    assert len(out["q"]) < MAX_VALUE_CHARS + 40
    assert "50000 characters" in out["q"]


def test_deep_and_wide_values_stay_bounded() -> None:
    deep: Any = "bottom"
    for _ in range(500):
        deep = {"level": deep}
    row = list(range(300))
    wide = {f"k{i}": [row] * 300 for i in range(300)}  # 27 million leaves
    out = Redactor().mapping([("deep", deep), ("wide", wide)])
    text = json.dumps(out)
    assert "bottom" not in text
    assert len(text) < 200_000
    assert text.count(",") < 2 * _redaction.MAX_TOTAL_ITEMS


def test_unpaired_surrogates_become_valid_text() -> None:
    out = Redactor().mapping([("q\ud800", "a\udfffb")])
    text = json.dumps(out, ensure_ascii=False)
    text.encode("utf-8")  # would raise on a lone surrogate


# -- the URL -----------------------------------------------------------------------------------


def test_query_string_values_are_filtered_in_params_and_url(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    slow_app.test_client().get("/?q=shoes&access_token=tok-1&page=2&Password=pw&q=boots")
    event = only(events)
    assert event.params == {
        "q": ["shoes", "boots"],
        "access_token": FILTERED,
        "page": "2",
        "Password": FILTERED,
    }
    assert "tok-1" not in event.url and "pw" not in event.url
    assert "q=shoes" in event.url and "page=2" in event.url and "q=boots" in event.url
    assert "access_token=%5BFiltered%5D" in event.url


def test_secret_path_parameters_are_filtered_in_the_url(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    client = slow_app.test_client()
    client.get("/reset/s3cr3t-reset-value")
    client.get("/users/42/keys/ab/cd-key-value")
    reset, key = events
    assert "s3cr3t-reset-value" not in everything(reset)
    assert reset.url == "http://localhost/reset/%5BFiltered%5D"
    assert "cd-key-value" not in everything(key)
    assert "/users/42/keys/" in (key.url or "")


def test_url_is_plain_ascii_without_markup(slow_app: Flask, events: list[SlowRequestEvent]) -> None:
    slow_app.test_client().get('/nothing/<script>"€?q=<b>')
    url = only(events).url or ""
    assert url.isascii()
    assert not set(url) & set("<>\"' ")


# -- request bodies ---------------------------------------------------------------------------


def test_form_fields_read_by_the_view_are_redacted(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    slow_app.test_client().post(
        "/form", data={"username": "ann", "password": "pw-1", "card_number": "4111"}
    )
    assert only(events).params == {
        "username": "ann",
        "password": FILTERED,
        "card_number": FILTERED,
    }


def test_uploaded_files_are_named_never_copied(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    upload = (io.BytesIO(b"FILE-CONTENT-\x00\xff" * 100), "<x>.bin", "application/octet-stream")
    slow_app.test_client().post("/form", data={"doc": upload, "title": "t"})
    params = only(events).params
    assert params["title"] == "t"
    assert "<x>.bin" in params["doc"] and "FILE-CONTENT" not in everything(events[0])


def test_json_bodies_read_by_the_view_are_redacted(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    body = {"order": {"id": 7, "payment": {"cvv": "123", "holder": "Ann"}}, "session_id": "s"}
    slow_app.test_client().post("/json", json=body)
    assert only(events).params == {
        "order": {"id": 7, "payment": {"cvv": FILTERED, "holder": "Ann"}},
        "session_id": FILTERED,
    }


def test_a_json_array_body_is_shown_redacted(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    slow_app.test_client().post("/json", json=[{"token": "t", "n": 1}, 2])
    assert only(events).params == {"[json]": [{"token": FILTERED, "n": 1}, 2]}


@pytest.mark.parametrize(
    "body",
    [b'{"password": "pw", "a": ', b'{"a": "\xff\xfe"}', b"[" * 50_000, b"\x00\x01binary"],
)
@pytest.mark.parametrize("view", ["/json", "/data"])
def test_malformed_json_is_noted_never_copied(
    slow_app: Flask, events: list[SlowRequestEvent], body: bytes, view: str
) -> None:
    if view == "/json" and body.startswith(b"[["):
        body = b"[" * 500  # deeper makes Flask's own get_json(silent=True) raise in the view
    response = slow_app.test_client().post(view, data=body, content_type="application/json")
    assert response.status_code == 200
    params = only(events).params
    assert list(params) == ["[body]"]
    assert "malformed" in params["[body]"] and "pw" not in params["[body]"]


def test_binary_bodies_are_never_copied(slow_app: Flask, events: list[SlowRequestEvent]) -> None:
    body = b"\x89PNG" + b"BINARY-MARKER" * 10
    slow_app.test_client().post("/data", data=body, content_type="application/octet-stream")
    params = only(events).params
    assert params == {"[body]": f"[application/octet-stream body, {len(body)} bytes, not copied]"}


def test_text_bodies_are_never_copied_either(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    slow_app.test_client().post("/data", data="password=hunter2", content_type="text/plain")
    assert "hunter2" not in everything(only(events))


def test_a_large_json_body_read_by_the_view_is_bounded(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    body = {f"field{i}": "v" * 2000 for i in range(5000)}
    slow_app.test_client().post("/json", json=body)
    assert len(json.dumps(only(events).params)) < 300_000


class RecordingInput(io.RawIOBase):
    """A ``wsgi.input`` that records reads; a real socket would block on them."""

    def __init__(self) -> None:
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.reads += 1
        return 0


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-www-form-urlencoded", "text/plain"]
)
def test_a_body_the_view_did_not_read_is_never_read(
    slow_app: Flask, events: list[SlowRequestEvent], content_type: str
) -> None:
    stream = RecordingInput()
    environ = EnvironBuilder(path="/", method="POST", content_type=content_type).get_environ()
    environ["wsgi.input"] = stream
    environ["CONTENT_LENGTH"] = "100"  # announced, never sent: reading would hang
    run_wsgi(slow_app, environ)
    assert stream.reads == 0
    assert only(events).params == {
        "[body]": f"[{content_type} body, 100 bytes, not parsed by the view]"
    }


def test_a_chunked_body_the_view_did_not_read_is_never_read(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    stream = RecordingInput()
    environ = EnvironBuilder(path="/", method="POST", content_type="application/json").get_environ()
    environ["wsgi.input"] = stream
    environ.pop("CONTENT_LENGTH", None)
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    run_wsgi(slow_app, environ)
    assert stream.reads == 0
    assert only(events).params == {"[body]": "[application/json body, not parsed by the view]"}


def run_wsgi(app: Flask, environ: dict[str, Any]) -> bytes:
    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return lambda data: None

    body = app(environ, start_response)
    try:
        return b"".join(body)
    finally:
        body.close()  # type: ignore[attr-defined]


# -- headers -----------------------------------------------------------------------------------


def test_credential_headers_are_never_captured(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    slow_app.test_client().get(
        "/",
        headers={
            "Authorization": "Bearer b-1",
            "Proxy-Authorization": "Basic p-1",
            "Cookie": "sessionid=c-1; theme=dark",
            "X-Api-Key": "k-1",
            "X-Auth-Token": "t-1",
            "X-CSRFToken": "x-1",
            "X-Upstream-Credentials": "Bearer u-1",
            "Referer": "https://example.com/login?next=/a&token=r-1&lang=en",
            "X-Forwarded-Info": "for=1.2.3.4; session=f-1; proto=https",
            "X-Custom": "Bearer v-1",
            "User-Agent": "canary-agent/1.0",
        },
    )
    event = only(events)
    headers = {k.lower(): v for k, v in event.headers.items()}
    for name in NEVER_CAPTURED_HEADERS:
        assert name not in headers
    assert headers["x-auth-token"] == FILTERED
    assert headers["x-csrftoken"] == FILTERED
    assert headers["x-custom"] == FILTERED
    assert headers["user-agent"] == "canary-agent/1.0"
    assert "lang=en" in headers["referer"] and "next=" in headers["referer"]
    assert "proto=https" in headers["x-forwarded-info"]
    text = everything(event)
    for value in ("b-1", "p-1", "c-1", "k-1", "t-1", "x-1", "u-1", "r-1", "f-1", "v-1"):
        assert value not in text, value


def test_header_values_are_bounded(slow_app: Flask, events: list[SlowRequestEvent]) -> None:
    slow_app.test_client().get("/", headers={"X-Big": "a" * 100_000})
    assert len(only(events).headers["X-Big"]) < 600


# -- failures in reading the request ----------------------------------------------------------


@pytest.mark.allow_internal_errors
def test_a_failure_reading_the_request_is_logged_without_its_data(
    slow_app: Flask,
    events: list[SlowRequestEvent],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(self: Redactor, pairs: Any, secrets: Any = None) -> Any:
        raise ValueError(f"boom with {list(pairs)!r}")

    monkeypatch.setattr(Redactor, "mapping", broken)
    response = slow_app.test_client().get("/?q=visible&password=pw-leak")
    assert response.status_code == 200
    event = only(events)
    assert event.params == {"[error]": "[parameters not available: ValueError]"}
    assert "pw-leak" not in caplog.text and "visible" not in caplog.text
    assert "ValueError" in caplog.text


def test_an_untrusted_host_is_not_an_error(slow_app: Flask, events: list[SlowRequestEvent]) -> None:
    # Werkzeug refuses to read request.host for a host not in trusted_hosts
    # (Flask 3.1's TRUSTED_HOSTS sets the same); the event must not fail on it.
    class TrustingFewHosts(slow_app.request_class):  # type: ignore[name-defined,misc]
        trusted_hosts = ["good.example"]

    slow_app.request_class = TrustingFewHosts
    bare = Flask("bare")
    bare.request_class = TrustingFewHosts
    setup_views(bare)
    headers = {"Host": "evil.example"}
    response = slow_app.test_client().get("/?q=1", headers=headers)
    assert response.status_code == bare.test_client().get("/?q=1", headers=headers).status_code
    assert only(events).url == "http://localhost/?q=1"  # the server's own name
