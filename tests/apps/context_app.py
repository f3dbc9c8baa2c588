"""An app for the alert-context tests under gunicorn: how unusual, how often, worse.

``/orders?ms=N`` sleeps N milliseconds (default 2). Each ``perf_slow_request``
event is one JSON line in ``CONTEXT_APP_EVENTS`` (see ``apps.event_log``).
Settings come from the ``PERFALERT_*`` environment.
"""

from __future__ import annotations

import os
import time

from flask import Flask, request

from apps.event_log import log_events
from flask_perfalert import PerfAlert

app = Flask(__name__)
PerfAlert(app)
log_events(app, os.environ.get("CONTEXT_APP_EVENTS"))


@app.get("/orders")
def orders() -> str:
    time.sleep(float(request.args.get("ms", "2")) / 1000)
    return f"{os.getpid()}\n"
