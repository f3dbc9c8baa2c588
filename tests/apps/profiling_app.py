"""A Flask app for the profiling tests under gunicorn (sync, gthread, --preload).

Each slow request writes one JSON line to ``PROFILING_APP_EVENTS`` (O_APPEND):
pid, endpoint, profile note and the names of the functions in its call tree.
``/busy/<name>`` spins in a function named ``work_<name>`` for
``PROFILING_APP_SECONDS`` (0.3) seconds, so the tree must name it.
"""

from __future__ import annotations

import os

from flask import Flask
from profiles import spin  # tests/ is on gunicorn's --pythonpath

from apps.event_log import log_events
from flask_perfalert import PerfAlert

EVENTS = os.environ.get("PROFILING_APP_EVENTS")
SECONDS = float(os.environ.get("PROFILING_APP_SECONDS", "0.3"))

app = Flask(__name__)
perf = PerfAlert(app, file_enabled=False, threshold_seconds=SECONDS * 0.6)


def work_alpha() -> int:
    return spin(SECONDS)


def work_beta() -> int:
    return spin(SECONDS)


WORK = {"alpha": work_alpha, "beta": work_beta}


@app.route("/")
def index() -> str:
    return "ok"


@app.route("/pid")
def pid() -> str:
    return str(os.getpid())


@app.route("/busy/<name>")
def busy(name: str) -> str:
    return str(WORK[name]())


log_events(app, EVENTS)
