"""The canary: secrets planted everywhere in slow requests appear in no artefact.

Distinct secret values (``canary-<uuid>``) go into the query string, a path
variable, form fields, an upload, JSON bodies (nested), headers and cookies of
slow requests, next to ordinary values. Then every artefact the extension
leaves is searched: report files and anything else under the report folder
(the spool lives there by default), captured logs at DEBUG, and the events the
signal delivered. No canary may appear; the ordinary values must.

Other alert channels plug in through the ``canary_extras`` fixture: the
PerfAlert options they need (a Mattermost stand-in's URL, token, channel, a
spool folder), steps that wait until the channel has delivered, more artefact
sources, and checks that the channel did carry the ordinary values. A source
is a function returning ``(where, text)`` pairs, called after the requests ran,
the delivery worker is idle and the settle steps returned, e.g. the bodies a
Mattermost stand-in received. ``test_canary_mattermost.py`` does this.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from flask_perfalert import PerfAlert, SlowRequestEvent

#: One artefact: where it was found, and its text.
Artefact = tuple[str, str]
#: A function that collects artefacts when called (after the requests ran).
ArtefactSource = Callable[[], Iterable[Artefact]]


def files_under(folder: Path) -> ArtefactSource:
    """Every file under ``folder`` (reports, spool, temporary files), names included."""

    def collect() -> Iterator[Artefact]:
        if not folder.exists():
            return
        for path in sorted(folder.rglob("*")):
            yield (f"file name {path}", str(path.relative_to(folder)))
            if path.is_file():
                yield (f"file {path}", path.read_bytes().decode("utf-8", "replace"))

    return collect


def log_records(caplog: pytest.LogCaptureFixture) -> ArtefactSource:
    """Every captured log line, as a handler would format it, tracebacks included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def collect() -> Iterator[Artefact]:
        for record in caplog.records:
            yield (f"log {record.name}:{record.lineno}", formatter.format(record))

    return collect


def event_texts(events: list[SlowRequestEvent]) -> ArtefactSource:
    """What a subscriber of the signal could print or store of each event."""

    def collect() -> Iterator[Artefact]:
        for event in events:
            where = f"event {event.key}"
            yield (where + " repr", repr(event))
            yield (where + " url", str(event.url))
            yield (where + " params", json.dumps(event.params, ensure_ascii=False))
            yield (where + " headers", json.dumps(event.headers, ensure_ascii=False))
            yield (where + " summary", event.summary())
            yield (where + " note", event.profile_note)
            yield (where + " html", event.html or "")
            if event.profile is not None:
                yield (where + " profile", json.dumps(event.profile.to_json()))

    return collect


def collect_artefacts(sources: Iterable[ArtefactSource]) -> list[Artefact]:
    return [artefact for source in sources for artefact in source()]


#: Enough of a canary to tell it from any other (``canary-`` and 13 of its 32 hex
#: digits): a secret clipped by a length limit (a Mattermost message clips every
#: value) is still found.
TELLING_PREFIX = 20


def leaks(artefacts: list[Artefact], secrets: Iterable[str]) -> list[tuple[str, str]]:
    """``(secret, where)`` for every secret found in an artefact, even cut short."""
    return [
        (secret, where)
        for secret in secrets
        for where, text in artefacts
        if secret[:TELLING_PREFIX] in text
    ]


@dataclass
class CanaryExtras:
    """What other alert channels add to a canary run."""

    #: More keyword options for ``PerfAlert`` (e.g. ``mattermost_url=...``).
    options: dict[str, Any] = field(default_factory=dict)
    #: Called after the delivery worker is idle: wait (bounded) until the
    #: channel delivered everything, so that the sources see it all.
    settle: list[Callable[[], None]] = field(default_factory=list)
    #: More places to search (e.g. ``files_under(spool_dir)``, received bodies).
    sources: list[ArtefactSource] = field(default_factory=list)
    #: Called with every artefact once none leaked: assert that the channel
    #: carried the ordinary values (else a channel sending nothing would pass).
    checks: list[Callable[[list[Artefact]], None]] = field(default_factory=list)


@pytest.fixture
def canary_extras() -> CanaryExtras:
    """Override (or extend) this fixture to put another channel under the canary.

    The report folder is searched already, and with it the spool in its
    default place (``spool`` inside ``PERFALERT_FILE_DIR``).
    """
    return CanaryExtras()


