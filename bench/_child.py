"""One benchmark configuration, run in a process of its own.

``python -m bench._child '<json spec>'`` runs one task and prints its result as
one JSON line. Bare and monitored apps never share a process: a thread that
the monitor starts (or anything else it leaves behind) would slow the bare
measurement too. Requests go through the WSGI callable as a server sends
them: call, iterate the body, ``close()`` it.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from . import _instructions, _internals, _sample_cost, _stores, apps
from ._wsgi import make_caller, process_time, trivial_wsgi_app

perf_counter = time.perf_counter


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (not necessarily sorted), ``q`` in 0..100."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def summarise(latencies: list[float], wall: float) -> dict[str, Any]:
    return {
        "n": len(latencies),
        "median": statistics.median(latencies),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "mean": statistics.fmean(latencies),
        "throughput": len(latencies) / wall if wall > 0 else 0.0,
    }


class _GCClock:
    """Counts the garbage collector's runs and the time they take (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.collections = 0
        self.seconds = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def reset(self) -> None:
        self.collections = 0
        self.seconds = 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = perf_counter()
        else:
            self.collections += 1
            self.seconds += perf_counter() - self._started


gc_clock = _GCClock()


def _start_and_join_thread() -> None:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()


# -- tasks ------------------------------------------------------------------------------


def task_fast(spec: dict[str, Any]) -> dict[str, Any]:
    """Latency of fast endpoint kinds: warm up, then requests for ``seconds`` each."""
    if spec.get("start_thread"):
        _start_and_join_thread()
    app = apps.create_app(spec["mode"])
    call = make_caller(app)
    out: dict[str, Any] = {}
    for kind in spec["kinds"]:
        path = apps.FAST_KINDS[kind]
        _warm_up(call, path, spec["warmup_seconds"])
        out[kind] = _burst(call, path, spec["seconds"], spec.get("max_requests", 1_000_000))
    return out


def _warm_up(call: Callable[..., Any], path: str, seconds: float) -> None:
    """Requests to ``path`` for ``seconds`` (at least one), each answering 200."""
    deadline = perf_counter() + seconds
    while True:
        _, _, _, status = call(path)
        if not status.startswith("200"):
            raise RuntimeError(f"{path} answered {status}")
        if perf_counter() >= deadline:
            break


def _burst(call: Callable[..., Any], path: str, seconds: float, limit: int) -> dict[str, Any]:
    """Requests to ``path`` for ``seconds`` (at least 20): latency figures and costs."""
    latencies: list[float] = []
    gc_clock.reset()
    cpu0 = process_time()
    began = perf_counter()
    deadline = began + seconds
    while len(latencies) < limit:
        t0, _, t2, _ = call(path)
        latencies.append(t2 - t0)
        if t2 >= deadline and len(latencies) >= 20:
            break
    cpu = process_time() - cpu0
    out = summarise(latencies, perf_counter() - began)
    out["cpu"] = cpu / len(latencies)
    out["gc_collections"] = gc_clock.collections
    out["gc_seconds"] = gc_clock.seconds
    return out


def task_serve(spec: dict[str, Any]) -> dict[str, Any]:
    """Stay up and measure bursts on command: one JSON line in, one JSON line out.

    The harness keeps one such process per mode and alternates short bursts
    between them, so that the bare and the monitored figures of a pair are
    taken moments apart (the machine's load changes slower than that), while
    each app still has a process of its own.
    """
    app = apps.create_app(spec["mode"])
    call = make_caller(app)
    for path in apps.FAST_KINDS.values():
        _warm_up(call, path, spec["warmup_seconds"])
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    bursts = 0
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("stop"):
            break
        path = apps.FAST_KINDS[command["kind"]]
        result = _burst(call, path, command["seconds"], command.get("max_requests", 1_000_000))
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        bursts += 1
    return {"bursts": bursts}


def _one_slow_request(call: Callable[..., Any], kind: str, rid: str) -> dict[str, Any]:
    cpu_at_sent: list[float] = []
    cpu0 = process_time()
    t0, t1, t2, status = call(apps.SLOW_KINDS[kind], f"rid={rid}", sent=cpu_at_sent)
    cpu = cpu_at_sent[0] - cpu0
    # The event is made after the response (on the events thread): wait for it, so
    # that it neither slows the next request nor is missed.
    _internals.settle()
    truth = apps.TRUTH.get(rid, {})
    result: dict[str, Any] = {
        "status": status,
        "response_seconds": t1 - t0,
        "total_seconds": t2 - t0,
        "cpu_seconds": cpu,
        "view_seconds": truth.get("view_seconds"),
        "true_parts": {name: seconds for name, _, _, seconds in truth.get("parts", [])},
        "analysis": None,
    }
    events = [event for event in apps.EVENTS if event.params.get("rid") == rid]
    if events:
        result["analysis"] = apps.analyse(events[0])
    apps.TRUTH.pop(rid, None)
    return result


