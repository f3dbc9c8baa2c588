"""Flask-PerfAlert: alerts with a call-tree profile when a request or a function is slow."""

from __future__ import annotations

from ._options import PerfAlertOptions
from .events import HotFrame, SlowRequestEvent
from .extension import PerfAlert
from .settings import PerfAlertSettings
from .signals import perf_slow_request

__all__ = [
    "HotFrame",
    "PerfAlert",
    "PerfAlertOptions",
    "PerfAlertSettings",
    "SlowRequestEvent",
    "perf_slow_request",
]
