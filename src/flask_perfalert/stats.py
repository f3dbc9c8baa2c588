"""Counting: one app's counters in this process, and every worker's, summed in a shared store.

Each process counts in its own :class:`Stats`. With a store that
keeps counters (``sqlite://``, ``redis://``), a :class:`CounterFlusher` hands
the counts since its last batch to the store, at most every ``FLUSH_INTERVAL``
seconds: from the request timer's close call-back once the response is sent
(the timer compares one float per request, ``Stats.flush_due``), from
``Stats.add`` (alerts, deliveries), and once more at interpreter exit. The
counts of a worker's last requests do not wait for its next one: a batch that
sent something is followed by one more ``FLUSH_INTERVAL`` later (a worker gone
idle wakes once more, then not again), and a batch the store did not take is
sent again ``RETRY_MIN`` seconds later (then after twice as long each time, up
to ``RETRY_MAX``), request or not.

No count is lost or counted twice: a batch the store did not take (the store
is away) is kept and sent again, unchanged, until it is taken, and the store
applies each sender's batch at most once (a reply lost in a timeout). A
forked child (gunicorn ``--preload``) starts with a new sender id and sends
only what it counts itself; the parent sends what it counted before the fork.

``sampler_seconds`` (the sampling profiler's CPU time) is process-wide: a
process serving several apps adds it to each app's counters.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .storage import Store

logger = logging.getLogger("flask_perfalert")

#: Seconds between two batches of one process (read at each flush: patchable).
FLUSH_INTERVAL = 5.0
#: Seconds after start-up before the first batch may be sent.
FIRST_FLUSH_DELAY = 1.0
#: At most one warning about failed batches per this many seconds (per process and app).
WARN_INTERVAL = 300.0
#: Seconds before a batch the store did not take is sent again; doubled up to RETRY_MAX.
RETRY_MIN = 1.0
RETRY_MAX = 30.0
#: Seconds the exit flush waits for a flush that another thread is running.
EXIT_LOCK_TIMEOUT = 2.0

#: Counts summed across workers: ``Stats`` fields, then the sampler's.
COUNTS = (
    "requests",
    "functions",
    "slow",
    "alerted",
    "suppressed",
    "escalated",
    "reports_written",
    "report_failures",
    "delivered",
    "delivery_failures",
    "spooled",
    "dropped",
)
SECONDS = ("monitored_seconds", "own_seconds", "sampler_seconds")

#: ``sink(deltas, batch, final)``: False when the store did not take the batch.
Sink = Callable[[Mapping[str, float], tuple[str, int], bool], bool]


#: Seconds the request timer adds to one request: the benchmark's figure for the
#: timer around a trivial WSGI app (bench/run.py, "request timer alone"), on the
#: machine of docs/performance.rst. ``perf.stats()`` multiplies it by the requests.
TIMER_SECONDS_PER_REQUEST = 1.2e-6


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
    #: Slow ones that alerted again, markedly slower than the worst before (escalations).
    escalated: int = 0
    #: perf_counter() time after which the request timer calls :meth:`flush` once
    #: the response is sent (infinite: nothing to send).
    flush_due: float = math.inf
    #: Sends the counts to a store shared by every worker (see :class:`CounterFlusher`), or None.
    flusher: CounterFlusher | None = field(default=None, repr=False)
    #: Does the sending off the request path (the app's monitor); else it is done here.
    on_flush: Callable[[], None] | None = field(default=None, repr=False)
    #: Sampled requests, ``(method, path, seconds)``: one in ``latency.SAMPLE_EVERY``.
    latencies: list[tuple[str, str, float]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def flush(self) -> None:
        """Time to send what was counted and sampled; hands it on, never raises."""
        self.flush_due = time.perf_counter() + FLUSH_INTERVAL
        if self.on_flush is not None:
            self.on_flush()
        elif self.flusher is not None:
            self.flusher.flush()
        else:
            self.flush_due = math.inf

    def add(self, name: str, amount: int = 1) -> None:
        """Thread-safe increment, for counters touched off the request path."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)
        if time.perf_counter() >= self.flush_due:
            self.flush()

    def own_seconds(self) -> float:
        """Seconds the extension added on the request path (an estimate, see
        ``TIMER_SECONDS_PER_REQUEST``)."""
        return TIMER_SECONDS_PER_REQUEST * (self.requests + self.functions)

    def snapshot(self, sampler: Any = None) -> dict[str, Any]:
        """Every counter and the estimated overhead; ``sampler``: this process's sampler."""
        sampler_seconds = self.sampler_seconds
        busy = self.monitored_seconds
        per_request = TIMER_SECONDS_PER_REQUEST
        own = self.own_seconds()
        overhead = (own + sampler_seconds) / busy if busy > 0 else 0.0
        return {
            "scope": "this process",
            "requests": self.requests,
            "functions": self.functions,
            "slow": self.slow,
            "alerted": self.alerted,
            "suppressed": self.suppressed,
            "escalated": self.escalated,
            "reports_written": self.reports_written,
            "report_failures": self.report_failures,
            "delivered": self.delivered,
            "delivery_failures": self.delivery_failures,
            "spooled": self.spooled,
            "dropped": self.dropped,
            "own_seconds": own,
            "own_seconds_per_request": per_request,
            "after_response_seconds": self.after_response_seconds,
            "sampler_seconds": sampler_seconds,
            "samples": getattr(sampler, "samples_taken", 0),
            "sampler_interval": getattr(sampler, "interval", None),
            "sampler_backed_off": getattr(sampler, "backed_off", False),
            "monitored_seconds": busy,
            "estimated_overhead": overhead,
        }


