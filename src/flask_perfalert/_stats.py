"""Counters of one app in this process, and the extension's own cost."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._sampler import SAMPLER

if TYPE_CHECKING:
    from ._counters import CounterFlusher


@dataclass(slots=True)
class Stats:
    requests: int = 0
    functions: int = 0
    slow: int = 0
    alerted: int = 0
    suppressed: int = 0
    #: File reports written, and not written (the disk said no).
    reports_written: int = 0
    report_failures: int = 0
    #: Mattermost posts made.
    delivered: int = 0
    delivery_failures: int = 0
    spooled: int = 0
    dropped: int = 0
    #: Seconds the monitored requests and functions took, in total.
    monitored_seconds: float = 0.0
    #: Seconds the sampler spent on this app's requests and calls (measured).
    sampler_seconds: float = 0.0
    #: Seconds spent handling slow requests after their response was sent (measured).
    after_response_seconds: float = 0.0
    #: perf_counter() time after which the request timer calls :meth:`flush` once
    #: the response is sent (infinite: no shared store keeps counters).
    flush_due: float = math.inf
    #: Sends the counts to a store shared by every worker (see ``_counters``), or None.
    flusher: CounterFlusher | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def flush(self) -> None:
        """Hand the counters since the last flush to the shared store; never raises."""
        flusher = self.flusher
        if flusher is None:
            self.flush_due = math.inf
            return
        flusher.flush()

    def add(self, name: str, amount: int = 1) -> None:
        """Thread-safe increment, for counters touched off the request path."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)
        if time.perf_counter() >= self.flush_due:
            self.flush()

    def own_seconds(self) -> float:
        """Seconds the extension added on the request path: the timer's measured
        per-request cost times the requests and watched calls."""
        from ._middleware import request_path_cost

        return request_path_cost() * (self.requests + self.functions)

    def snapshot(self) -> dict[str, Any]:
        from ._middleware import request_path_cost

        sampler = self.sampler_seconds
        busy = self.monitored_seconds
        per_request = request_path_cost()
        own = self.own_seconds()
        overhead = (own + sampler) / busy if busy > 0 else 0.0
        return {
            "scope": "this process",
            "requests": self.requests,
            "functions": self.functions,
            "slow": self.slow,
            "alerted": self.alerted,
            "suppressed": self.suppressed,
            "reports_written": self.reports_written,
            "report_failures": self.report_failures,
            "delivered": self.delivered,
            "delivery_failures": self.delivery_failures,
            "spooled": self.spooled,
            "dropped": self.dropped,
            "own_seconds": own,
            "own_seconds_per_request": per_request,
            "after_response_seconds": self.after_response_seconds,
            "sampler_seconds": sampler,
            "samples": SAMPLER.samples_taken,
            "sampler_interval": SAMPLER.interval,
            "sampler_backed_off": SAMPLER.backed_off,
            "monitored_seconds": busy,
            "estimated_overhead": overhead,
        }
