"""No Mattermost alert is lost: to the spool at once, replayed at start-up and on a timer.

Each test is one way an alert used to be lost: a Retry-After too large for a
timer, a process killed with alerts in memory, a restart with alerts waiting
and no new one coming, a spool entry that stopped the others, entries kept
with settings since fixed, an error inside the delivery thread, a full disk
logged per alert. The last tests check that ``flask perfalert stats`` and
``check`` say when alerts wait.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import close_monitoring
from flask import Flask
from mattermost_setup import (
    kept_while_down,
    mattermost_config,
    monitored,
    posted_for,
    quick_retries,
    settle,
    slow_endpoints,
    spool_dir,
    spool_entries,
    spooled,
    standin,
)
from mattermost_standin import MattermostStandIn
from servers import wait_for

from flask_perfalert import PerfAlert
from flask_perfalert.alerts import mattermost as mm
from flask_perfalert.alerts.mattermost import WORKER
from flask_perfalert.alerts.mattermost.client import MattermostClient

__all__ = ["quick_retries", "spool_dir", "standin"]  # fixtures, imported for pytest

HERE = Path(__file__).parent
POSTS = "/api/v4/posts"


def worker_alive() -> bool:
    return any(t.name == WORKER.thread_name and t.is_alive() for t in threading.enumerate())


# -- a Retry-After no timer can wait for -------------------------------------------------------
@pytest.mark.parametrize("retry_after", ["1e10", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_huge_retry_after_does_not_stop_delivery(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, retry_after: str
) -> None:
    monitored(app, standin, spool_dir)
    slow_endpoints(app, "first", "second")
    client = app.test_client()
    standin.fault(status=429, retry_after=retry_after)
    client.get("/first")
    settle()
    assert len(spooled(spool_dir)) == 1, "kept for later, not dropped"
    client.get("/second")  # Mattermost answers again: this one goes, and the spool follows
    posts = standin.wait_posts(2, timeout=20)
    assert sorted(posted_for(standin)) == ["first", "second"], posts
    assert worker_alive()


# -- killed with alerts queued; restarted with alerts waiting ------------------------------------
APP_SCRIPT = """
import os, signal, sys, time
from flask import Flask
from flask_perfalert import PerfAlert
app = Flask("killed")
app.config.update({config!r})
PerfAlert(app)
def busy():
    end = time.perf_counter() + 0.08
    while time.perf_counter() < end:
        pass
    return "x"
names = {names!r}
for name in names:
    app.add_url_rule("/" + name, name, busy)
client = app.test_client()
for name in names:
    client.get("/" + name, buffered=True).close()
print("requests done", flush=True)
if {kill!r}:
    time.sleep(1.0)  # each alert is on disk within a second of its request
    os.kill(os.getpid(), signal.SIGKILL)
deadline = time.monotonic() + 30
while time.monotonic() < deadline and any(n.endswith(".json") for n in os.listdir({spool!r})):
    time.sleep(0.05)