def task_slow(spec: dict[str, Any]) -> dict[str, Any]:
    """Slow requests, monitored and bare, alternated within one process.

    The process holds the app twice: monitored with ``mode``, and bare. Each
    request runs on the main thread (``where``: ``main``, a sync worker) or on a
    thread of its own (``thread``, a gthread worker). CPU-bound
    Python runs a few per cent faster or slower from one process to the next
    (memory layout), more than the cost to be measured; within one process
    that difference is gone. The first slow request of the process is a
    monitored one: its profile is the profile of a process's first slow request.
    """
    apps_by_role = {"monitored": apps.create_app(spec["mode"]), "bare": apps.create_app("bare")}
    calls = {role: make_caller(app) for role, app in apps_by_role.items()}
    for call in calls.values():
        for _ in range(spec.get("warmup_requests", 50)):
            call(apps.FAST_KINDS["json"])
    kind = spec["kind"]
    out: dict[str, list[dict[str, Any]]] = {"monitored": [], "bare": []}
    for i in range(spec.get("pairs", 1)):
        order = ("monitored", "bare") if i % 2 == 0 else ("bare", "monitored")
        for role in order:
            rid = f"{spec['mode']}-{os.getpid()}-{role}-{i}"
            if spec.get("where", "main") == "thread":
                # Where a gthread worker runs requests: another thread than the main one.
                done: list[dict[str, Any]] = []
                thread = threading.Thread(
                    target=lambda out, call, rid: out.append(_one_slow_request(call, kind, rid)),
                    args=(done, calls[role], rid),
                )
                thread.start()
                thread.join()
                out[role].append(done[0])
            else:
                out[role].append(_one_slow_request(calls[role], kind, rid))
    return out


