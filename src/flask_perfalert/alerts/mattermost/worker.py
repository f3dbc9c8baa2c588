"""Mattermost's own delivery thread: a bounded queue, and the spool replay timer.

A :class:`~flask_perfalert.alerts.delivery.DeliveryWorker` (jobs never block
the caller; a full queue abandons the job, which stays in the spool; the
thread starts with the first job or the first scheduled replay, and again in a
forked child; queued jobs get a bounded time at interpreter exit) whose thread
also wakes up when a spool replay is due, so a replay timer costs no thread of
its own. File reports never wait for it: they are written by the thread that
sends the signal, so a Mattermost that hangs never holds one up.

The thread cannot die: an error while waiting is logged and the loop goes on,
and no wait is longer than ``MAX_WAIT`` (a longer timeout would make
``queue.get`` raise).
"""

from __future__ import annotations

import queue
import threading
import time
import weakref
from typing import Protocol

from ..._logging import logger
from .. import delivery
from ..delivery import DeliveryWorker, Job
from .spool import SpoolEntry

#: Seconds queued alerts get at interpreter exit before the rest is left in the spool.
EXIT_FLUSH_SECONDS = delivery.EXIT_FLUSH_SECONDS
#: The longest the thread sleeps in one go (a later replay is waited for in steps).
MAX_WAIT = 3600.0


class Replayable(Protocol):
    def replay(self) -> tuple[int, int]:
        """Send what waits in the spool."""


class Sender(Protocol):
    """What sends one alert (``MattermostAlerts``)."""

    def deliver(self, entry: SpoolEntry) -> None: ...

    def crashed(self, entry: SpoolEntry) -> None:
        """An unexpected error: log it, keep the alert for later."""

    def keep(self, entry: SpoolEntry, reason: str) -> None:
        """The alert stays in the spool (or is dropped with ``reason`` if not on disk)."""


class MattermostWorker(DeliveryWorker):
    """A delivery worker whose thread also wakes up for scheduled spool replays."""

    thread_name = "flask-perfalert-mattermost"

    def _reset(self) -> None:
        super()._reset()
        self._wakeups: weakref.WeakKeyDictionary[Replayable, float] = weakref.WeakKeyDictionary()
        self._wakeups_lock = threading.Lock()
        self._interrupt = threading.Event()

    @property
    def closing(self) -> bool:
        return self._closing

    def schedule(self, alerts: Replayable, delay: float) -> None:
        """Replay ``alerts``' spool in ``delay`` seconds (on this worker's thread)."""
        if self._closing:
            return  # the spool is read again by the next process
        due = time.monotonic() + min(max(delay, 0.0), MAX_WAIT)
        with self._wakeups_lock:
            current = self._wakeups.get(alerts)
            if current is None or due < current:
                self._wakeups[alerts] = due
        if self._thread is None:
            self.start()
        elif threading.current_thread() is not self._thread:
            try:  # wake the thread up to see the new time
                self._queue.put_nowait(_Nudge())
            except queue.Full:
                pass  # it has jobs to do, and looks at the time after each

    def forget(self, alerts: Replayable) -> None:
        """No more replays for ``alerts`` (its app's monitoring was closed or replaced)."""
        with self._wakeups_lock:
            self._wakeups.pop(alerts, None)

    def sleep(self, seconds: float) -> bool:
        """Wait on the worker thread; False if the process started exiting meanwhile."""
        return not self._interrupt.wait(min(seconds, MAX_WAIT)) and not self._closing

    def shutdown(self, timeout: float | None = None) -> None:
        """At exit: stop retrying, give queued alerts a bounded time; the rest stays spooled."""
        self._interrupt.set()
        try:
            super().shutdown(EXIT_FLUSH_SECONDS if timeout is None else timeout)
            if self.busy:
                logger.warning(
                    "A Mattermost alert was still being sent when the process exited; it "
                    "is kept in the spool and sent again by the next process."
                )
        finally:
            self._interrupt.clear()

    def _next_job(self) -> Job | None:
        while True:
            try:
                return self._queue.get(timeout=self._next_wakeup())
            except queue.Empty:  # a replay is due: queue it like any job
                self._queue_due_replays()

    def _next_wakeup(self) -> float | None:
        with self._wakeups_lock:
            if not self._wakeups:
                return None
            return min(MAX_WAIT, max(0.0, min(self._wakeups.values()) - time.monotonic()))

    def _queue_due_replays(self) -> None:
        now = time.monotonic()
        with self._wakeups_lock:
            due = [alerts for alerts, at in self._wakeups.items() if at <= now]
            for alerts in due:
                del self._wakeups[alerts]
        for alerts in due:
            try:
                self._queue.put_nowait(_ReplayJob(alerts, self))
            except queue.Full:
                # Jobs are waiting: each one that delivers replays the spool anyway.
                self.schedule(alerts, 1.0)


class SendJob:
    """One new alert, already in the spool: its first tries."""

    def __init__(self, sender: Sender, entry: SpoolEntry) -> None:
        self.sender = sender
        self.entry = entry
        self.description = f"Mattermost alert for {entry.data['summary']}"

    def run(self) -> None:
        try:
            self.sender.deliver(self.entry)
        except Exception:
            self.sender.crashed(self.entry)

    def abandon(self, reason: str) -> None:
        self.sender.keep(self.entry, reason)


class _ReplayJob:
    def __init__(self, alerts: Replayable, worker: MattermostWorker) -> None:
        self.alerts = alerts
        self.worker = worker
        self.description = "Mattermost spool replay"

    def run(self) -> None:
        if not self.worker.closing:
            self.alerts.replay()

    def abandon(self, reason: str) -> None:
        pass  # the spool stays on disk


class _Nudge:
    description = "wake-up"

    def run(self) -> None:
        pass

    def abandon(self, reason: str) -> None:
        pass


#: The one Mattermost delivery thread of this process (shared by every app).
WORKER = MattermostWorker()
