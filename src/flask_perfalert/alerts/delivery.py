"""The base of a delivery thread: a bounded queue of jobs and one worker thread.

Mattermost's worker (:mod:`.mattermost.worker`) is one. The thread is started
only when the first job arrives, so a gunicorn sync worker that never alerts
never gets a thread (a process that has ever started a thread stays slower).
It is started afresh in a forked child. The thread also wakes up for work
scheduled for later (:meth:`DeliveryWorker.schedule`): a timer costs no thread
of its own. No wait is longer than ``MAX_WAIT`` (a longer timeout would make
``queue.get`` raise). At interpreter exit, jobs still queued
get a bounded time to finish; what is left is handed back to each job's
``abandon``, which keeps or logs it, so no alert vanishes.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import weakref
from typing import Any, Protocol

logger = logging.getLogger("flask_perfalert")

#: Jobs waiting at most; more are refused (and abandoned, so spooled or logged).
QUEUE_SIZE = 1000
#: Seconds the worker may keep the interpreter alive at exit.
EXIT_FLUSH_SECONDS = 5.0
#: Seconds the thread pauses after an unexpected error of its own, before going on.
ERROR_PAUSE = 1.0
#: The longest the thread sleeps in one go (a later wake-up is waited for in steps).
MAX_WAIT = 3600.0


class Job(Protocol):
    #: Short description for logs ("file report for GET index").
    description: str

    def run(self) -> None:
        """Do the work. Exceptions are logged by the worker, which goes on."""

    def abandon(self, reason: str) -> None:
        """The job will not run (queue full, shutting down): keep or log it."""


class DeliveryWorker:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)
        atexit.register(self.shutdown)

    def _reset(self) -> None:
        self._queue: queue.Queue[Job | None] = queue.Queue(self.queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closing = False
        self.overflow = 0
        self.busy = False
        #: What is scheduled for later, and when (``time.monotonic()``).
        self._wakeups: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._wakeups_lock = threading.Lock()

    def submit(self, job: Job) -> bool:
        """Queue ``job`` without ever blocking; False (and the job abandoned) if full."""
        if self._closing:
            job.abandon("the process is exiting")
            return False
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.overflow += 1
            logger.warning(
                "Alert queue full (%d jobs); %d refused so far: %s",
                self.queue_size,
                self.overflow,
                job.description,
            )
            job.abandon("the alert queue is full")
            return False
        if self._thread is None:
            self.start()
        return True

    #: Name of the worker thread (subclasses run threads of their own).
    thread_name = "flask-perfalert-delivery"

    def start(self) -> None:
        """Start the thread now, if it does not run.

        Called when the first slow request is handed on, so the thread exists
        before the process exits: an event made at exit (a short script, the
        last requests of a worker) would find that Python 3.12 and later start
        no thread during shutdown, and its alert could only be spooled.
        """
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                thread.start()
                self._thread = thread

    # -- work for later ----------------------------------------------------------------
    def schedule(self, key: Any, delay: float) -> None:
        """Queue ``self._due_job(key)`` in ``delay`` seconds (or sooner, if already due).

        ``key`` is held weakly: a key that is gone is not run.
        """
        if self._closing:
            return  # at exit: what is scheduled is the next process's
        due = time.monotonic() + min(max(delay, 0.0), MAX_WAIT)
        with self._wakeups_lock:
            current = self._wakeups.get(key)
            if current is None or due < current:
                self._wakeups[key] = due
        if self._thread is None:
            self.start()
        elif threading.current_thread() is not self._thread:
            try:  # wake the thread up to see the new time
                self._queue.put_nowait(_Nudge())
            except queue.Full:
                pass  # it has jobs to do, and looks at the time after each

    def forget(self, key: Any) -> None:
        """Nothing more is scheduled for ``key``."""
        with self._wakeups_lock:
            self._wakeups.pop(key, None)

    def _due_job(self, key: Any) -> Job:
        """The job for ``key``, whose scheduled time has come.

        Only a subclass knows what its keys are; one that calls :meth:`schedule`
        says here what runs (the events thread: a flush; Mattermost's: a replay).
        """
        raise NotImplementedError(f"{type(self).__name__} does not run scheduled work")

    def _next_job(self) -> Job | None:
        """Wait for the next job, or queue what is due meanwhile; None stops the thread."""
        while True:
            if self._wakeups:  # looked at before each job: a busy queue does not starve them
                self._queue_due()
            try:
                return self._queue.get(timeout=self._next_wakeup())
            except queue.Empty:
                pass

    def _next_wakeup(self) -> float | None:
        with self._wakeups_lock:
            if not self._wakeups:
                return None
            return min(MAX_WAIT, max(0.0, min(self._wakeups.values()) - time.monotonic()))

    def _queue_due(self) -> None:
        now = time.monotonic()
        with self._wakeups_lock:
            due = [key for key, at in self._wakeups.items() if at <= now]
            for key in due:
                del self._wakeups[key]
        for key in due:
            try:
                self._queue.put_nowait(self._due_job(key))
            except queue.Full:
                self.schedule(key, 1.0)  # jobs are waiting: after them

    def _run(self) -> None:
        while True:
            try:
                job = self._next_job()
            except Exception:
                # Never let the thread die: every later alert would wait for it in vain.
                logger.exception("Flask-PerfAlert's %s thread could not wait", self.thread_name)
                time.sleep(ERROR_PAUSE)
                continue
            if job is None:
                return
            self.busy = True
            try:
                job.run()
            except Exception:
                logger.exception("Flask-PerfAlert job failed: %s", job.description)
            finally:
                self.busy = False
                self._queue.task_done()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued job has run (for tests and the CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.005)
        return False

    def shutdown(self, timeout: float = EXIT_FLUSH_SECONDS) -> None:
        """Give queued jobs ``timeout`` seconds, then abandon what is left."""
        self._closing = True
        if self._thread is not None:
            self.wait_idle(timeout)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.abandon("the process exited before it could run")
            self._queue.task_done()
        self._closing = False


class _Nudge:
    """Wakes the thread up to look at the scheduled times again."""

    description = "wake-up"

    def run(self) -> None:
        pass

    def abandon(self, reason: str) -> None:
        pass
