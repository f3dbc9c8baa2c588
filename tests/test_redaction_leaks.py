"""Secrets that used to leak, by name or by value, reach no event and no report.

Each case is one secret in one place, as an attacker looking at alerts found
them: names the deny-list missed, a confirmation field holding the password
again, a token in a URL fragment of a Referer, a quoted header value, a path
parameter. The last tests check redaction *by value*: once a value is
filtered anywhere in a request, it is filtered everywhere else in its event.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from flask import Flask, request

from flask_perfalert import PerfAlert, SlowRequestEvent
from flask_perfalert._redaction import FILTERED, Redactor

SLOW = {"threshold_seconds": 1e-6, "profiler": "none"}
SECRET = "Sup3rSecretPw-7f3a"


def setup_views(app: Flask) -> None:
    @app.route("/", methods=["GET", "POST"])
    def index() -> str:
        return "ok"

    @app.post("/form")
    def form() -> str:
        return str(len(request.form))

    @app.post("/json")
    def json_view() -> str:
        return str(request.get_json(silent=True) is None)

    @app.get("/page")
    def page() -> str:
        return "page"

    @app.get("/reset/<token>")
    def reset(token: str) -> str:
        return "reset"


@pytest.fixture
def slow_app(app: Flask) -> Flask:
    setup_views(app)
    PerfAlert(app, **SLOW)
    return app


def everything(event: SlowRequestEvent) -> str:
    """All an event tells, as a subscriber or the report shows it."""
    return json.dumps(
        [event.url, event.params, event.headers, repr(event), event.html], default=str
    )


def only(events: list[SlowRequestEvent]) -> SlowRequestEvent:
    assert len(events) == 1, events
    return events[0]


LEAKS: list[tuple[str, dict[str, Any]]] = [
    ("query sig", {"path": f"/?sig={SECRET}&q=1"}),
    ("query key", {"path": f"/?key={SECRET}&q=1"}),
    ("query code", {"path": f"/?code={SECRET}&q=1"}),
    ("query state", {"path": f"/?state={SECRET}&q=1"}),
    ("form pin", {"path": "/form", "method": "POST", "data": {"pin": SECRET}}),
    ("form otp", {"path": "/form", "method": "POST", "data": {"otp": SECRET}}),
    (
        "form confirm",
        {"path": "/form", "method": "POST", "data": {"password": "x" * 8, "confirm": SECRET}},
    ),
    ("json creds.pass", {"path": "/json", "method": "POST", "json": {"creds": {"pass": SECRET}}}),
    ("json oauth code", {"path": "/json", "method": "POST", "json": {"code": SECRET, "n": 1}}),
    ("json oauth state", {"path": "/json", "method": "POST", "json": {"state": SECRET, "n": 1}}),
    ("header x-service-key", {"path": "/", "headers": {"X-Service-Key": SECRET}}),
    (
        "referer fragment",
        {"path": "/", "headers": {"Referer": f"https://idp.example/cb#access_token={SECRET}"}},
    ),
    ("quoted header value", {"path": "/", "headers": {"X-Quoted": f'token="{SECRET} b"'}}),
    (
        "shared access signature",
        {
            "path": "/",
            "headers": {
                "X-Upstream": f"SharedAccessSignature sr=https%3A%2F%2Fx&sig={SECRET}&se=1"
            },
        },
    ),
    ("path parameter", {"path": f"/page;jsessionid={SECRET}?q=1"}),
]


@pytest.mark.parametrize(("place", "how"), LEAKS, ids=[place for place, _ in LEAKS])
def test_a_secret_found_leaking_is_filtered(
    slow_app: Flask, events: list[SlowRequestEvent], place: str, how: dict[str, Any]
) -> None:
    how = dict(how)
    method = how.pop("method", "GET")
    # Werkzeug routes "/page;jsessionid=..." as it is (a 404 here): the event is made all the same.
    slow_app.test_client().open(how.pop("path"), method=method, **how)
    event = only(events)
    assert SECRET not in everything(event), place
    assert SECRET[:8] not in everything(event), f"{place}: part of it"
    assert "Filtered" in everything(event), place  # "%5BFiltered%5D" in a URL


@pytest.mark.parametrize(
    "name",
    [
        # Sentry's default deny-list (sentry_sdk.scrubber.DEFAULT_DENYLIST)...
        "password", "passwd", "secret", "api_key", "apikey", "auth", "credentials",
        "mysql_pwd", "privatekey", "private_key", "token", "session", "csrftoken",
        "sessionid", "x_csrftoken", "x_forwarded_for", "set_cookie", "cookie",
        "authorization", "x_api_key", "aiohttp_session", "connect.sid", "csrf_token",
        "csrf", "_csrf", "_csrf_token", "PHPSESSID", "_session", "symfony",
        "user_session", "_xsrf", "XSRF-TOKEN",
        # ...and the names found leaking
        "sig", "key", "code", "state", "pin", "otp", "confirm", "creds", "pass",
        "X-Service-Key", "userPIN", "otp_code", "confirm_password", "db_pass",
    ],
)  # fmt: skip
def test_the_deny_list_covers_sentrys_and_the_names_found_leaking(name: str) -> None:
    assert Redactor().is_secret(name)


@pytest.mark.parametrize(
    "name", ["q", "page", "country_code", "status", "keyword", "monkey", "shipping", "passenger"]
)
def test_short_words_match_whole_parts_of_a_name_not_any_substring(name: str) -> None:
    assert not Redactor().is_secret(name)


# -- by value -----------------------------------------------------------------------------------
def test_a_filtered_value_is_filtered_wherever_else_it_appears(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    slow_app.test_client().post(
        f"/form?again={SECRET}",
        data={"password": SECRET, "repeat": SECRET, "note": f"mine is {SECRET}!"},
        headers={
            "Referer": f"https://shop.example/signup?pw={SECRET}",
            "X-Echo": SECRET,
        },
    )
    event = only(events)
    assert SECRET not in everything(event)
    assert event.params["repeat"] == FILTERED
    assert event.params["note"] == f"mine is {FILTERED}!"
    assert event.headers["X-Echo"] == FILTERED
    assert "again=%5BFiltered%5D" in (event.url or "")


def test_a_credential_header_never_captured_still_hides_its_value_elsewhere(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    token = "tok-" + SECRET
    basic = base64.b64encode(f"ann:{SECRET}".encode()).decode()
    slow_app.test_client().get(
        f"/?copy={token}&pw={SECRET}",
        headers={"Authorization": f"Bearer {token}", "Proxy-Authorization": f"Basic {basic}"},
    )
    event = only(events)
    assert token not in everything(event) and SECRET not in everything(event)


def test_a_secret_path_variable_is_hidden_in_the_query_and_the_referer_too(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    slow_app.test_client().get(
        f"/reset/{SECRET}?again={SECRET}",
        headers={"Referer": f"https://shop.example/reset/{SECRET}"},
    )
    event = only(events)
    assert SECRET not in everything(event)
    assert event.url == "http://localhost/reset/%5BFiltered%5D?again=%5BFiltered%5D"


def test_a_cookie_value_is_hidden_wherever_else_it_appears(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    client = slow_app.test_client()
    client.set_cookie("sessionid", SECRET)
    client.get(f"/page;jsessionid={SECRET}", headers={"X-Session-Copy": SECRET})
    assert SECRET not in everything(only(events))


def test_short_or_common_values_are_not_filtered_everywhere(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    slow_app.test_client().get("/?password=1&token=true&q=1&flag=true")
    event = only(events)
    assert event.params == {"password": FILTERED, "token": FILTERED, "q": "1", "flag": "true"}


# -- the limits, as documented ---------------------------------------------------------
def test_a_secret_under_an_ordinary_name_that_nothing_repeats_is_shown(
    slow_app: Flask, events: list[SlowRequestEvent]
) -> None:
    slow_app.test_client().get(f"/?note=my+pin+is+{SECRET}")
    assert SECRET in only(events).params["note"], "values are found by names, then hidden"