class CounterFlusher:
    """Sends one app's counts of this process to the shared store, in batches."""

    def __init__(self, stats: Stats, sink: Sink, description: str) -> None:
        self.stats = stats
        self.sink = sink
        self.description = description
        self._lock = threading.Lock()
        self._warned_at: float | None = None
        #: Whether the last flush handed counts to the store (False: there were none).
        self.sent = False
        self._restart()
        stats.flusher = self
        stats.flush_due = time.perf_counter() + min(FIRST_FLUSH_DELAY, FLUSH_INTERVAL)
        _FLUSHERS.add(self)

    def _restart(self) -> None:
        """A new sender whose counts start now (at start-up and in a forked child)."""
        self._sender = uuid.uuid4().hex
        self._number = 0
        #: The batch the store has not taken yet: (number, deltas).
        self._unsent: tuple[int, dict[str, float]] | None = None
        #: The counts already put into batches.
        self._taken = self._current()

    def _current(self) -> dict[str, float]:
        stats = self.stats
        values: dict[str, float] = {name: getattr(stats, name) for name in COUNTS}
        values["monitored_seconds"] = stats.monitored_seconds
        values["own_seconds"] = stats.own_seconds()
        values["after_response_seconds"] = stats.after_response_seconds
        values["sampler_seconds"] = stats.sampler_seconds
        return values

    def _take(self) -> dict[str, float]:
        """The counts since the last batch (only those that changed)."""
        current = self._current()
        taken = self._taken
        deltas = {}
        for name, value in current.items():
            delta = value - taken[name]
            if delta < 0:  # reset meanwhile (the sampler, in a forked child)
                delta = value
            if delta:
                deltas[name] = delta
        self._taken = current
        return deltas

    # -- flushing ----------------------------------------------------------------------
    def flush(self, final: bool = False, wait: bool = False) -> bool:
        """Send what was counted since the last batch; True when the store has it all.

        Never raises. Another thread's flush in progress makes this one return
        at once (the exit flush, and one asked to ``wait``, wait for it, briefly).
        """
        if not self._lock.acquire(timeout=EXIT_LOCK_TIMEOUT if final or wait else 0):
            return False
        try:
            return self._send(final)
        except Exception as exc:
            self._warn(f"{type(exc).__name__}: {exc}")
            return False
        finally:
            self._lock.release()

    def _send(self, final: bool) -> bool:
        # A batch left over from a failed flush goes first, then the new counts.
        self.sent = False
        for _ in range(2 if self._unsent is not None else 1):
            if self._unsent is None:
                deltas = self._take()
                if not deltas:
                    return True
                self._number += 1
                self._unsent = (self._number, deltas)
            number, deltas = self._unsent
            if self.sink(deltas, (self._sender, number), final) is False:
                return False
            self._unsent = None
            self.sent = True
        return True

    def pending(self) -> dict[str, float]:
        """Counts this process has not handed to the store yet (the unsent batch included).

        Read without the lock (a flush stuck in another thread must not block the exit).
        """
        current = self._current()
        taken, unsent = self._taken, self._unsent
        left = {n: max(0.0, v - taken[n]) for n, v in current.items()}
        if unsent is not None:
            for name, value in unsent[1].items():
                left[name] += value
        return {name: value for name, value in left.items() if value}

    def _warn(self, reason: str) -> None:
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_INTERVAL:
            self._warned_at = now
            logger.warning(
                "Could not send this process's counters to %s (%s); they are kept and "
                "sent again later (further such warnings muted for %.0fs).",
                self.description,
                reason,
                WARN_INTERVAL,
            )

    def flush_at_exit(self) -> None:
        if self.flush(final=True):
            return
        left = self.pending()
        if left:
            shown = ", ".join(f"{name} {value:g}" for name, value in left.items() if name in COUNTS)
            logger.warning(
                "This process's last counts could not be sent to %s at exit and are "
                "not in `flask perfalert stats`: %s.",
                self.description,
                shown or "only timings",
            )


