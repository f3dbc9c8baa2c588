"""The late-start sampling profiler: one per process.

Fast requests pay only for being put in (and taken out of) a dict. Once a
request has run past its arm point (``SAMPLE_AFTER`` of its threshold), its
thread's stack is read every ``SAMPLE_INTERVAL`` seconds, keeping strings only.

How the ticks are made, chosen so that a process without threads never gets
one (a process that has ever started a thread stays measurably slower):

* work on the **main thread** (gunicorn's sync workers, CLI jobs) is sampled
  from a ``SIGALRM`` interval timer. The handler runs on the main thread and
  is given the interrupted frame, so no other thread and no
  ``sys._current_frames()`` are needed. The timer runs only while something is
  being measured and stops itself when idle;
* work on **other threads** (gthread workers, threaded servers, async views)
  is sampled by a daemon thread started the first time it is needed; such a
  process already has threads.

If ``SIGALRM`` is taken by someone else, or the handler could not be installed
(not the main thread at set-up), the main thread is sampled by the thread.
Under gevent or eventlet, stacks of one OS thread belong to many greenlets, so
sampling is turned off and events say so.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from ._measurement import Measurement
from ._pyinstrument_compat import stack_of

logger = logging.getLogger("flask_perfalert")

# CPython gh-106883: sys._current_frames() can deadlock with the garbage
# collector on 3.11.0..3.11.8 and 3.12.0..3.12.2. Collections are held off
# around the call on those versions.
_CURRENT_FRAMES_NEEDS_GC_GUARD = (3, 11, 0) <= sys.version_info[:3] <= (3, 11, 8) or (
    3,
    12,
    0,
) <= sys.version_info[:3] <= (3, 12, 2)

_MAX_INTERVAL = 0.1

#: Threads remembered in ``Sampler.ready_threads`` before the set starts over.
_MAX_READY_THREADS = 1024

#: Seconds between two looks of the sampler thread for new work when it knows of none.
IDLE_POLL = 0.05

#: The environ key under which a request lists the threads working for it
#: (see ``PerfAlert._install_async_link``).
LINKED_THREADS = "perfalert.threads"


def _current_frames() -> dict[int, FrameType]:
    if not _CURRENT_FRAMES_NEEDS_GC_GUARD:
        return sys._current_frames()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        if was_enabled:
            gc.enable()


def keep_sampling_signal_off_this_thread() -> None:
    """Block ``SIGALRM`` in the calling (non-main) thread.

    The kernel hands a process's timer signal to any thread that does not block
    it. Python runs the handler on the main thread only when that thread next
    checks for signals, so a signal that lands on another thread while the main
    thread waits (on asgiref's loop, on a lock) is only seen when the wait ends.
    Every thread this extension starts calls this first.
    """
    if threading.current_thread() is threading.main_thread():
        return
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    except (AttributeError, OSError, ValueError):  # pragma: no cover - platform
        pass


def green_threads_in_use() -> str | None:
    """The name of the green-thread library that patched ``threading``, if any."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        return "eventlet"
    return None


class Sampler:
    """Samples the stacks of registered measurements that have passed their arm point."""

    __slots__ = (
        "interval",
        "base_interval",
        "max_overhead",
        "active",
        "armed",
        "timer_running",
        "ready_threads",
        "ticking",
        "handler_installed",
        "signal_refused",
        "thread",
        "wake",
        "thread_waiting",
        "main_thread_id",
        "cpu_seconds",
        "since",
        "_window_start",
        "_window_cost",
        "backed_off",
        "samples_taken",
    )

    def __init__(self) -> None:
        self._reset()
        # Nothing of a parent's sampler is valid in a forked child (gunicorn --preload):
        # its timer and thread do not exist there.
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)
        # Interpreter shutdown puts SIGALRM back to its default action (terminate):
        # a timer still running then would kill the process.
        atexit.register(self.stop_timer)

    def stop_timer(self) -> None:
        self.active.clear()
        if self.timer_running:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.timer_running = False
            self.ready_threads.discard(self.main_thread_id)

    timer_running: bool

    def _reset(self) -> None:
        self.interval = 0.005
        self.base_interval = 0.005
        self.max_overhead = 0.05
        #: Measurements running now, by id; GIL-atomic dict operations only, since
        #: the signal handler may interrupt the main thread anywhere.
        # Cleared in place, never replaced: the request timer binds these dicts.
        if not hasattr(self, "active"):
            self.active: dict[int, tuple[Any, ...]] = {}
            #: Measurements of active entries that passed their arm point, by entry id.
            self.armed: dict[int, Measurement] = {}
            #: Threads whose new work something already samples (the running timer,
            #: the sampler thread): a request on one of them needs no ``kick``.
            self.ready_threads: set[int] = set()
        self.active.clear()
        self.armed.clear()
        self.ready_threads.clear()
        self.timer_running = False
        self.ticking = False
        self.handler_installed = False
        self.signal_refused = False
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        #: True until the sampler thread is started (by the first work it samples).
        self.thread_waiting = True
        self.main_thread_id = threading.main_thread().ident
        #: Seconds spent sampling, and since when, for overhead control and stats.
        self.cpu_seconds = 0.0
        self.since = time.perf_counter()
        self._window_start = self.since
        self._window_cost = 0.0
        self.backed_off = False
        self.samples_taken = 0

    def configure(self, interval: float, max_overhead: float) -> None:
        self.base_interval = self.interval = interval
        self.max_overhead = max_overhead
        self._retime()
        self.wake.set()  # the thread re-reads the interval now, not after its current wait

    # -- set-up ---------------------------------------------------------------
    def install_signal_handler(self) -> None:
        """Take ``SIGALRM`` if it is free; call from the main thread (at ``init_app``)."""
        if self.handler_installed or self.signal_refused:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        if green_threads_in_use():
            return
        try:
            current = signal.getsignal(signal.SIGALRM)
            if current not in (signal.SIG_DFL, None):
                self.signal_refused = True
                logger.info("SIGALRM is in use by the app; sampling with a thread instead.")
                return
            signal.signal(signal.SIGALRM, self._on_signal)
            # Restart interrupted system calls, so that C code in the app never sees
            # EINTR because of us; the handler runs when the call returns.
            signal.siginterrupt(signal.SIGALRM, False)
        except (ValueError, OSError, AttributeError):  # pragma: no cover - platform
            self.signal_refused = True
            return
        self.handler_installed = True

    def _signal_usable(self) -> bool:
        if not self.handler_installed:
            return False
        if signal.getsignal(signal.SIGALRM) != self._on_signal:
            # The app took SIGALRM after us: leave it alone from now on.
            self.handler_installed = False
            self.signal_refused = True
            logger.warning("SIGALRM was taken over by the app; sampling with a thread instead.")
            return False
        return True

    # -- the request path -------------------------------------------------------
    # An entry is a tuple (start, thread id, owner, payload): creating a tuple is
    # the cheapest thing a request can pay. A Measurement object is only made once
    # the entry passes its arm point, by the owner's ``arm(entry, now)``.
    def register(self, entry: tuple[Any, ...]) -> None:
        """Start watching ``entry``; the request timer inlines this."""
        self.active[id(entry)] = entry
        if entry[1] not in self.ready_threads:
            self.kick(entry)

    def unregister(self, entry: tuple[Any, ...]) -> Measurement | None:
        """Stop sampling ``entry``; returns its measurement if it was armed."""
        key = id(entry)
        self.active.pop(key, None)
        return self.armed.pop(key, None)

    def kick(self, entry: tuple[Any, ...]) -> None:
        """Make sure ``entry``, new work on a thread not in ``ready_threads``, is sampled.

        On the main thread: start the timer (it ticks first at the entry's arm
        point). Elsewhere: start the sampler thread, once; it finds new work by itself.
        """
        thread_id = entry[1]
        ready = self.ready_threads
        if len(ready) >= _MAX_READY_THREADS:  # threads come and go: never grow for ever
            ready.clear()
        if thread_id == self.main_thread_id and self.handler_installed:
            if not self.timer_running:
                self._start_timer(entry[0] + entry[2].min_arm_delay - time.perf_counter())
        elif self.thread_waiting:
            self.wake_thread()
        # The timer runs, or (signal refused, other threads) the thread samples it.
        ready.add(thread_id)

    # -- ticks ---------------------------------------------------------------------
    def _start_timer(self, delay: float) -> None:
        if not self._signal_usable():
            self.wake_thread()
            return
        self.timer_running = True
        signal.setitimer(signal.ITIMER_REAL, max(delay, 1e-4), self.interval)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Python runs a handler between any two bytecodes, even inside itself: a
        # tick slower than the interval (a loaded machine) would sample its own frames.
        if self.ticking:
            return
        self.ticking = True
        try:
            if not self.active:
                # Disarm first, then look again: a measurement registered meanwhile
                # either saw timer_running True (and is seen here) or starts a timer.
                signal.setitimer(signal.ITIMER_REAL, 0)
                self.timer_running = False
                self.ready_threads.discard(self.main_thread_id)
                if self.active:
                    self._start_timer(self.interval)
                return
            self.tick(main_frame=frame)
        except Exception:  # pragma: no cover - never let the handler hurt the app
            logger.exception("Flask-PerfAlert sampler failed")
        finally:
            self.ticking = False

    def wake_thread(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(
                target=self._run_thread, name="flask-perfalert-sampler", daemon=True
            )
            self.thread_waiting = False
            self.thread.start()
        else:
            self.wake.set()

    def _by_signal(self, entry: tuple[Any, ...]) -> bool:
        """Whether the timer signal (not the thread) samples ``entry``.

        Only work on the main thread alone: an async view's work runs on
        asgiref's thread while the main thread waits on a lock, and the handler
        (installed with SA_RESTART, so C code never sees EINTR) runs only once
        that wait ends. Such a process has threads already; the thread samples it.
        """
        if entry[1] != self.main_thread_id or not self.handler_installed:
            return False
        payload = entry[3]
        return not (isinstance(payload, dict) and payload.get(LINKED_THREADS))

    def _run_thread(self) -> None:
        # Requests never wake this thread (that cost every request of a gthread
        # worker a context switch): it sleeps until the earliest arm point of the
        # work it samples, or IDLE_POLL when it knows of none.
        keep_sampling_signal_off_this_thread()
        while True:
            try:
                sampling = self.tick(main_frame=None, thread_only=True)
            except Exception:  # pragma: no cover
                logger.exception("Flask-PerfAlert sampler failed")
                sampling = False
            self.wake.wait(self.interval if sampling else self._until_next_arm())
            self.wake.clear()

    def _until_next_arm(self) -> float:
        now = time.perf_counter()
        delay = IDLE_POLL
        for key, entry in list(self.active.items()):
            if key not in self.armed and not self._by_signal(entry):
                delay = min(delay, entry[0] + entry[2].min_arm_delay - now)
        # Never longer than IDLE_POLL, whatever the sampling interval: a request
        # that starts meanwhile must be seen by its arm point.
        return max(delay, 0.001)

    def tick(self, main_frame: FrameType | None, thread_only: bool = False) -> bool:
        """Take one sample of every armed entry this caller is responsible for.

        True when something was sampled (and so will want sampling again soon).
        """
        now = time.perf_counter()
        frames: dict[int, FrameType] | None = None
        stacks: dict[int, tuple[str, ...]] = {}
        armed = self.armed
        sampled: list[Any] = []
        for key, entry in list(self.active.items()):
            on_main = entry[1] == self.main_thread_id
            if self._by_signal(entry) == thread_only:
                continue
            m = armed.get(key)
            if m is None:
                if now < entry[0] + entry[2].min_arm_delay:
                    continue
                m = entry[2].arm(entry)
                if key not in self.active:  # finished meanwhile
                    continue
                armed[key] = m
            if m.environ is not None:
                entry[2].capture(m)
            if m.skip or now < m.arm_at:
                continue
            stack = stacks.get(m.thread_id)
            if stack is None or m.stop_code is not None:
                if on_main and main_frame is not None and not m.linked_threads:
                    frame: FrameType | None = main_frame
                else:
                    if frames is None:
                        frames = _current_frames()
                    frame = frames.get(m.thread_id)
                stack = stack_of(frame, m.stop_code)
                if m.linked_threads:
                    if frames is None:
                        frames = _current_frames()
                    for tid in m.linked_threads:
                        stack += stack_of(frames.get(tid))

                if m.stop_code is None and not m.linked_threads:
                    stacks[m.thread_id] = stack
            m.interval = self.interval
            m.add_sample(stack, now)
            self.samples_taken += 1
            sampled.append(entry[2].stats)
        cost = time.perf_counter() - now
        self.cpu_seconds += cost
        # Each app's stats carry the share of the sampler's time spent on its work.
        for stats in sampled:
            stats.sampler_seconds += cost / len(sampled)
        self._control_overhead(now, cost)
        return bool(sampled)

    def _control_overhead(self, now: float, cost: float) -> None:
        self._window_cost += cost
        elapsed = now - self._window_start
        if elapsed < 1.0:
            return
        share = self._window_cost / elapsed
        self._window_start, self._window_cost = now, 0.0
        if share > self.max_overhead and self.interval < _MAX_INTERVAL:
            self.interval = min(self.interval * 2, _MAX_INTERVAL)
            if not self.backed_off:
                logger.warning(
                    "Flask-PerfAlert's sampler used %.1f%% of the time (limit %.1f%%): "
                    "sampling every %.0f ms instead.",
                    share * 100,
                    self.max_overhead * 100,
                    self.interval * 1000,
                )
            self.backed_off = True
            self._retime()
        elif share < self.max_overhead / 4 and self.interval > self.base_interval:
            self.interval = max(self.interval / 2, self.base_interval)
            self._retime()

    def _retime(self) -> None:
        if self.timer_running and self.handler_installed:
            signal.setitimer(signal.ITIMER_REAL, self.interval, self.interval)


SAMPLER = Sampler()
