"""A Flask app for the shared-counters tests, run by gunicorn, a script or the CLI.

Configured by environment variables: every ``PERFALERT_*`` setting (read by
the extension itself), and

* ``STATS_APP_FLUSH_INTERVAL``: seconds between two batches of counts of one
  process (the extension's ``FLUSH_INTERVAL``, patched here for tests; ``0``
  sends after every request);
* ``STATS_APP_WARMUP``: requests the app serves itself when imported, with the
  test client (with gunicorn ``--preload``: in the master, before the fork).

Routes: ``/`` answers with the worker's pid.
"""

from __future__ import annotations

import os

from flask import Flask

import flask_perfalert.stats as counters
from flask_perfalert import PerfAlert

if "STATS_APP_FLUSH_INTERVAL" in os.environ:
    counters.FLUSH_INTERVAL = counters.FIRST_FLUSH_DELAY = float(
        os.environ["STATS_APP_FLUSH_INTERVAL"]
    )

app = Flask(__name__)
perf = PerfAlert(app)


@app.route("/")
def index() -> str:
    return f"{os.getpid()}\n"


with app.test_client() as client:
    for _ in range(int(os.environ.get("STATS_APP_WARMUP", "0"))):
        client.get("/", buffered=True)