def share_counters(stats: Stats, store: Store, app_key: str) -> CounterFlusher | None:
    """Send ``stats`` to ``store`` if it sums counters of every worker, else None."""
    if not store.shared:
        return None  # memory://: each process's own counters only

    def sink(deltas: Mapping[str, float], batch: tuple[str, int], final: bool) -> bool:
        return store.add_counters(app_key, deltas, batch, retry_now=final)

    return CounterFlusher(stats, sink, store.description)


def summed_snapshot(values: Mapping[str, float]) -> dict[str, Any]:
    """The figures of ``Stats.snapshot()`` from counters summed by a store."""
    data: dict[str, Any] = {name: int(values.get(name, 0)) for name in COUNTS}
    for name in SECONDS:
        data[name] = float(values.get(name, 0.0))
    busy = data["monitored_seconds"]
    own = data["own_seconds"] + data["sampler_seconds"]
    data["estimated_overhead"] = own / busy if busy > 0 else 0.0
    workers = values.get("workers_seen")
    data["workers_seen"] = None if workers is None else int(workers)
    since = values.get("since")
    data["since"] = None if since is None else float(since)
    return data


# -- every flusher of this process: at exit, and after fork -------------------------------
_FLUSHERS: weakref.WeakSet[CounterFlusher] = weakref.WeakSet()


def _flush_all_at_exit() -> None:
    for flusher in list(_FLUSHERS):
        try:
            flusher.flush_at_exit()
        except Exception:  # pragma: no cover - flush never raises; belt and braces
            logger.debug("Flushing the counters at exit failed", exc_info=True)


def _after_fork_in_child() -> None:
    # Registered after the sampler's own reset (this module imports it first),
    # so the child's sampler figures are already zero here.
    for flusher in list(_FLUSHERS):
        flusher._lock = threading.Lock()
        flusher._restart()


# atexit runs handlers last registered first: this module is imported (by
# the monitor) before the alert workers' modules, so this runs after they have
# had their time at exit, and counts what they delivered or spooled then.
atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
