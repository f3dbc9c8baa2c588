"""Mattermost's own delivery thread: a bounded queue, and the spool replay timer.

A :class:`~flask_perfalert.alerts.delivery.DeliveryWorker` (jobs never block
the caller; a full queue abandons the job, which stays in the spool; the
thread starts with the first job or the first scheduled replay, and again in a
forked child; queued jobs get a bounded time at interpreter exit) whose thread
also wakes up when a spool replay is due, so a replay timer costs no thread of
its own. File reports never wait for it: they are written by the thread that
sends the signal, so a Mattermost that hangs never holds one up.

The thread cannot die: an error while waiting is logged and the loop goes on.
"""

from __future__ import annotations

import threading
from typing import Protocol

from ..._logging import logger
from .. import delivery
from ..delivery import MAX_WAIT, DeliveryWorker, Job
from .spool import SpoolEntry

#: Seconds queued alerts get at interpreter exit before the rest is left in the spool.
EXIT_FLUSH_SECONDS = delivery.EXIT_FLUSH_SECONDS


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
        self._interrupt = threading.Event()

    @property
    def closing(self) -> bool:
        return self._closing

    def schedule(self, key: Replayable, delay: float) -> None:
        """Replay ``key``'s spool in ``delay`` seconds (on this worker's thread)."""
        super().schedule(key, delay)

    def _due_job(self, key: Replayable) -> Job:
        return _ReplayJob(key, self)

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


#: The one Mattermost delivery thread of this process (shared by every app).
WORKER = MattermostWorker()
