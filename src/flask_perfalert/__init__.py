"""Flask-PerfAlert: alerts with a call-tree profile when a request or a function is slow."""

from __future__ import annotations

from ._options import PerfAlertOptions
from .events import Escalation, HotFrame, SlowRequestEvent
from .extension import PerfAlert
from .latency import UsualLatency
from .settings import PerfAlertSettings
from .signals import perf_slow_request

__all__ = [
    "Escalation",
    "HotFrame",
    "PerfAlert",
    "PerfAlertOptions",
    "PerfAlertSettings",
    "SlowRequestEvent",
    "UsualLatency",
    "perf_slow_request",
]
