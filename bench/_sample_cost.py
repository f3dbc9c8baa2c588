"""The cost of one sample: the time the sampler holds the GIL to take it.

``task_sample_cost`` drives :meth:`Sampler.tick` directly, as the sampler thread
does, with one watched call registered on a thread whose stack is ``depth``
frames deep: parked in a wait (the stack never changes, the best case of any
cache) or busy computing (the innermost frames change between samples). A tick
holds the GIL from its first to its last instruction, so its wall time is the
held GIL. Which stack reader runs is chosen at import
(``FLASK_PERFALERT_PURE_PYTHON``), so each reader runs in a process of its own.

Each sample is taken as in service, after a sleep of the sampling interval
(the sampler's thread then wakes with cold caches, which on a virtual machine
costs more than the code itself), and back to back ("warm": the code's own
cost). For scale, the same thread's stack is also walked, after the same sleep,
the cheapest way Python offers (``sys._current_frames()`` and ``f_back``,
nothing made of the frames).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from typing import Any

perf_counter = time.perf_counter


def _frames_to_root() -> int:
    frame: Any = sys._getframe()
    n = 0
    while frame is not None:
        n += 1
        frame = frame.f_back
    return n


class _Target:
    """A thread whose stack is ``depth`` frames deep: parked, or busy at the bottom."""

    def __init__(self, depth: int, busy: bool) -> None:
        self.depth = depth
        self.busy = busy
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.frames = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # The frames above ours (thread bootstrap) count towards the depth.
        self._descend(self.depth - _frames_to_root() - 1)

    def _descend(self, n: int) -> None:
        if n > 0:
            self._descend(n - 1)
            return
        self.frames = _frames_to_root() + (0 if self.busy else 2)  # + Event.wait's frames
        self.ready.set()
        if not self.busy:
            self.stop.wait()
            return
        while not self.stop.is_set():
            self._leaf_a()
            self._leaf_b()

    def _leaf_a(self) -> int:
        return sum(i * i for i in range(200))

    def _leaf_b(self) -> int:
        total = 0
        for i in range(300):
            total += i % 7
        return total

    def __enter__(self) -> int:
        self.thread.start()
        self.ready.wait(10)
        time.sleep(0.02)
        assert self.thread.ident is not None
        return self.thread.ident

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def _walk(ident: int) -> int:
    frame: Any = sys._current_frames().get(ident)
    n = 0
    while frame is not None:
        n += 1
        frame = frame.f_back
    return n


def task_sample_cost(spec: dict[str, Any]) -> dict[str, Any]:
    from flask_perfalert import PerfAlertSettings
    from flask_perfalert.profiling import stacks
    from flask_perfalert.profiling.policy import ProfilingPolicy
    from flask_perfalert.profiling.sampler import Sampler
    from flask_perfalert.profiling.state import InFlight, TimerState, WatchCall
    from flask_perfalert.stats import Stats

    samples = spec.get("samples", 2000)
    out: dict[str, Any] = {"reader": stacks.READER, "python": sys.version.split()[0]}
    for scenario in ("parked", "busy"):
        with _Target(spec.get("depth", 30), busy=scenario == "busy") as ident:
            sampler = Sampler(active={})
            sampler.configure(0.005, 1.0)  # no back-off: every tick samples
            config = PerfAlertSettings(sample_after=0)
            timer = TimerState(lambda environ, start_response: [])
            timer.use(config, ProfilingPolicy(config), Stats(), lambda *args: None)
            record = InFlight(0.0, ident, timer, None, WatchCall("job", 1.0, None))
            sampler.active[id(record)] = record
            # In service the sampler sleeps for its interval between two samples, and
            # wakes with cold caches: each sample (and, apart, each bare walk) is
            # taken after such a sleep. Warm: back to back, the code's own cost.
            timings: dict[str, list[float]] = {"tick": [], "walk": [], "warm": []}
            for i in range(samples + 20):
                for what in ("tick", "walk"):
                    time.sleep(spec.get("interval", 0.005))
                    sampler._next_sample = 0.0
                    t0 = perf_counter()
                    if what == "tick":
                        sampler.tick()
                    else:
                        _walk(ident)
                    t1 = perf_counter()
                    if i >= 20:  # the first samples fill the caches
                        timings[what].append(t1 - t0)
            for _ in range(samples):
                sampler._next_sample = 0.0
                t0 = perf_counter()
                sampler.tick()
                timings["warm"].append(perf_counter() - t0)
            m = record.measurement
            taken = m.sample_count if m is not None else 0
            frames = max((len(stack) for stack in m.stacks), default=0) if m is not None else 0
        out[scenario] = {
            "samples": taken,
            "frames_in_stack": frames,
            "tick_us_median": statistics.median(timings["tick"]) * 1e6,
            "tick_us_p90": sorted(timings["tick"])[int(len(timings["tick"]) * 0.9)] * 1e6,
            "walk_us_median": statistics.median(timings["walk"]) * 1e6,
            "warm_tick_us_median": statistics.median(timings["warm"]) * 1e6,
        }
    return out
