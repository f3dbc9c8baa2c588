"""Mattermost alerts against a real HTTP stand-in of Mattermost on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from mattermost_setup import (
    busy,
    event_ids,
    monitored,
    quick_retries,
    settle,
    spool_dir,
    spool_entries,
    spooled,
    standin,
)
from mattermost_standin import MattermostStandIn
from mattermostdriver import Driver

from flask_perfalert.alerts import mattermost as mm
from flask_perfalert.alerts.mattermost import WORKER
from flask_perfalert.alerts.mattermost.address import parse_server_url
from flask_perfalert.alerts.mattermost.client import MattermostClient
from flask_perfalert.alerts.mattermost.worker import MattermostWorker
from flask_perfalert.events_thread import EVENTS

HERE = Path(__file__).parent

__all__ = ["quick_retries", "spool_dir", "standin"]  # fixtures, imported for pytest


# -- the post ------------------------------------------------------------------------------
def test_one_slow_request_gives_one_post_with_its_report(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, report_dir: Path
) -> None:
    perf = monitored(app, standin, spool_dir)
    client = app.test_client()
    assert client.get("/slow/a?page=2&password=hunter2").status_code == 200
    settle()
    assert client.get("/slow/b?page=3").status_code == 200  # same endpoint: a duplicate
    settle()

    assert len(standin.posts) == 1
    post = standin.posts[0]
    assert post["channel_id"] == standin.channel_id
    [file_id] = post["file_ids"]
    upload = standin.file_of(file_id)
    assert upload["channel_id"] == standin.channel_id and upload["post_id"] == post["id"]
    [report] = list(report_dir.glob("perfalert-*.html"))
    assert upload["data"] == report.read_bytes(), "the same report the file subscriber writes"
    assert upload["name"] == report.name

    message = post["message"]
    for part in (
        "`slow`",
        "`GET`",
        "/slow/a?page=2&password=%5BFiltered%5D`",
        "`page`=`2`",
        "`password`=`[Filtered]`",
        "`200`",
        "against a threshold of 0.050 s",
        f"**Process:** {os.getpid()}",
    ):
        assert part in message, part
    assert re.search(r"\*\*Time:\*\* \d{4}-\d\d-\d\dT", message)
    # Ranked by share; which is first depends on the samples, so only its form is checked.
    assert re.search(r"^[1-5]\. `busy` at `mattermost_setup\.py:\d+`: \d+%$", message, re.M)
    assert "hunter2" not in message and b"hunter2" not in upload["data"]
    stats = perf.stats(app)
    assert (stats["delivered"], stats["spooled"], stats["dropped"]) == (1, 0, 0)
    assert spooled(spool_dir) == []


def test_the_token_goes_as_a_bearer_header_only(
    app: Flask, standin: MattermostStandIn, spool_dir: Path
) -> None:
    monitored(app, standin, spool_dir)
    app.test_client().get("/slow/a")
    settle()
    assert [(r.path, r.authorized) for r in standin.requests] == [
        ("/api/v4/files", True),
        ("/api/v4/posts", True),
    ]


# -- retries -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fault", "path"),
    [
        ({"status": 500}, "/api/v4/posts"),
        ({"status": 503}, "/api/v4/files"),
        ({"status": 500, "times": 3}, "/api/v4/files"),
        ({"status": 429, "retry_after": 0.3}, "/api/v4/posts"),
        ({"kind": "hang"}, "/api/v4/posts"),
        ({"kind": "hang"}, "/api/v4/files"),
    ],
    ids=["500-post", "503-upload", "500-upload-3x", "429-post", "hang-post", "hang-upload"],
)
def test_transient_faults_are_retried_then_delivered(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, fault: dict[str, Any], path: str
) -> None:
    perf = monitored(app, standin, spool_dir, mattermost_timeout=0.5, mattermost_max_retries=3)
    standin.fault(path=path, **fault)
    app.test_client().get("/slow/a")
    settle()
    assert len(standin.posts) == 1, "delivered once"
    assert len(standin.posts[0]["file_ids"]) == 1
    tries = standin.calls("POST", path)
    assert len(tries) == fault.get("times", 1) + 1
    if fault.get("retry_after"):
        assert tries[1].at - tries[0].at >= fault["retry_after"], "Retry-After was honoured"
    assert perf.stats(app)["delivered"] == 1 and spooled(spool_dir) == []


def test_a_refused_connection_is_retried_and_delivered_once_mattermost_listens(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_perfalert")
    monitored(app, standin, spool_dir, mattermost_max_retries=3)
    standin.down()

    class BackOnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "connection refused" in record.getMessage() and "try 2 of 4" in record.getMessage():
                standin.start()  # Mattermost comes back during the back-off

    handler = BackOnRetry()
    logging.getLogger("flask_perfalert").addHandler(handler)
    try:
        app.test_client().get("/slow/a")
        settle()
    finally:
        logging.getLogger("flask_perfalert").removeHandler(handler)
    assert len(standin.posts) == 1 and spooled(spool_dir) == []
    assert "Posted to Mattermost" in caplog.text


@pytest.mark.parametrize("dedup_ttl", [30.0, 0.0], ids=["server-dedup", "no-server-dedup"])
def test_a_post_that_timed_out_but_was_made_is_not_posted_twice(
    app: Flask, spool_dir: Path, dedup_ttl: float
) -> None:
    with MattermostStandIn(dedup_ttl=dedup_ttl) as standin:
        monitored(app, standin, spool_dir, mattermost_timeout=0.5)
        standin.fault("hang_after")  # the post is made, the answer never comes
        app.test_client().get("/slow/a")
        settle()
        assert len(standin.posts) == 1
        assert len(standin.calls("POST", "/api/v4/posts")) == 1, "found, not posted again"
        assert len(standin.calls("GET", f"/api/v4/channels/{standin.channel_id}/posts")) == 1
        assert spooled(spool_dir) == []


def test_the_pending_post_id_makes_a_repeated_post_return_the_first(
    standin: MattermostStandIn,
) -> None:
    address, _ = parse_server_url(standin.url)
    client = MattermostClient(address, standin.token, standin.channel_id, 5)
    first = client.create_post("hello", [], "e1" * 16, {})
    second = client.create_post("hello", [], "e1" * 16, {})
    assert first["id"] == second["id"] and len(standin.posts) == 1


def test_request_timeout_is_the_driver_option_that_bounds_http_calls(
    standin: MattermostStandIn,
) -> None:
    """mattermostdriver's ``timeout`` is for the websocket; ``request_timeout`` bounds HTTP."""
    address, _ = parse_server_url(standin.url)
    base = address.driver_options(standin.token, 0.2)
    unbounded = Driver(dict(base, request_timeout=None, timeout=0.2))
    unbounded.client.token = standin.token
    standin.fault("delay", method="GET", path="/api/v4/users/me", seconds=1.0)
    assert unbounded.users.get_user("me")["id"] == standin.user["id"], "waited past `timeout`"

    bounded = Driver(base)
    bounded.client.token = standin.token
    standin.fault("hang", method="GET", path="/api/v4/users/me")
    with pytest.raises(requests.exceptions.ReadTimeout):
        bounded.users.get_user("me")


