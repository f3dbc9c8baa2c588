"""The Quick start's one line of set-up under gunicorn, with no setting at all about folders
or stores: one alert per endpoint across the workers and across a restart.

The app is a module of a project folder made by the test, so its instance
folder (where the defaults keep the data) is the test's own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from servers import Gunicorn, http_get

pytestmark = pytest.mark.server

APP = """\
import os
import time

from flask import Flask
from flask_perfalert import PerfAlert

app = Flask(__name__)
perf = PerfAlert(app)


@app.route("/")
def index():
    return str(os.getpid())


@app.route("/sleepy")
def sleepy():
    time.sleep(0.3)
    return str(os.getpid())
"""


def serve(project: Path, workdir: Path) -> Gunicorn:
    return Gunicorn(
        "sleepyapp:app",
        workdir,
        {"PERFALERT_THRESHOLD_SECONDS": "0.1", "PERFALERT_PROFILER": "none"},
        workers=2,
        default_folders=True,
        extra_args=["--pythonpath", str(project)],
    )


def slow_hits_on_both_workers(server: Gunicorn) -> set[str]:
    """Slow requests two at a time (a sync worker serves one at a time) until both
    workers have served one; the pids that served them."""
    pids: set[str] = set()
    with ThreadPoolExecutor(2) as pool:
        for _ in range(10):
            for status, body in pool.map(http_get, [server.base_url + "/sleepy"] * 2):
                assert status == 200
                pids.add(body.decode())
            if len(pids) == 2:
                break
    return pids


def test_two_sync_workers_and_a_restart_send_one_alert(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "sleepyapp.py").write_text(APP)
    reports = project / "instance" / "perfalert" / "sleepyapp" / "reports"

    with serve(project, tmp_path / "run") as server:
        assert len(slow_hits_on_both_workers(server)) == 2
    # Stopped gracefully: every report of both workers is written by now.
    assert len(list(reports.glob("perfalert-*-sleepy-*.html"))) == 1

    with serve(project, tmp_path / "run") as server:  # a deploy: new workers
        assert server.get("/sleepy")[0] == 200
    assert len(list(reports.glob("perfalert-*-sleepy-*.html"))) == 1
    assert (project / "instance" / "perfalert" / "sleepyapp" / "perfalert.db").is_file()
