"""A Flask app for the shared-store tests, run by gunicorn.

Configured by environment variables: every ``PERFALERT_*`` setting (read by
the extension itself), and

* ``STORAGE_APP_EVENTS``: a file; each ``perf_slow_request`` signal appends one
  line ``<pid> <endpoint> <duplicate>`` (one ``write`` with ``O_APPEND``, so lines
  of concurrent workers never mix);
* ``STORAGE_APP_LOG``: a file receiving the extension's log records as
  ``<pid> <LEVEL> <message>``, from ``STORAGE_APP_LOG_LEVEL`` (``INFO``) up;
* ``STORAGE_APP_SLEEP``: seconds each ``/slow/<name>`` request takes (0.2);
* ``STORAGE_APP_HOLD_UNTIL``: a file; each ``/slow/<name>`` request first creates
  ``<file>.started``, then waits until the file exists (at most 60 s), then
  takes three times ``STORAGE_APP_SLEEP``: a request the test makes slower
  than another, and end after it.

Routes: ``/`` answers at once; ``/slow/a``, ``/slow/b``, ``/slow/c`` are three
slow endpoints (three de-duplication keys).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from flask import Flask

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request

EVENTS = os.environ.get("STORAGE_APP_EVENTS")
LOG = os.environ.get("STORAGE_APP_LOG")
SLEEP = float(os.environ.get("STORAGE_APP_SLEEP", "0.2"))
HOLD_UNTIL = os.environ.get("STORAGE_APP_HOLD_UNTIL")

if LOG:
    handler = logging.FileHandler(LOG)
    handler.setFormatter(logging.Formatter("%(process)d %(levelname)s %(message)s"))
    logger = logging.getLogger("flask_perfalert")
    logger.addHandler(handler)
    logger.setLevel(os.environ.get("STORAGE_APP_LOG_LEVEL", "INFO"))

app = Flask(__name__)
perf = PerfAlert(app)


@app.route("/")
def index() -> str:
    return f"{os.getpid()}\n"


def slow() -> str:
    if HOLD_UNTIL:
        with open(f"{HOLD_UNTIL}.started", "a"):
            pass
        deadline = time.monotonic() + 60
        while not os.path.exists(HOLD_UNTIL) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(2 * SLEEP)  # and SLEEP below: three times as slow
    time.sleep(SLEEP)
    return f"{os.getpid()}\n"


for name in ("a", "b", "c"):
    app.add_url_rule(f"/slow/{name}", f"slow_{name}", slow)


@perf_slow_request.connect_via(app)
def record(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
    if EVENTS:
        line = f"{os.getpid()} {event.endpoint} {event.duplicate}\n".encode()
        fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
