"""The late-start sampling profiler: one thread per process, of our own.

Fast requests pay only for being put in (and taken out of) :data:`ACTIVE`.
The sampler thread looks at the work in it; once a request has run past its
arm point (``SAMPLE_AFTER`` of its threshold), it reads that thread's stack
every ``SAMPLE_INTERVAL`` seconds, keeping strings only.

Why a thread: a sampler that runs inside the app's thread (a signal handler,
a trace function) runs between two bytecodes of arbitrary app code and takes a
process-wide resource the app may own (``SIGALRM``, ``ITIMER_REAL``,
``sys.setprofile``). A thread of our own reads the other threads' stacks with
``sys._current_frames()``, as the profilers people trust do, and nothing the
app can observe changes. It is a real operating-system thread even under
gevent or eventlet (see ``_threads``), where it reads a request's greenlet
frames. It starts with the first request of each process and never wakes the
request threads: it sleeps until the next arm point, or ``IDLE_POLL`` when it
knows of none.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Request

from .._fork import after_fork_in_child
from . import stacks as _stacks
from ._threads import OSThreads
from .measurement import Measurement
from .session import from_code
from .stacks import Stack, ThreadStacks
from .state import ACTIVE, InFlight

logger = logging.getLogger("flask_perfalert")

#: The longest interval the overhead control backs off to.
MAX_INTERVAL = 0.1
#: Seconds between two looks for new work when the sampler knows of none: at most
#: the earliest arm point of any app (so sampling starts on time), within these bounds.
IDLE_POLL = 0.05
MIN_IDLE_POLL = 0.005
#: The shortest sleep between two looks (a tick never spins).
MIN_SLEEP = 0.001
#: Ticks put off in a row, MIN_SLEEP each, while a tick could start the app's next
#: garbage collection on the sampler's thread (see ``stacks.gc_room``). Then it ticks
#: anyway: an app that allocates nothing meanwhile has nothing more to collect soon.
MAX_GC_DEFERRALS = 5

Clock = Callable[[], float]
#: Reads the stacks of the given threads (and the number of threads), or None if not now.
StacksSource = Callable[[tuple[int, ...], int], "ThreadStacks | None"]
#: Reads a suspended greenlet's stack ((): it runs or ended), or None if not now.
GreenletSource = Callable[[Any], "Stack | None"]
#: Whether a tick sampling that many threads can run without starting a collection.
GcRoom = Callable[[int], bool]


class Sampler:
    """Samples the stacks of the work in ``active`` that has passed its arm point.

    ``clock``, ``cpu_clock`` (this thread's CPU time, which the overhead control
    counts), ``stacks`` and ``gc_room`` are injectable: tests drive :meth:`tick`
    with fake clocks and stacks of their own, without a thread.
    """

    def __init__(
        self,
        active: dict[int, InFlight] | None = None,
        clock: Clock = time.perf_counter,
        stacks: StacksSource = _stacks.read_stacks,
        cpu_clock: Clock = time.thread_time,
        greenlet_stack: GreenletSource = _stacks.greenlet_stack,
        gc_room: GcRoom = _stacks.gc_room,
    ) -> None:
        self.active = ACTIVE if active is None else active
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.read_stacks = stacks
        self.greenlet_stack = greenlet_stack
        self.gc_room = gc_room
        self.interval = self.base_interval = 0.005
        self.max_overhead = 0.05
        self.idle_poll = IDLE_POLL
        self._reset()
        # Nothing of a parent's sampler is valid in a forked child (gunicorn --preload):
        # its thread does not exist there; the child's first request starts its own.
        after_fork_in_child(self, Sampler._reset)

    def _reset(self) -> None:
        #: Whether this process's sampler thread runs (read on every request: a flag,
        #: not a system call).
        self.running = False
        self._start_lock = threading.Lock()
        self.os: OSThreads | None = None
        #: Held while the thread sleeps; released to wake it early (new settings).
        self._wakeup: Any = None
        #: Samples taken, and the CPU time spent sampling, for overhead control and stats.
        self.samples_taken = 0
        #: Reads refused because stacks could not be read safely at that moment.
        self.reads_refused = 0
        self._refusal_logged = False
        self.backed_off = False
        #: The overhead window (its start, and the sampler thread's CPU time in it), the
        #: thread's CPU clock when last read (first at its first tick), and the counters
        #: of each sample taken since then, which share that CPU time.
        self._window_start = self.clock()
        self._window_cost = 0.0
        self._cpu_read: float | None = None
        self._unsettled: list[Any] = []
        self._threads_seen = 8
        #: When the armed work is sampled next.
        self._next_sample = 0.0

    def configure(
        self, interval: float, max_overhead: float, min_arm_delay: float = IDLE_POLL
    ) -> None:
        """Sampling interval and overhead limit, and an app's earliest arm point.

        The thread reads them on its next loop. The idle poll follows the
        earliest arm point of every app configured in this process.
        """
        self.base_interval = self.interval = interval
        self.max_overhead = max_overhead
        self.idle_poll = max(MIN_IDLE_POLL, min(self.idle_poll, min_arm_delay))
        self._next_sample = 0.0
        self._wake()

    # -- the thread ---------------------------------------------------------------------
    def start(self) -> OSThreads:
        """Start this process's sampler thread if it is not running; its thread primitives."""
        with self._start_lock:  # the first requests of a gthread worker come at once
            if not self.running:
                self.os = OSThreads()
                self._wakeup = self.os.allocate_lock()
                self._wakeup.acquire()
                self.os.start_new_thread(self._run, (self._wakeup,))
                self.running = True
        assert self.os is not None
        return self.os

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and self.running:
            try:
                wakeup.release()
            except RuntimeError:  # already awake
                pass

    def _run(self, wakeup: Any) -> None:
        wait = wakeup.acquire
        deferred = 0
        while self._wakeup is wakeup:  # until a fork made the object another process's
            if deferred < MAX_GC_DEFERRALS and not self.gc_room(len(self.active)):
                # The app's threads run their collection (and its finalizers) first.
                deferred += 1
                wait(True, MIN_SLEEP)
                continue
            deferred = 0
            try:
                armed = self.tick()
            except Exception:  # pragma: no cover - never let the sampler die
                logger.exception("Flask-PerfAlert sampler failed")
                armed = False
            now = self.clock()
            # Never longer than the next arm point: work that starts meanwhile is
            # sampled from its arm point, whatever the interval.
            delay = self.until_next_arm(now)
            if armed:
                delay = min(delay, self._next_sample - now)
            wait(True, max(delay, MIN_SLEEP))

    def until_next_arm(self, now: float) -> float:
        """Seconds until the earliest arm point of work not armed yet (at most the idle poll)."""
        delay = self.idle_poll
        for record in list(self.active.values()):
            if record.measurement is None:
                delay = min(delay, record.start + record.timer.min_arm_delay - now)
        return delay

    # -- sampling ------------------------------------------------------------------------
    def tick(self) -> bool:
        """Arm the work that reached its arm point, and sample the armed work when due.

        True while some armed work waits for its next sample.
        """
        now = self.clock()
        if self._cpu_read is None:  # the thread's first tick opens the first window
            self._window_start, self._cpu_read = now, self.cpu_clock()
        due = now >= self._next_sample
        armed = False
        work: list[tuple[InFlight, Measurement]] = []
        for key, record in list(self.active.items()):
            m = record.measurement
            if m is None:
                if now < record.start + record.timer.min_arm_delay:
                    continue
                m = record.measurement = self._arm(record)
            if not m.routed and record.environ is not None:
                self._route(record, m)
            if m.skip or now < m.arm_at or key not in self.active:
                continue
            armed = True
            if due:
                work.append((record, m))
        read = None
        if work:
            # The usual case inline (one request on its own thread): a sample is cheapest
            # in the fewest calls, as it starts with the sampler's caches cold.
            one = work[0][0] if len(work) == 1 and work[0][0].extras is None else None
            threads = (one.thread,) if one is not None else _threads_of(work)
            read = self.read_stacks(threads, self._threads_seen)
        if read is not None:
            self._threads_seen, stacks = read
            taken = self.samples_taken
            for record, m in work:
                if record.extras is None and m.stop_code is None:
                    stack = stacks.get(record.thread)
                else:
                    stack = self._stack(record, m, stacks)
                if not stack:
                    continue
                m.interval = self.interval
                m.add_sample(stack, now)
                self.samples_taken += 1
                self._unsettled.append(record.timer.stats)
            if self.samples_taken != taken:
                self._next_sample = now + self.interval
        elif work:  # not safe to read stacks now; the next tick tries again
            self._refused(work)
        # The CPU clock is a system call: read every eighth sample, when the work is
        # over, and at the end of each window, not twice a sample.
        if now - self._window_start >= 1.0:
            self._control_overhead(now)
        elif len(self._unsettled) >= 8 or (self._unsettled and not armed):
            self._settle()
        return armed

    def _settle(self) -> None:
        """Read this thread's CPU clock; the time since the last reading goes to the
        counters of the samples taken meanwhile, and to the window."""
        cpu = self.cpu_clock()
        cost = max(cpu - (self._cpu_read if self._cpu_read is not None else cpu), 0.0)
        self._cpu_read = cpu
        self._window_cost += cost
        counted = self._unsettled
        if counted:
            self._unsettled = []
            for stats in counted:
                stats.sampler_seconds += cost / len(counted)

    def _refused(self, work: list[tuple[InFlight, Measurement]]) -> None:
        self.reads_refused += 1
        reason = _stacks.refusal()
        for _, m in work:
            m.refused += 1
            if reason is not None:
                m.refusal = reason
        if reason is not None and not self._refusal_logged:
            self._refusal_logged = True
            logger.warning("Flask-PerfAlert cannot sample stacks now: %s.", reason)

    def _stack(self, record: InFlight, m: Measurement, stacks: dict[int, Stack]) -> Stack | None:
        extras = record.extras
        linked = extras.linked_threads if extras is not None else ()
        greenlet = extras.greenlet if extras is not None else None
        if greenlet is not None:
            # A greenlet that is not running keeps its stack in gr_frame; the
            # running one's is its thread's current stack.
            suspended = self.greenlet_stack(greenlet)
            if suspended is None:  # not safe to read now
                return None
            own = suspended
            if not own:
                if greenlet.dead:
                    return None
                own = stacks.get(extras.os_thread if extras is not None else 0, ())
        else:
            own = stacks.get(record.thread, ())
        if not own and not linked:
            return None
        stack = own if m.stop_code is None else from_code(own, m.stop_code)
        awaiting = extras.awaiting if extras is not None else ()
        for thread, coroutine in itertools.zip_longest(linked, list(awaiting)):
            # An async view that awaits is on no stack: the event loop's thread
            # only waits for events; the view's time is its await's.
            suspended = None if coroutine is None else _stacks.awaiting_stack(coroutine)
            if suspended:
                stack += suspended
            elif thread is not None:
                stack += stacks.get(thread, ())
        return stack

    # -- arming -----------------------------------------------------------------------------
    @staticmethod
    def _arm(record: InFlight) -> Measurement:
        """The measurement of work that reached its app's earliest arm point."""
        timer = record.timer
        call = record.call
        extras = record.extras
        # The CPU clock of a thread; greenlets share theirs, so they get none.
        cpu_thread = None if extras is not None and extras.greenlet is not None else record.thread
        if call is not None:
            arm_at = record.start + timer.sample_after * call.threshold
            return Measurement(
                record.start, arm_at, call.code, skip=not timer.samples, cpu_thread=cpu_thread
            )
        arm_at = record.start + timer.sample_after * timer.threshold
        return Measurement(record.start, arm_at, skip=not timer.samples, cpu_thread=cpu_thread)

    @staticmethod
    def _route(record: InFlight, m: Measurement) -> None:
        """Keep the running request's Flask request object, once it has been routed.

        Flask forgets it when the request context ends, before the response is
        sent. Reading the environ and the request from here changes nothing the
        app can see. The endpoint fixes the real threshold and arm point.
        """
        extras = record.extras
        request = extras.request if extras is not None else None
        if request is None:
            assert record.environ is not None
            request = record.environ.get("werkzeug.request")
        # Before Flask's request exists, a test client's plain Werkzeug request may be
        # there; and the endpoint is known only after routing.
        if not isinstance(request, Request) or (
            request.url_rule is None and request.routing_exception is None
        ):
            return
        record.more().request = request
        m.routed = True
        timer = record.timer
        endpoint = request.url_rule.endpoint if request.url_rule is not None else None
        m.arm_at = record.start + timer.sample_after * timer.threshold_for(endpoint)
        if endpoint in timer.excluded_endpoints:
            m.skip = True

    # -- overhead ---------------------------------------------------------------------------
    def _control_overhead(self, now: float) -> None:
        """At the end of a window: back off when the sampler's CPU time was above its share.

        The cost is the CPU time of this thread over the window, its loop and
        sleeps included: time it waited for the interpreter lock, which the app's
        threads used meanwhile, is not the sampler's cost.
        """
        self._settle()
        share = self._window_cost / (now - self._window_start)
        self._window_start, self._window_cost = now, 0.0
        if share > self.max_overhead and self.interval < MAX_INTERVAL:
            self.interval = min(self.interval * 2, MAX_INTERVAL)
            if not self.backed_off:
                logger.warning(
                    "Flask-PerfAlert's sampler used %.1f%% of a CPU core (limit %.1f%%): "
                    "sampling every %.0f ms instead.",
                    share * 100,
                    self.max_overhead * 100,
                    self.interval * 1000,
                )
            self.backed_off = True
        elif share < self.max_overhead / 4 and self.interval > self.base_interval:
            self.interval = max(self.interval / 2, self.base_interval)


def _threads_of(work: list[tuple[InFlight, Measurement]]) -> tuple[int, ...]:
    """The threads whose stacks the sampling of ``work`` reads."""
    threads: dict[int, None] = {}
    for record, _ in work:
        extras = record.extras
        if extras is None:
            threads[record.thread] = None
            continue
        threads[extras.os_thread if extras.greenlet is not None else record.thread] = None
        threads.update(dict.fromkeys(extras.linked_threads))
    return tuple(threads)


#: The sampler of this process.
SAMPLER = Sampler()