# -- 4xx -------------------------------------------------------------------------------------
@pytest.mark.allow_internal_errors
@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("token", "Mattermost rejected the token (401)"),
        ("channel", "channel not found or bot not a member (403)"),
        ("unknown-channel", "channel not found or bot not a member (403)"),
    ],
)
def test_a_settings_problem_is_not_retried_but_named_and_the_alert_kept(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    setting: str,
    problem: str,
) -> None:
    perf = monitored(app, standin, spool_dir)
    if setting == "token":
        app.config["PERFALERT_MATTERMOST_TOKEN"] = "not-the-token"
    elif setting == "channel":
        app.config["PERFALERT_MATTERMOST_CHANNEL_ID"] = standin.other_channel_id
    else:
        app.config["PERFALERT_MATTERMOST_CHANNEL_ID"] = "x" * 26
    perf.init_app(app)
    app.test_client().get("/slow/a")
    settle()
    assert standin.posts == []
    assert len(standin.calls("POST", "/api/v4/files")) == 1, "not retried"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(problem in m for m in errors), errors
    assert len(spooled(spool_dir)) == 1
    stats = perf.stats(app)
    assert (stats["spooled"], stats["delivery_failures"], stats["delivered"]) == (1, 1, 0)


def test_a_report_too_large_is_left_off_and_the_message_still_posted(
    app: Flask, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with MattermostStandIn(max_file_size=1000) as standin:
        monitored(app, standin, spool_dir)
        app.test_client().get("/slow/a")
        settle()
        [post] = standin.posts
        assert post["file_ids"] == []
        assert "report could not be attached: report too large (413)" in post["message"]
        assert len(standin.calls("POST", "/api/v4/files")) == 1, "not retried"
        assert "report too large (413)" in caplog.text


# -- Mattermost down, hanging, overflowing -------------------------------------------------------
def test_alerts_made_while_mattermost_is_down_are_delivered_when_it_is_back(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    perf = monitored(app, standin, spool_dir, mattermost_max_retries=2)
    app.add_url_rule("/other", "other", lambda: busy(0.08) or "x")
    client = app.test_client()
    standin.down()
    client.get("/slow/a?password=hunter2")
    settle()
    assert "connection refused" in caplog.text
    assert "kept in the spool" in caplog.text
    [entry] = spooled(spool_dir)
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    [path] = spool_entries(spool_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert standin.token not in text and "hunter2" not in text
    assert "[Filtered]" in entry["message"]

    standin.start()  # back, on the same address
    client.get("/slow/a")  # a duplicate: nothing new to send
    settle()
    assert standin.posts == []
    client.get("/other")  # a new alert: delivered, then the spool follows
    settle()
    ids = event_ids(standin)
    assert len(ids) == 2 and len(set(ids)) == 2 and entry["event_id"] in ids
    assert all(len(p["file_ids"]) == 1 for p in standin.posts)
    assert spooled(spool_dir) == []
    stats = perf.stats(app)
    assert (stats["delivered"], stats["spooled"], stats["dropped"]) == (2, 1, 0)


def test_while_mattermost_is_down_new_alerts_wait_and_a_timer_sends_them(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mm, "REPLAY_MIN", 0.3)
    monitored(app, standin, spool_dir, mattermost_max_retries=1)
    app.add_url_rule("/other", "other", lambda: busy(0.08) or "x")
    client = app.test_client()
    standin.down()
    client.get("/slow/a")
    settle()
    client.get("/other")  # Mattermost is known to be down: straight to the spool
    settle()
    assert len(spooled(spool_dir)) == 2
    standin.start()
    posts = standin.wait_posts(2, timeout=20)  # no new alert: the replay timer does it
    assert len(posts) == 2 and len(set(event_ids(standin))) == 2
    settle()
    assert spooled(spool_dir) == []


def test_a_hanging_mattermost_never_holds_up_the_request_or_the_file_reports(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, report_dir: Path
) -> None:
    monitored(app, standin, spool_dir, mattermost_timeout=60)
    for name in ("one", "two", "three"):
        app.add_url_rule(f"/{name}", name, lambda: busy(0.08) or "x")
    standin.fault("hang", path=None, method=None, times=None, seconds=60)
    client = app.test_client()
    assert client.get("/one").status_code == 200
    while not standin.requests:  # the delivery thread is now stuck in Mattermost
        time.sleep(0.01)
    assert client.get("/two").status_code == 200
    assert client.get("/three").status_code == 200
    assert EVENTS.wait_idle(30)
    assert len(list(report_dir.glob("perfalert-*.html"))) == 3, "file reports went on"
    assert WORKER.busy and len(standin.requests) == 1, "Mattermost still hangs"
    assert len(spooled(spool_dir)) >= 1, "the alert is on disk before it is sent"
    standin.clear_faults()
    standin.wait_posts(3, timeout=20)
    settle()
    assert len(standin.posts) == 3 and spooled(spool_dir) == []


def test_a_full_queue_keeps_the_alert_in_the_spool_with_a_logged_reason(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    small = MattermostWorker(queue_size=1)
    monkeypatch.setattr(mm, "WORKER", small)
    perf = monitored(app, standin, spool_dir, mattermost_timeout=60)
    for name in ("one", "two", "three"):
        app.add_url_rule(f"/{name}", name, lambda: busy(0.08) or "x")
    standin.fault("hang", path=None, method=None, times=None, seconds=60)
    client = app.test_client()
    client.get("/one")
    while not standin.requests:
        time.sleep(0.01)
    client.get("/two")  # queued
    client.get("/three")  # refused: the queue is full
    assert small.overflow == 1
    assert "Alert queue full" in caplog.text
    assert re.search(
        r"Mattermost alert for GET three .* kept in the spool .*: the alert queue is full",
        caplog.text,
    )
    assert perf.stats(app)["dropped"] == 0 and perf.stats(app)["spooled"] == 1
    standin.clear_faults()
    standin.wait_posts(3, timeout=30)  # the third follows the first delivery
    assert small.wait_idle(30)
    assert len(standin.posts) == 3
    small.forget(perf._monitor(app).mattermost_alerts)  # type: ignore[arg-type]


# -- independence, settings, secrets -------------------------------------------------------------
def test_an_unwritable_report_folder_does_not_stop_mattermost(
    app: Flask, standin: MattermostStandIn, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    app.config["PERFALERT_FILE_DIR"] = str(blocker)
    perf = monitored(app, standin, blocker / "spool")  # the spool cannot be written either
    app.test_client().get("/slow/a")
    settle()
    [post] = standin.posts
    assert len(post["file_ids"]) == 1, "the report is rendered for Mattermost all the same"
    assert perf.stats(app)["delivered"] == 1


@pytest.mark.allow_internal_errors
def test_a_failing_mattermost_does_not_stop_file_reports(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, report_dir: Path
) -> None:
    monitored(app, standin, spool_dir, mattermost_token="wrong")
    app.test_client().get("/slow/a")
    settle()
    assert standin.posts == []
    assert len(list(report_dir.glob("perfalert-*.html"))) == 1


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"PERFALERT_MATTERMOST_URL": None}, "PERFALERT_MATTERMOST_URL is missing"),
        (
            {"PERFALERT_MATTERMOST_TOKEN": None, "PERFALERT_MATTERMOST_CHANNEL_ID": " "},
            "PERFALERT_MATTERMOST_TOKEN, PERFALERT_MATTERMOST_CHANNEL_ID are missing",
        ),
        ({"PERFALERT_MATTERMOST_URL": "ftp://chat"}, "PERFALERT_MATTERMOST_URL is not usable"),
    ],
)
def test_enabled_but_incomplete_settings_warn_and_the_app_runs(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    config: dict[str, Any],
    named: str,
) -> None:
    perf = monitored(app, standin, spool_dir)
    app.config.update(config)
    caplog.clear()
    perf.init_app(app)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(named in w and "Mattermost alerts are off" in w for w in warnings), warnings
    assert app.test_client().get("/slow/a").status_code == 200
    settle()
    assert standin.requests == []


@pytest.mark.allow_internal_errors
def test_the_token_never_appears_in_logs_spool_or_settings(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("mattermostdriver", "mattermostdriver.websocket", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    perf = monitored(app, standin, spool_dir, mattermost_timeout=0.5)
    for name in ("e500", "echo", "hang", "e401"):
        app.add_url_rule(f"/{name}", name, lambda: busy(0.08) or "x")
    client = app.test_client()
    standin.fault(status=500)
    client.get("/e500")
    settle()
    standin.fault("echo_auth")  # an error message quoting the Authorization header
    client.get("/echo")
    settle()
    standin.fault("hang")
    client.get("/hang")
    settle()
    standin.fault(status=401, path="/api/v4/files")
    client.get("/e401")
    settle()

    assert any(f"Bearer {standin.token}" in str(r.headers) for r in standin.requests)
    assert "Bad request with Bearer **********" in caplog.text
    assert "Mattermost rejected the token (401)" in caplog.text
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert standin.token not in logged
    driver_warnings = [
        r for r in caplog.records if r.name.startswith("mattermostdriver") and r.levelno >= 30
    ]
    assert driver_warnings == []
    for entry in spooled(spool_dir):
        assert standin.token not in json.dumps(entry)
    assert standin.token not in json.dumps(perf.effective_settings(app))
    assert perf.effective_settings(app)["PERFALERT_MATTERMOST_TOKEN"] == "**********"


# -- exit ------------------------------------------------------------------------------------
EXIT_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from flask import Flask
from flask_perfalert import PerfAlert
from flask_perfalert.alerts.mattermost import worker as mattermost_worker
mattermost_worker.EXIT_FLUSH_SECONDS = 1.0
app = Flask("exit")
app.config.update(
    PERFALERT_FILE_DIR={reports!r}, PERFALERT_SPOOL_DIR={spool!r}, PERFALERT_THRESHOLD_SECONDS=0.05,
    PERFALERT_MATTERMOST_ENABLED=True, PERFALERT_MATTERMOST_URL={url!r},
    PERFALERT_MATTERMOST_TOKEN={token!r}, PERFALERT_MATTERMOST_CHANNEL_ID={channel!r},
    PERFALERT_MATTERMOST_TIMEOUT=60,
)
PerfAlert(app)
def busy():
    end = time.perf_counter() + 0.08
    while time.perf_counter() < end:
        pass
    return "x"
for name in ("one", "two", "three"):
    app.add_url_rule("/" + name, name, busy)
client = app.test_client()
for name in ("one", "two", "three"):
    client.get("/" + name, buffered=True).close()
print("requests done", flush=True)
"""


@pytest.mark.parametrize("hanging", [False, True], ids=["healthy", "hanging"])
def test_at_exit_queued_alerts_are_flushed_or_spooled(
    standin: MattermostStandIn, tmp_path: Path, hanging: bool
) -> None:
    spool = tmp_path / "spool"
    script = EXIT_SCRIPT.format(
        tests=str(HERE),
        reports=str(tmp_path / "reports"),
        spool=str(spool),
        url=standin.url,
        token=standin.token,
        channel=standin.channel_id,
    )
    if hanging:
        standin.fault("hang", path=None, method=None, times=None, seconds=60)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "requests done" in done.stdout
    if hanging:
        # One was being sent (on disk before the try), two waited in the queue.
        assert len(spooled(spool)) == 3
        assert done.stderr.count("kept in the spool") == 3
        assert "still being sent when the process exited" in done.stderr
        assert standin.posts == []
    else:
        assert len(standin.posts) == 3 and spooled(spool) == []


# -- threads ---------------------------------------------------------------------------------
THREAD_SCRIPT = """
import os, sys, threading, time
from flask import Flask
from flask_perfalert import PerfAlert
from flask_perfalert.alerts.mattermost.worker import WORKER
from flask_perfalert.events_thread import EVENTS
app = Flask("threads")
app.config.update(
    PERFALERT_FILE_DIR={reports!r}, PERFALERT_THRESHOLD_SECONDS=0.05,
    PERFALERT_MATTERMOST_ENABLED=True, PERFALERT_MATTERMOST_URL={url!r},
    PERFALERT_MATTERMOST_TOKEN={token!r}, PERFALERT_MATTERMOST_CHANNEL_ID={channel!r},
)
PerfAlert(app)
def slow():
    end = time.perf_counter() + 0.08
    while time.perf_counter() < end:
        pass
    return str(os.getpid())
app.add_url_rule("/slow", "slow", slow)
app.add_url_rule("/fast", "fast", lambda: "x")
client = app.test_client()
for _ in range(20):
    client.get("/fast", buffered=True).close()
print("no alert:", sorted(t.name for t in threading.enumerate()), flush=True)
pid = os.fork()
if pid == 0:  # a worker forked from the preloaded app
    client.get("/slow", buffered=True).close()
    EVENTS.wait_idle(20)
    WORKER.wait_idle(20)
    print("child:", sorted(t.name for t in threading.enumerate()), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent:", sorted(t.name for t in threading.enumerate()), flush=True)
"""


def test_delivery_threads_start_with_the_first_alert_and_in_a_forked_child(
    standin: MattermostStandIn, tmp_path: Path
) -> None:
    script = THREAD_SCRIPT.format(
        reports=str(tmp_path / "reports"),
        url=standin.url,
        token=standin.token,
        channel=standin.channel_id,
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["no alert"] == "['MainThread']", "no alert, no thread"
    assert lines["parent"] == "['MainThread']"
    assert "flask-perfalert-mattermost" in lines["child"]
    assert "flask-perfalert-events" in lines["child"]
    [post] = standin.wait_posts(1)
    assert f"**Process:** {os.getpid()}" not in post["message"]
