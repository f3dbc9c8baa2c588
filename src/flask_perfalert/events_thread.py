"""The events thread: where slow work becomes events, once its response has been sent.

One thread per process, shared by every app, started with the first job and
again in a forked child. The request thread only hands work over (a queue
put); building the event, the store's claim, the signal and the subscribers'
disk work all run here, and the counts a store did not take are sent again
from here when they are due, whether or not a request comes. At exit, queued
jobs get a bounded time.
"""

from __future__ import annotations

import atexit
import time
from collections.abc import Callable
from typing import Any, Protocol

from ._logging import logger
from .alerts.delivery import EXIT_FLUSH_SECONDS, DeliveryWorker


class Job:
    """Work for the events thread: what it is (for logs), and what to run."""

    __slots__ = ("description", "run", "_report_loss")

    def __init__(self, description: str, run: Callable[[], Any], report_loss: bool = True) -> None:
        self.description = description
        self.run = run
        self._report_loss = report_loss

    def abandon(self, reason: str) -> None:
        """The job will not run (the queue is full, the process exits)."""
        if self._report_loss:
            logger.warning("The event of %s was not sent: %s.", self.description, reason)


class Once:
    """Calls ``work`` the first time it is called, from whichever thread comes first."""

    __slots__ = ("work", "_once")

    def __init__(self, work: Callable[[], Any]) -> None:
        self.work = work
        self._once = [True]

    def __call__(self) -> None:
        try:
            self._once.pop()  # atomic: the first caller takes it
        except IndexError:
            return
        self.work()


#: Slow work waiting to become events at most. Every request of a busy worker can be
#: slow at once (eight threads, a few hundred a second, a subscriber that takes
#: milliseconds): the thread then runs behind, and a thousand was reached in a
#: minute. A waiting job holds only its samples and request object.
EVENTS_QUEUE_SIZE = 20_000


class Flushing(Protocol):
    """What the events thread sends counts for (an app's monitor)."""

    def flush_now(self) -> None: ...


class EventsWorker(DeliveryWorker):
    thread_name = "flask-perfalert-events"

    def __init__(self) -> None:
        self._before_shutdown: list[Callable[[], None]] = []
        super().__init__(EVENTS_QUEUE_SIZE)

    def schedule(self, key: Flushing, delay: float) -> None:
        """Send ``key``'s counts in ``delay`` seconds (0: a flush is due; more: a retry)."""
        super().schedule(key, delay)

    def _due_job(self, key: Flushing) -> Job:
        return Job("the counters and latencies", key.flush_now, False)

    def before_shutdown(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at exit before the last jobs are waited for: work it queues
        (alerts a store held while it was away) still runs."""
        if hook not in self._before_shutdown:
            self._before_shutdown.append(hook)

    def shutdown(self, timeout: float = EXIT_FLUSH_SECONDS) -> None:
        # The events queued at exit first (they may hold alerts in a store that is
        # away), then the hooks (which decide those), then what the hooks queued.
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self.wait_idle(timeout)
        for hook in list(self._before_shutdown):
            try:
                hook()
            except Exception:
                logger.exception("Flask-PerfAlert failed at exit")
        super().shutdown(max(deadline - time.monotonic(), 1.0))

    def start(self) -> None:
        starting = self._thread is None
        super().start()
        if starting:
            # At exit, atexit runs the last registered first: registered now, after
            # the subscribers' workers were made (at init_app), the events still
            # queued are handled before those workers stop taking jobs.
            atexit.register(self.shutdown)


#: The events thread of this process.
EVENTS = EventsWorker()