class Canaries:
    """Distinct secret values, each named by where it was planted."""

    def __init__(self) -> None:
        self.by_place: dict[str, str] = {}

    def __getitem__(self, place: str) -> str:
        if place not in self.by_place:
            self.by_place[place] = f"canary-{uuid.uuid4().hex}"
        return self.by_place[place]


class TickingClock:
    """A wall clock that moves 100 seconds each time it is read."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 100.0
        return self.now


def busy(seconds: float = 0.03) -> None:
    """Work long enough for the sampler to take a call tree."""
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        sum(range(300))


def setup_views(app: Flask) -> None:
    @app.route("/search")
    def search() -> str:
        busy()
        return f"{len(request.args)} args"

    @app.get("/reset/<token>")
    def reset(token: str) -> str:
        busy()
        return "reset"

    @app.get("/page<parameters>")  # /page;jsessionid=... (a servlet-style path parameter)
    def page(parameters: str) -> str:
        busy()
        return "page"

    @app.post("/login")
    def login() -> str:
        busy()
        return f"{len(request.form)} fields, {len(request.files)} files"

    @app.post("/orders")
    def orders() -> str:
        busy()
        return str(type(request.get_json()).__name__)

    @app.post("/raw")
    def raw() -> str:
        busy()
        return str(len(request.get_data()))

    @app.post("/ignores-body")
    def ignores_body() -> str:
        busy()
        return "not read"

    @app.route("/fails", methods=["POST"])
    def fails() -> str:
        busy()
        request.get_json()
        raise RuntimeError("the view failed")

    app.config["PROPAGATE_EXCEPTIONS"] = False  # /fails answers 500, as in production
    app.logger.disabled = True  # and its traceback is expected


def plant_and_request(app: Flask, canary: Canaries) -> int:
    """Make the slow requests, each carrying canaries; how many were made."""
    client = app.test_client()
    client.set_cookie("sessionid", canary["cookie sessionid"])
    client.set_cookie("remember_me", canary["cookie remember_me"])
    basic = base64.b64encode(f"ann:{canary['basic auth']}".encode()).decode()
    sas = f"SharedAccessSignature sr=https%3A%2F%2Fq&sig={canary['header sas sig']}&se=1"
    headers = {
        "Authorization": f"Bearer {canary['header authorization']}",
        "Proxy-Authorization": f"Basic {basic}",
        "X-Api-Key": canary["header x-api-key"],
        "X-Auth-Token": canary["header x-auth-token"],
        "X-CSRF-Token": canary["header x-csrf-token"],
        "X-Upstream-Session": canary["header x-upstream-session"],
        "X-Forwarded-Auth": f"Bearer {canary['header forwarded bearer']}",
        "X-Custom": f"Token {canary['header token scheme']}",
        "X-Forwarded-Info": f"for=10.0.0.1; session={canary['header inline session']}",
        "X-Service-Key": canary["header x-service-key"],
        "X-Quoted": f'token="{canary["header quoted token"]} b"',
        "X-Upstream": sas,
        # By value: the bearer token and the cookie again, under names that hide nothing.
        "X-Echo": canary["header authorization"],
        "X-Trace": f"sess {canary['cookie sessionid']}",
        "Referer": (
            f"https://example.com/back?page=visible-referer&token={canary['referer']}"
            f"#access_token={canary['referer fragment']}&state={canary['referer state']}"
        ),
        "User-Agent": "visible-agent/1.0",
    }
    query = {
        "q": "visible-q",
        "password": canary["query password"],
        "API_KEY": canary["query api key"],
        "access_token": canary["query access_token"],
        "sig": canary["query sig"],
        "key": canary["query key"],
        "code": canary["query code"],
        "state": canary["query state"],
    }
    made = 0

    def slow(method: str, path: str, **kwargs: Any) -> None:
        nonlocal made
        client.open(path, method=method, **kwargs)
        made += 1

    slow("GET", "/search", query_string=query, headers=headers)
    slow("GET", f"/reset/{canary['path token']}", query_string={"lang": "visible-lang"})
    slow("GET", f"/page;jsessionid={canary['path parameter']}", query_string={"q": "visible-q"})
    slow(
        "POST",
        "/login",
        data={
            "username": "visible-user",
            "password": canary["form password"],
            "password_confirm": canary["form password"],
            "again": canary["form password"],  # by value: a name that hides nothing
            "confirm": canary["form confirm"],
            "pin": canary["form pin"],
            "otp": canary["form otp"],
            "card_number": canary["form card"],
            "avatar": (io.BytesIO(canary["upload content"].encode()), "visible-avatar.png"),
        },
        headers=headers,
    )
    body = {
        "order": {
            "id": "visible-order",
            "payment": {"cvv": canary["json cvv"], "holder": "visible-holder"},
            "customer": {"credentials": {"pin": canary["json nested credentials"]}},
        },
        "items": [{"sku": "visible-sku", "secret": canary["json list secret"]}],
        "session_id": canary["json session"],
        "creds": {"pass": canary["json creds pass"]},
        "code": canary["json oauth code"],
        "state": canary["json oauth state"],
    }
    slow("POST", "/orders", json=body, headers=headers)
    slow("POST", "/raw", data=json.dumps({"token": canary["raw json"]}), content_type="text/plain")
    slow(
        "POST",
        "/raw",
        data=b"\x00\x01" + canary["binary body"].encode(),
        content_type="application/octet-stream",
    )
    slow("POST", "/ignores-body", json={"note": canary["unread body"]})
    slow(
        "POST",
        "/ignores-body",
        data=f"password={canary['unread form']}",
        content_type="application/x-www-form-urlencoded",
    )
    slow("POST", "/fails", json={"token": canary["failing view"], "q": "visible-failing"})
    return made


#: Slow requests :func:`plant_and_request` makes, hence events (and alerts).
SLOW_REQUESTS = 10

VISIBLE = [
    "visible-q",
    "visible-lang",
    "visible-user",
    "visible-avatar.png",
    "visible-order",
    "visible-holder",
    "visible-sku",
    "visible-agent/1.0",
    "visible-referer",
    "visible-failing",
]


@pytest.mark.parametrize("profiler", ["sampling", "pyinstrument"])
def test_no_canary_appears_in_any_artefact(
    app: Flask,
    report_dir: Path,
    events: list[SlowRequestEvent],
    wait_delivery: Any,
    caplog: pytest.LogCaptureFixture,
    canary_extras: CanaryExtras,
    profiler: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    setup_views(app)
    canary = Canaries()
    PerfAlert(
        app,
        clock=TickingClock(),
        profiler=profiler,
        threshold_seconds=0.001,
        sample_after=0,
        sample_interval=0.001,
        alert_window_days=0.001,  # 86 s: with the ticking clock, every request alerts
        **canary_extras.options,
    )
    made = plant_and_request(app, canary)
    assert made == SLOW_REQUESTS
    wait_delivery()
    for settle in canary_extras.settle:
        settle()

    assert len(events) == made and all(not e.duplicate for e in events)
    reports = list(report_dir.glob("perfalert-*.html"))
    assert len(reports) == made
    assert any(e.profile is not None for e in events)

    sources = [
        files_under(report_dir),
        log_records(caplog),
        event_texts(events),
        *canary_extras.sources,
    ]
    artefacts = collect_artefacts(sources)
    assert len(canary.by_place) >= 40
    assert leaks(artefacts, canary.by_place.values()) == []
    report_text = "".join(text for where, text in artefacts if where.startswith("file "))
    event_text = "".join(text for where, text in artefacts if where.startswith("event "))
    for visible in VISIBLE:
        assert visible in report_text, visible
        assert visible in event_text, visible
    for check in canary_extras.checks:
        check(artefacts)


def test_the_search_finds_a_planted_leak(tmp_path: Path) -> None:
    # The search itself must work, or the canary test proves nothing.
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "alert.json").write_text('{"text": "x canary-abc y"}')
    artefacts = collect_artefacts([files_under(tmp_path)])
    assert leaks(artefacts, ["canary-abc"]) == [("canary-abc", f"file {tmp_path}/spool/alert.json")]


def test_the_search_finds_a_canary_cut_short() -> None:
    canary = Canaries()["clipped"]
    clipped = [("message", f"`password`=`{canary[:24]}…`")]
    assert leaks(clipped, [canary]) == [(canary, "message")]
    assert leaks([("message", canary[:12])], [canary]) == []  # "canary-" alone tells nothing