def _rss_kib() -> int:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def task_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """Distinct URLs over many endpoints: live memory at checkpoints."""
    import tracemalloc

    import flask_perfalert

    ext_dir = os.path.dirname(flask_perfalert.__file__)
    app = apps.create_app(spec["mode"], endpoints=spec["endpoints"])
    call = make_caller(app)
    endpoints = spec["endpoints"]
    checkpoints = sorted(spec["checkpoints"])
    tracemalloc.start(1)
    ext_filter = [tracemalloc.Filter(True, os.path.join(ext_dir, "*"))]
    out: list[dict[str, Any]] = []
    statuses: dict[str, int] = {}
    began = perf_counter()
    for i in range(checkpoints[-1] + 1):
        if i % 200 == 0:
            # When every request is slow, let the events thread keep up (as the time
            # a server spends on the network would); a bounded queue otherwise refuses.
            _internals.settle()
        if i in checkpoints:
            gc.collect()
            snapshot = tracemalloc.take_snapshot().filter_traces(ext_filter)
            out.append(
                {
                    "requests": i,
                    "traced_total_bytes": tracemalloc.get_traced_memory()[0],
                    "traced_extension_bytes": sum(s.size for s in snapshot.statistics("filename")),
                    "rss_kib": _rss_kib(),
                    "state": _internals.state_sizes(app),
                    "seconds": perf_counter() - began,
                }
            )
            if i == checkpoints[-1]:
                break
        if i % 11 == 10:
            path, query = f"/missing/{i}", ""
        else:
            path, query = f"/ep{i % endpoints}/{i}", f"q={i}"
        status = call(path, query)[3][:3]
        statuses[status] = statuses.get(status, 0) + 1
    tracemalloc.stop()
    return {
        "checkpoints": out,
        "statuses": statuses,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def task_wrapper(spec: dict[str, Any]) -> dict[str, Any]:
    """The request timer alone: a minimal Werkzeug response, raw and through the timer."""
    app = apps.create_app(spec["mode"])
    timed = app.wsgi_app
    _internals.timer_state(app).wrapped = trivial_wsgi_app
    raw_call = make_caller(trivial_wsgi_app)
    timed_call = make_caller(timed)
    raw: list[float] = []
    timed_times: list[float] = []
    for _ in range(spec["blocks"]):
        for target, sink in ((raw_call, raw), (timed_call, timed_times)):
            for _ in range(spec["block_size"]):
                t0, _, t2, _ = target("/json")
                sink.append(t2 - t0)
    snapshot = app.extensions["perfalert"].stats(app)
    return {
        "raw_median": statistics.median(raw),
        "timed_median": statistics.median(timed_times),
        "raw_mean": statistics.fmean(raw),
        "timed_mean": statistics.fmean(timed_times),
        "own_seconds_per_request": snapshot.get("own_seconds_per_request", float("nan")),
        "requests": snapshot["requests"],
    }


def task_sampler(spec: dict[str, Any]) -> dict[str, Any]:
    """A CPU-bound call sampled from its first millisecond, on the main thread or another.

    The main thread is where a sync worker runs requests, another thread where
    a gthread worker does. A signal sampler ticks on the main thread itself
    (SIGALRM) and from a thread of its own for other threads; a thread sampler
    always reads the stack from its own thread, and each tick takes the GIL
    from the working thread. Bare runs use the same thread layout without the
    extension. The work times itself (wall and process CPU), so the event made
    after it is not counted.
    """
    units = spec["units"]
    result: dict[str, Any] = {}

    def work(n: int) -> int:
        cpu0 = process_time()
        t0 = perf_counter()
        value = apps.compute_tree(n)
        result["seconds"] = perf_counter() - t0
        result["cpu_seconds"] = process_time() - cpu0
        return value

    func: Callable[[int], int] = work
    perf: Any = None
    if spec["mode"] != "bare":
        from flask import Flask

        from flask_perfalert import PerfAlert

        app = Flask(__name__)
        perf = PerfAlert(app, profiler=spec["mode"], file_enabled=False)
        func = perf.watch(threshold=spec["threshold"])(work)

    if spec["where"] == "thread":
        thread = threading.Thread(target=func, args=(units,))
        thread.start()
        thread.join()
    else:
        func(units)
    if perf is not None:
        _internals.settle()
        stats = perf.stats(app)
        result["samples"] = stats["samples"]
        result["interval"] = stats["sampler_interval"]
    return result


def _threads_cpu_ns() -> dict[int, int]:
    """Nanoseconds on a CPU of each thread of this process but the main one (schedstat)."""
    out: dict[int, int] = {}
    for entry in os.listdir("/proc/self/task"):
        tid = int(entry)
        if tid == os.getpid():
            continue
        try:
            with open(f"/proc/self/task/{entry}/schedstat") as handle:
                out[tid] = int(handle.read().split()[0])
        except OSError:  # the thread ended
            continue
    return out


def task_thread_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """The extension's own threads while the main thread serves ``rate`` fast requests a second.

    The idle sampler's polls, the events thread and the counters' flushes run on
    threads of their own; their CPU time per second of wall time is their cost.
    """
    app = apps.create_app("sampling")
    call = make_caller(app)
    path = apps.FAST_KINDS["json"]
    for _ in range(200):
        call(path)
    _internals.settle()
    gap = 1.0 / spec["rate"]
    before = _threads_cpu_ns()
    t0 = perf_counter()
    served = 0
    due = t0
    while perf_counter() - t0 < spec["seconds"]:
        call(path)
        served += 1
        due += gap
        pause = due - perf_counter()
        if pause > 0:
            time.sleep(pause)
    wall = perf_counter() - t0
    after = _threads_cpu_ns()
    cpu = sum(after[t] - before.get(t, 0) for t in after) / 1e9
    return {
        "rate": served / wall,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "share_of_core": cpu / wall,
        "threads": len(after),
    }


def task_calibrate(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds per unit of work of each part function, on this machine (best of 3)."""
    import sqlite3
    import tempfile

    # A file database, as in the app: SQLite keeps the query's temporary data the same way.
    folder = tempfile.TemporaryDirectory(prefix="perfalert-bench-cal-")
    conn = sqlite3.connect(os.path.join(folder.name, "cal.db"))
    rows = [(i, f"name {i}", i % 17, (i * 7919) % 1000 / 10) for i in range(1000)]
    probes: dict[str, tuple[Callable[..., Any], tuple[Any, ...], int]] = {
        "compute_tree": (apps.compute_tree, (), 300),
        "crunch_numbers": (apps.crunch_numbers, (), 1_000_000),
        "build_strings": (apps.build_strings, (), 400_000),
        "run_query": (apps.run_query, (conn,), 600_000),
        "process_rows": (apps.process_rows, (rows,), 40),
    }
    scale = spec.get("scale", 1.0)
    out: dict[str, float] = {}
    for name, (func, args, units) in probes.items():
        units = max(1, int(units * scale))
        best = float("inf")
        for _ in range(3):
            t0 = perf_counter()
            func(*args, units)
            best = min(best, perf_counter() - t0)
        out[name] = best / units
    conn.close()
    folder.cleanup()
    return out


TASKS = {
    "fast": task_fast,
    "serve": task_serve,
    "slow": task_slow,
    "memory": task_memory,
    "wrapper": task_wrapper,
    "sampler": task_sampler,
    "calibrate": task_calibrate,
    "instructions": _instructions.task_instructions,
    "stores": _stores.task_stores,
    "sample_cost": _sample_cost.task_sample_cost,
    "thread_cost": task_thread_cost,
}


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = TASKS[spec["task"]](spec)
    result["pid"] = os.getpid()
    result["threads_alive_at_end"] = threading.active_count()
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
