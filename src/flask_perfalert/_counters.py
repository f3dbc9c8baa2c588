"""Every worker's counters, summed in the shared store.

Each process counts in its own :class:`~._stats.Stats`. With a store that
keeps counters (``sqlite://``, ``redis://``), a :class:`CounterFlusher` hands
the counts since its last batch to the store, at most every ``FLUSH_INTERVAL``
seconds: from the request timer's close call-back once the response is sent
(the timer compares one float per request, ``Stats.flush_due``), from
``Stats.add`` (alerts, deliveries), and once more at interpreter exit. A worker
that serves no request sends nothing until its next request, or its exit.

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
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._stats import Stats
    from .storage import Store

logger = logging.getLogger("flask_perfalert")

#: Seconds between two batches of one process (read at each flush: patchable).
FLUSH_INTERVAL = 5.0
#: Seconds after start-up before the first batch may be sent.
FIRST_FLUSH_DELAY = 1.0
#: At most one warning about failed batches per this many seconds (per process and app).
WARN_INTERVAL = 300.0
#: Seconds the exit flush waits for a flush that another thread is running.
EXIT_LOCK_TIMEOUT = 2.0

#: Counts summed across workers: ``Stats`` fields, then the sampler's.
COUNTS = (
    "requests",
    "functions",
    "slow",
    "alerted",
    "suppressed",
    "delivered",
    "delivery_failures",
    "spooled",
    "dropped",
)
SECONDS = ("monitored_seconds", "own_seconds", "sampler_seconds")

#: ``sink(deltas, batch, final)``: False when the store did not take the batch.
Sink = Callable[[Mapping[str, float], tuple[str, int], bool], bool]


class CounterFlusher:
    """Sends one app's counts of this process to the shared store, in batches."""

    def __init__(self, stats: Stats, sink: Sink, description: str) -> None:
        self.stats = stats
        self.sink = sink
        self.description = description
        self._lock = threading.Lock()
        self._warned_at: float | None = None
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
    def flush(self, final: bool = False) -> bool:
        """Send what was counted since the last batch; True when the store has it all.

        Never raises. Another thread's flush in progress makes this one return
        at once (the exit flush waits for it, briefly).
        """
        if not self._lock.acquire(timeout=EXIT_LOCK_TIMEOUT if final else 0):
            return False
        try:
            now = time.perf_counter()
            if not final and now < self.stats.flush_due:
                return True  # another thread has just sent a batch
            self.stats.flush_due = now + FLUSH_INTERVAL
            return self._send(final)
        except Exception as exc:
            self._warn(f"{type(exc).__name__}: {exc}")
            return False
        finally:
            self._lock.release()

    def _send(self, final: bool) -> bool:
        # A batch left over from a failed flush goes first, then the new counts.
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
# _monitor) before the alert workers' modules, so this runs after they have
# had their time at exit, and counts what they delivered or spooled then.
atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
