"""What the Mattermost tests share: the stand-in, a monitored app, and reading the spool.

Fixtures are imported by the test modules (``from mattermost_setup import ...``)
and listed in their ``__all__``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import close_monitoring
from flask import Flask
from mattermost_standin import MattermostStandIn

from flask_perfalert import PerfAlert
from flask_perfalert.alerts import mattermost as mm
from flask_perfalert.alerts.mattermost import WORKER
from flask_perfalert.events_thread import EVENTS


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(200))


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch, app: Flask) -> Iterator[None]:
    """Short back-offs; afterwards the app's replays stop, so none fires in the next test."""
    monkeypatch.setattr(mm, "BACKOFF_BASE", 0.01)
    yield
    close_monitoring(app)
    assert WORKER.wait_idle(30), "the Mattermost worker did not finish"


@pytest.fixture
def standin() -> Iterator[MattermostStandIn]:
    with MattermostStandIn() as server:
        yield server


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def mattermost_config(standin: MattermostStandIn, spool: Path, **config: Any) -> dict[str, Any]:
    """``app.config`` for Mattermost alerts to the stand-in, with ``config`` on top."""
    values: dict[str, Any] = dict(
        PERFALERT_MATTERMOST_ENABLED=True,
        PERFALERT_MATTERMOST_URL=standin.url,
        PERFALERT_MATTERMOST_TOKEN=standin.token,
        PERFALERT_MATTERMOST_CHANNEL_ID=standin.channel_id,
        PERFALERT_MATTERMOST_TIMEOUT=5,
        PERFALERT_SPOOL_DIR=str(spool),
        PERFALERT_THRESHOLD_SECONDS=0.05,
    )
    values.update({f"PERFALERT_{k.upper()}": v for k, v in config.items()})
    return values


def monitored(app: Flask, standin: MattermostStandIn, spool: Path, **config: Any) -> PerfAlert:
    """``app`` with slow views and Mattermost alerts to the stand-in.

    ``/slow/<name>`` is one endpoint (one alert per window); ``/<name>`` for the
    names of :func:`slow_endpoints` are one endpoint each.
    """
    app.config.update(mattermost_config(standin, spool, **config))

    @app.route("/slow/<name>")
    def slow(name: str) -> str:
        busy(0.08)
        return f"slow {name}"

    return PerfAlert(app)


def slow_endpoints(app: Flask, *names: str) -> None:
    """One slow endpoint per name, at ``/<name>``: each of them alerts."""
    for name in names:
        app.add_url_rule(f"/{name}", name, lambda: busy(0.08) or "x")


def kept_while_down(app: Flask, standin: MattermostStandIn, spool: Path, *names: str) -> PerfAlert:
    """The app, whose alerts for ``names`` wait in the spool: Mattermost is down."""
    perf = monitored(app, standin, spool, mattermost_max_retries=0)
    slow_endpoints(app, *names)
    standin.down()
    client = app.test_client()
    for name in names:
        client.get(f"/{name}")
    settle()
    return perf


def settle() -> None:
    """Wait until the events thread and Mattermost's worker have done their work."""
    assert EVENTS.wait_idle(30) and WORKER.wait_idle(30)


def spool_entries(spool_dir: Path) -> list[Path]:
    """The spool's entry files, oldest first."""
    if not spool_dir.exists():
        return []
    return sorted(
        p for p in spool_dir.iterdir() if p.name.startswith("mm-") and p.suffix == ".json"
    )


def spooled(spool_dir: Path) -> list[dict[str, Any]]:
    """What the spool's entries hold (the JSON after their signed header line)."""
    out = []
    for path in spool_entries(spool_dir):
        text = path.read_text()
        out.append(json.loads(text if text.startswith("{") else text.split("\n", 1)[1]))
    return out


def event_ids(standin: MattermostStandIn) -> list[str]:
    return [p["props"]["perfalert_event_id"] for p in standin.posts]


def posted_for(standin: MattermostStandIn) -> list[str]:
    """The endpoint each post is about, in posting order (the test alert's is perfalert_check)."""
    found = (re.search(r"\*\*Endpoint:\*\* `([^`]*)`", p["message"]) for p in standin.posts)
    return [match.group(1) if match else "?" for match in found]
