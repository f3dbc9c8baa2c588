"""Signals sent by Flask-PerfAlert.

Connect with ``perf_slow_request.connect_via(app)`` (or ``connect(func,
sender=app)``). Blinker keeps *weak* references to receivers by default: a
function defined at module level lives as long as its module, but a receiver
defined inside a function or a lambda is garbage-collected as soon as it goes
out of scope; pass ``weak=False`` for those.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

perf_slow_request = _signals.signal("perf-slow-request")
"""Sent once for every slow request and every slow call of a watched function.

The sender is the Flask application object (never the ``current_app`` proxy);
the one keyword argument ``event`` is a :class:`~flask_perfalert.SlowRequestEvent`.
``event.duplicate`` is True when an alert with the same key was already sent
inside the de-duplication window; the built-in file and Mattermost alerts
ignore such events, a receiver of your own decides for itself.

Receivers run after the client has its response, on the extension's events
thread (on the calling thread when the app is testing), outside any app or
request context: use ``sender`` (``sender.config``, ``sender.app_context()``).
A receiver that raises is logged on the ``flask_perfalert`` logger and the
other receivers still run. Hand slow work (network calls) to a queue.
"""