print("spool empty" if not any(n.endswith(".json") for n in os.listdir({spool!r})) else "left")
"""


def run_app(config: dict[str, Any], spool: Path, names: list[str], kill: bool) -> str:
    script = APP_SCRIPT.format(config=config, names=names, kill=kill, spool=str(spool))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=90
    )
    if kill:
        assert done.returncode == -signal.SIGKILL, done.stderr
    else:
        assert done.returncode == 0, done.stderr
    assert "requests done" in done.stdout, done.stderr
    return done.stdout


def test_alerts_of_a_killed_process_are_on_disk_and_sent_when_it_restarts(
    standin: MattermostStandIn, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    config = mattermost_config(
        standin, spool, mattermost_timeout=60, file_dir=str(tmp_path / "reports")
    )
    names = [f"endpoint{i}" for i in range(6)]
    standin.fault("hang", path=None, method=None, times=None, seconds=60)
    run_app(config, spool, names, kill=True)  # Mattermost hangs; SIGKILL with alerts queued
    assert sorted(e["summary"].split()[1] for e in spooled(spool)) == names, "all on disk"
    assert standin.posts == []

    standin.clear_faults()  # Mattermost is fine again; the app restarts; no new slow request
    output = run_app(config, spool, [], kill=False)
    assert "spool empty" in output, "the restarted process sent what waited"
    assert sorted(posted_for(standin)) == names


def test_alerts_waiting_at_start_up_are_sent_without_a_new_alert(
    app: Flask, standin: MattermostStandIn, spool_dir: Path
) -> None:
    kept_while_down(app, standin, spool_dir, "a", "b")
    assert len(spooled(spool_dir)) == 2
    standin.start()
    restarted = Flask(app.import_name)  # the next process of the same app
    restarted.config.update(app.config)
    PerfAlert(restarted)
    try:
        standin.wait_posts(2, timeout=20)
        assert sorted(posted_for(standin)) == ["a", "b"]
        wait_for(lambda: not spool_entries(spool_dir), timeout=10, what="an empty spool")
    finally:
        close_monitoring(restarted)


# -- one entry never blocks the others -------------------------------------------------------------
def test_a_lookup_the_bot_may_not_make_does_not_keep_an_alert_for_good(
    app: Flask, standin: MattermostStandIn, spool_dir: Path
) -> None:
    # A bot without the read_channel permission: every GET of the channel's posts is refused.
    monitored(app, standin, spool_dir, mattermost_max_retries=2)
    standin.fault(status=403, method="GET", path=f"/api/v4/channels/{standin.channel_id}/posts",
                  times=None)  # fmt: skip
    standin.fault(status=500)  # the first post: its outcome is unknown, so a lookup comes first
    app.test_client().get("/slow/a")
    settle()
    assert len(standin.posts) == 1, "posted all the same"
    assert spooled(spool_dir) == []


def test_one_entry_that_keeps_failing_does_not_hold_up_the_others(
    app: Flask, standin: MattermostStandIn, spool_dir: Path
) -> None:
    kept_while_down(app, standin, spool_dir, "alpha", "beta", "gamma")
    assert len(spooled(spool_dir)) == 3
    standin.start()
    # Mattermost fails every post about "alpha" (the oldest entry), and only those.
    standin.fault(status=500, body_contains=b"`alpha`", times=None)
    result = app.test_cli_runner().invoke(args=["perfalert", "check"])
    assert result.exit_code == 0, result.output
    assert "3 alert(s) were waiting; 2 sent, 1 left." in result.output
    assert sorted(n for n in posted_for(standin) if n != "perfalert_check") == ["beta", "gamma"]


# -- alerts kept while a setting was wrong are sent once it is fixed -----------------------
@pytest.mark.allow_internal_errors  # the wrong channel is logged as the error it is
def test_alerts_kept_for_a_wrong_channel_id_go_to_the_fixed_channel(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    perf = monitored(app, standin, spool_dir)
    app.config["PERFALERT_MATTERMOST_CHANNEL_ID"] = standin.other_channel_id  # not a member
    perf.init_app(app)
    app.test_client().get("/slow/a")
    settle()
    assert standin.posts == [] and len(spooled(spool_dir)) == 1
    app.config["PERFALERT_MATTERMOST_CHANNEL_ID"] = standin.channel_id  # the operator fixes it
    perf.init_app(app)
    result = app.test_cli_runner().invoke(args=["perfalert", "check"])
    assert result.exit_code == 0, result.output
    assert "1 alert(s) were waiting; 1 sent, 0 left." in result.output
    assert [p["channel_id"] for p in standin.posts] == [standin.channel_id] * 2


# -- the delivery thread cannot die ---------------------------------------------------------------
@pytest.mark.allow_internal_errors  # the unexpected error is logged, with its traceback
def test_an_unexpected_error_in_delivery_is_logged_and_the_alert_tried_again(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(mm, "REPLAY_MIN", 0.2)
    real = MattermostClient.create_post
    calls: list[int] = []

    def create_post(self: MattermostClient, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in the delivery code")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MattermostClient, "create_post", create_post)
    monitored(app, standin, spool_dir)
    app.test_client().get("/slow/a")
    standin.wait_posts(1, timeout=20)
    assert len(standin.posts) == 1, "sent by the next replay"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "a bug in the delivery code" in caplog.text
    assert worker_alive()
    wait_for(lambda: not spool_entries(spool_dir), timeout=10, what="an empty spool")


# -- a full disk is one warning, not one per alert --------------------------------------
def test_a_spool_that_cannot_be_written_costs_one_warning_not_one_per_alert(
    app: Flask, standin: MattermostStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monitored(app, standin, blocker / "spool")
    assert "cannot be created" in caplog.text  # said at start-up already
    caplog.clear()
    names = [f"e{i}" for i in range(5)]
    slow_endpoints(app, *names)
    client = app.test_client()
    for name in names:
        client.get(f"/{name}")
    settle()
    assert len(standin.posts) == 5, "sent without a copy on disk"
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_perfalert"  # not the alert lines, whose paths may say "spool"
        and r.levelno == logging.WARNING
        and "spool" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings


# -- stats and check say when alerts wait ----------------------------------------------
def test_stats_and_check_say_how_many_alerts_wait_and_since_when(
    app: Flask, standin: MattermostStandIn, spool_dir: Path
) -> None:
    kept_while_down(app, standin, spool_dir, "a", "b")
    oldest = min(entry["created"] for entry in spooled(spool_dir))
    runner = app.test_cli_runner()

    stats = runner.invoke(args=["perfalert", "stats"])
    assert stats.exit_code == 0, stats.output
    assert f"Mattermost: 2 alert(s) wait in the spool {spool_dir}" in stats.output
    assert "the oldest since" in stats.output
    data = json.loads(runner.invoke(args=["perfalert", "stats", "--json"]).output)
    assert data["mattermost_waiting"] == 2 and data["mattermost_oldest"] == oldest

    result = runner.invoke(args=["perfalert", "check"])  # Mattermost is still down
    assert result.exit_code == 1
    assert f"Mattermost: 2 alert(s) wait in the spool {spool_dir}" in result.output

    standin.start()
    result = runner.invoke(args=["perfalert", "check"])
    assert result.exit_code == 0, result.output
    assert "2 alert(s) were waiting; 2 sent, 0 left." in result.output
    stats = runner.invoke(args=["perfalert", "stats"])
    assert "Mattermost: no alert waits in the spool" in stats.output


# -- the limits, as documented ---------------------------------------------------------
@pytest.mark.allow_internal_errors  # nothing is lost silently: the drop is logged
def test_without_a_spool_an_alert_that_cannot_be_sent_is_dropped_with_a_reason(
    app: Flask, standin: MattermostStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    perf = monitored(app, standin, blocker / "spool", mattermost_max_retries=0)
    standin.down()
    app.test_client().get("/slow/a")
    settle()
    assert perf.stats(app)["dropped"] == 1
    assert "dropped: could not upload the report: connection refused" in caplog.text


def test_without_read_permission_a_post_whose_answer_was_lost_may_show_twice(
    app: Flask, standin: MattermostStandIn, spool_dir: Path
) -> None:
    monitored(app, standin, spool_dir, mattermost_timeout=0.5, mattermost_max_retries=1)
    standin.fault(status=403, method="GET", path=f"/api/v4/channels/{standin.channel_id}/posts",
                  times=None)  # fmt: skip
    standin.fault("hang_after")  # the post is made; its answer never comes
    standin.dedup_ttl = 0  # the retry comes after Mattermost's own 30 s de-duplication
    app.test_client().get("/slow/a")
    settle()
    assert len(standin.posts) == 2, "at least once: it could not look, so it posted again"


# -- a proxy's answer during a replay ------------------------------------------------------
@pytest.mark.parametrize("answer", ["408", "502", "reset"])
def test_a_proxy_answer_during_a_replay_keeps_the_entry_and_never_drops_it(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    answer: str,
) -> None:
    kept_while_down(app, standin, spool_dir, "alpha", "beta")
    standin.start()
    standin.proxy(answer, body_contains=b"`alpha`")  # the oldest entry's post, once
    result = app.test_cli_runner().invoke(args=["perfalert", "check"])
    assert result.exit_code == 0, result.output
    left = [e["summary"].split()[1] for e in spooled(spool_dir)]
    if answer == "reset":
        # No answer at all: Mattermost may be unreachable, so the replay stops there.
        assert "2 alert(s) were waiting; 0 sent, 2 left." in result.output
        assert sorted(left) == ["alpha", "beta"]
        assert (
            f"Mattermost alerts wait in the spool {spool_dir}: could not create the post: "
            f"{standin.url} closed the connection without an answer."
        ) in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    else:
        # An answer about this post: it waits on its own, the others go on.
        assert "2 alert(s) were waiting; 1 sent, 1 left." in result.output
        assert left == ["alpha"]
    assert sorted(n for n in posted_for(standin) if n != "perfalert_check") == sorted(
        {"alpha", "beta"} - set(left)
    )
