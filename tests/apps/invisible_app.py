"""An app that does what Flask-PerfAlert must stay out of, served by gunicorn in the tests.

``/copy-headers`` reads ``request.headers`` in a loop for ``COPY_SECONDS``
(0.3 s): anything written into the WSGI environ meanwhile makes it fail.

``/watchdog`` guards its work with the app's own alarm, set to fire after
``ALARM_SECONDS`` (0.1 s), and answers how long after arming it fired, as
JSON. How, depends on the worker (``INVISIBLE_APP_WATCHDOG``):

* ``view`` (sync workers): the common timeout pattern. The view installs its
  own ``SIGALRM`` handler, which raises, arms ``ITIMER_REAL``, computes until
  interrupted, then disarms the timer and puts the old handler back.
* ``startup`` (gthread workers): ``signal.signal`` works only on the main
  thread, and views run on others; so the handler (which notes the time) is
  installed once when the app is loaded, and each view arms ``ITIMER_REAL``
  under a lock (there is one per process) and works until the alarm is noted.
  The work is that of a threaded app: a little computing, then waiting on a
  service. (Work that never lets go of the GIL delays the handler, which runs
  on the main thread, by up to 0.2 s even without the extension.)
* ``gevent``: an alarm signal would interrupt whichever greenlet runs, not the
  request's, so a gevent app guards its work with ``gevent.Timeout`` instead;
  the same work, whose waits yield to the hub.

``/slow`` spins in the view itself for ``SLOW_SECONDS`` (0.4 s), so the
view's function is the hottest frame of its profile.

Each ``perf_slow_request`` event is appended as one JSON line to
``INVISIBLE_APP_EVENTS``. ``INVISIBLE_APP_PERFALERT=0`` leaves the
extension out (for a baseline run by hand). Flask-PerfAlert reads its
settings from the ``PERFALERT_*`` environment variables.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from flask import Flask, request

from apps.event_log import log_events
from flask_perfalert import PerfAlert

EVENTS = os.environ.get("INVISIBLE_APP_EVENTS")
WATCHDOG = os.environ.get("INVISIBLE_APP_WATCHDOG", "view")
COPY_SECONDS = 0.3
ALARM_SECONDS = 0.1
#: How long the guarded work would run if the alarm never came.
GIVE_UP_SECONDS = 2.0
SLOW_SECONDS = 0.4

app = Flask(__name__)
if os.environ.get("INVISIBLE_APP_PERFALERT", "1") == "1":
    PerfAlert(app)
log_events(app, EVENTS)


@app.get("/")
def index() -> str:
    return "ok"


@app.get("/copy-headers")
def copy_headers() -> str:
    t = time.perf_counter()
    while time.perf_counter() - t < COPY_SECONDS:
        dict(request.headers)
    return "ok"


@app.get("/slow")
def slow_view() -> str:
    n = 0
    deadline = time.perf_counter() + SLOW_SECONDS
    while time.perf_counter() < deadline:
        n += 1
    return str(n)


# -- the app's own watchdog ---------------------------------------------------------------
class Overrun(Exception):
    """The guarded work ran past its alarm."""


def _raise_overrun(signum: int, frame: FrameType | None) -> None:
    raise Overrun


def _alarm_after_view_handler() -> float | None:
    old = signal.signal(signal.SIGALRM, _raise_overrun)
    armed = time.perf_counter()
    try:
        signal.setitimer(signal.ITIMER_REAL, ALARM_SECONDS)
        while time.perf_counter() - armed < GIVE_UP_SECONDS:
            pass
        return None
    except Overrun:
        return time.perf_counter() - armed
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _work_a_little() -> None:
    """1 ms of computing, then a 5 ms wait for a service, as the work of a threaded app goes.

    Under gevent, ``time.sleep`` is patched and yields to the hub.
    """
    step = time.perf_counter() + 0.001
    while time.perf_counter() < step:
        pass
    time.sleep(0.005)


_timer_lock = threading.Lock()
_noted: list[float] = []


def _note_alarm(signum: int, frame: FrameType | None) -> None:
    _noted.append(time.perf_counter())


def _alarm_after_startup_handler() -> float | None:
    with _timer_lock:
        _noted.clear()
        armed = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, ALARM_SECONDS)
        try:
            while not _noted and time.perf_counter() - armed < GIVE_UP_SECONDS:
                _work_a_little()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return _noted[0] - armed if _noted else None


def _alarm_after_gevent_timeout() -> float | None:
    import gevent  # only under the gevent worker, which has installed it

    # A gevent timer counts from the time its loop last read the clock; read it now,
    # so that the alarm is due ALARM_SECONDS after ``armed``, not before.
    gevent.get_hub().loop.update_now()
    armed = time.perf_counter()
    try:
        with gevent.Timeout(ALARM_SECONDS, Overrun):
            while time.perf_counter() - armed < GIVE_UP_SECONDS:
                _work_a_little()
        return None
    except Overrun:
        return time.perf_counter() - armed


_WATCHDOGS = {
    "view": _alarm_after_view_handler,
    "startup": _alarm_after_startup_handler,
    "gevent": _alarm_after_gevent_timeout,
}
if WATCHDOG == "startup":
    signal.signal(signal.SIGALRM, _note_alarm)


@app.get("/watchdog")
def watchdog() -> dict[str, Any]:
    return {"alarm": ALARM_SECONDS, "fired_after": _WATCHDOGS[WATCHDOG]()}
