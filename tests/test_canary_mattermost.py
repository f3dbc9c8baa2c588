"""The canary with Mattermost alerts on: no secret reaches Mattermost or its spool.

The canary test of ``test_canary.py`` runs here again (it is imported, so
pytest collects it in this module) with this module's ``canary_extras``:
Mattermost alerts go to the stand-in, and what it received is searched too:
every request's query string, headers (all but the ``Authorization`` header,
which carries the Mattermost token on purpose: that token is no canary) and
raw body, the posts (message, props) and the uploaded reports; and the spool
folder's files.

In the ``fails-first`` run, Mattermost first hangs past the timeout and then
answers 503, with no retries: the first five alerts land in the spool, which
is searched at each "kept in the spool" (while it holds them). The sixth
alert gets through and the spool follows it, so all ten are delivered in the
end: every post comes from the spool or straight from an event, and both are
searched.

Delivery of the ten alerts is waited for on the Mattermost worker's thread,
with a bound.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import close_monitoring
from flask import Flask
from mattermost_standin import MattermostStandIn
from test_canary import SLOW_REQUESTS, VISIBLE, Artefact, CanaryExtras, files_under

# Collected here too: the same canary, with the fixture below.
from test_canary import test_no_canary_appears_in_any_artefact as test_no_canary_in_mattermost

from flask_perfalert.alerts.mattermost import WORKER

__all__ = ["test_no_canary_in_mattermost"]

#: Slow requests the canary test makes, hence alerts.
ALERTS = SLOW_REQUESTS
#: In ``fails-first``: posts that fail (one hang past the timeout, then 503s).
FAILED_POSTS = 5
#: Ordinary values a post's message shows (its URL and parameters).
IN_MESSAGES = ["visible-q", "visible-lang", "visible-user", "visible-order", "visible-failing"]
#: The one header the stand-in may receive a secret in: our own Mattermost token.
TOKEN_HEADER = "Authorization"


class SpoolSnapshots(logging.Handler):
    """Copies the spool's files each time an alert is kept in it (on the worker thread)."""

    def __init__(self, spool_dir: Path) -> None:
        super().__init__(logging.WARNING)
        self.spool_dir = spool_dir
        self.snapshots: list[list[Artefact]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "kept in the spool" in record.getMessage():
            self.snapshots.append(list(files_under(self.spool_dir)()))

    def artefacts(self) -> Iterator[Artefact]:
        for number, snapshot in enumerate(self.snapshots, 1):
            for where, text in snapshot:
                yield (f"spool snapshot {number}: {where}", text)


def received_by(standin: MattermostStandIn) -> Iterator[Artefact]:
    """Everything the stand-in received, but the token we send on purpose."""
    for number, call in enumerate(standin.requests, 1):
        where = f"Mattermost request {number} {call.method} {call.path}"
        assert call.authorized, f"{where}: {TOKEN_HEADER} is not our bearer token"
        yield (where + " query", call.query)
        headers = {k: v for k, v in call.headers.items() if k.lower() != TOKEN_HEADER.lower()}
        yield (where + " headers", json.dumps(headers, ensure_ascii=False))
        yield (where + " body", call.body.decode("utf-8", "replace"))
    for post in standin.posts:
        yield (f"Mattermost post {post['id']}", json.dumps(post, ensure_ascii=False))
        yield (f"Mattermost post {post['id']} message", post["message"])
    for file_id, upload in standin.files.items():
        yield (f"Mattermost upload {file_id} name", upload["name"])
        yield (f"Mattermost upload {file_id}", upload["data"].decode("utf-8", "replace"))


def entry_files(artefacts: list[Artefact]) -> list[Artefact]:
    """The spool entries' contents among ``files_under``'s artefacts (not their names)."""
    return [(w, t) for w, t in artefacts if w.startswith("file /") and w.endswith(".json")]


@pytest.fixture
def standin() -> Iterator[MattermostStandIn]:
    with MattermostStandIn() as server:
        yield server


@pytest.fixture(params=["healthy", "fails-first"])
def canary_extras(
    request: pytest.FixtureRequest,
    app: Flask,
    standin: MattermostStandIn,
    tmp_path: Path,
    report_dir: Path,
) -> Iterator[CanaryExtras]:
    fails_first = request.param == "fails-first"
    spool_dir = tmp_path / "mattermost-spool"  # apart from the reports: searched on its own
    options: dict[str, Any] = {
        "mattermost_enabled": True,
        "mattermost_url": standin.url,
        "mattermost_token": standin.token,
        "mattermost_channel_id": standin.channel_id,
        "spool_dir": spool_dir,
        "mattermost_timeout": 1.0 if fails_first else 5.0,
    }
    if fails_first:
        options["mattermost_max_retries"] = 0
        standin.fault("hang", times=1)  # the first post: no answer within the timeout
        standin.fault(status=503, times=FAILED_POSTS - 1)
    snapshots = SpoolSnapshots(spool_dir)

    def delivered() -> None:
        posts = standin.wait_posts(ALERTS, timeout=20)
        assert WORKER.wait_idle(20), "the Mattermost worker did not finish"
        assert len(posts) == ALERTS, "every alert reached Mattermost"

    def carried_the_ordinary_values(artefacts: list[Artefact]) -> None:
        messages = "\n".join(post["message"] for post in standin.posts)
        for visible in IN_MESSAGES:
            assert visible in messages, visible
        reports = {path.read_bytes() for path in report_dir.glob("perfalert-*.html")}
        attached = []
        for post in standin.posts:
            [file_id] = post["file_ids"]
            attached.append(standin.file_of(file_id)["data"])
        assert set(attached) == reports and len(attached) == ALERTS, "each report, attached"
        attached_text = b"".join(attached).decode()
        for visible in VISIBLE:
            assert visible in attached_text, visible
        assert entry_files(list(files_under(spool_dir)())) == [], "the spool is empty again"
        if fails_first:
            assert len(standin.calls("POST", "/api/v4/posts")) == ALERTS + FAILED_POSTS
            assert len(snapshots.snapshots) == FAILED_POSTS
            spooled = entry_files(snapshots.snapshots[-1])
            # Every alert is on disk from the moment it is made; the failed ones stay.
            assert len(spooled) >= FAILED_POSTS, "the failed alerts were all in the spool"
            spool_text = "".join(text for _, text in spooled)
            for visible in ("visible-q", "visible-lang", "visible-user", "visible-order"):
                assert visible in spool_text, visible
            assert "[Filtered]" in spool_text

    logger = logging.getLogger("flask_perfalert")
    logger.addHandler(snapshots)
    try:
        yield CanaryExtras(
            options=options,
            settle=[delivered],
            sources=[lambda: received_by(standin), files_under(spool_dir), snapshots.artefacts],
            checks=[carried_the_ordinary_values],
        )
    finally:
        logger.removeHandler(snapshots)
        close_monitoring(app)  # the replay timer the failures set
        assert WORKER.wait_idle(30), "the Mattermost worker did not finish"
