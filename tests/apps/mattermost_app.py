"""A small app for the gunicorn tests and the Mattermost benchmark.

Configured by ``PERFALERT_*`` environment variables; ``SLOW_SECONDS`` (default
0.15) is how long ``/slow`` computes. Each view answers with the worker's pid.
"""

from __future__ import annotations

import os
import time

from flask import Flask

from flask_perfalert import PerfAlert

app = Flask(__name__)
perf = PerfAlert(app)
SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "0.15"))


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(200))


@app.route("/slow")
def slow() -> str:
    busy(SLOW_SECONDS)
    return str(os.getpid())


@app.route("/fast")
def fast() -> str:
    return str(os.getpid())
