"""What each step of the request timer's fast path costs, against what it replaced.

    python bench/timer_lines.py            # nanoseconds per step (best of 7 runs)
    valgrind --tool=callgrind --dump-before=getppid python bench/timer_lines.py --marks
                                           # instructions per step (one dump per step)

Each step is timed in a loop of its own, as the timer runs it (closure cells,
the package's own classes), next to the step of the signal-sampler timer it
replaced; an empty loop is subtracted. The figures are what one request pays
for that line, without the cache effects of a real request around it.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from flask_perfalert.latency import SAMPLE_MASK  # noqa: E402
from flask_perfalert.profiling.sampler import Sampler  # noqa: E402
from flask_perfalert.profiling.state import InFlight  # noqa: E402
from flask_perfalert.profiling.timer import _sample  # noqa: E402
from flask_perfalert.stats import Stats  # noqa: E402


def _server_start_response(status: str, headers: Any, exc_info: Any = None) -> None:
    return None


def steps() -> dict[str, tuple[Callable[[int], None], Callable[[int], None]]]:
    """Step name: (the new line in a loop, the old line in a loop)."""
    perf_counter = time.perf_counter
    get_ident = threading.get_ident
    environ: dict[str, Any] = {}
    state = object()
    sampler = Sampler(active={})
    sampler.running = True  # as if started: the check is what every request pays
    ready = {get_ident()}
    start_response = _server_start_response
    headers: list[tuple[str, str]] = []
    record = InFlight(0.0, 0, state, environ)  # type: ignore[arg-type]
    record.server_start_response = start_response

    def new_record(n: int) -> None:
        for _ in range(n):
            InFlight(perf_counter(), get_ident(), state, environ)  # type: ignore[arg-type]

    def old_record(n: int) -> None:
        for _ in range(n):
            (perf_counter(), get_ident(), state, environ)  # noqa: B018

    def new_check(n: int) -> None:
        for _ in range(n):
            if not sampler.running:
                raise AssertionError

    def old_check(n: int) -> None:
        thread_id = get_ident()
        for _ in range(n):
            if thread_id not in ready:
                raise AssertionError

    def new_start_response(n: int) -> None:
        for _ in range(n):
            record.server_start_response = start_response
            record.start_response("200 OK", headers)

    def old_start_response(n: int) -> None:
        for _ in range(n):
            start_response("200 OK", headers)

    stats = Stats()
    sample_mask = SAMPLE_MASK
    request_environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/orders/7"}

    def new_latency_sample(n: int) -> None:
        for count in range(1, n + 1):
            if not count & sample_mask:
                _sample(stats, request_environ, 0.001)
            if len(stats.latencies) > 1000:  # the flush empties it every few seconds
                stats.latencies.clear()

    def old_latency_sample(n: int) -> None:
        for _count in range(1, n + 1):
            if len(stats.latencies) > 1000:
                stats.latencies.clear()

    return {
        "the record: InFlight(...) / a tuple": (new_record, old_record),
        "usual latency: one request in 16 kept / none": (new_latency_sample, old_latency_sample),
        "is the sampler running: the .running flag / a set look-up": (new_check, old_check),
        "start_response: through InFlight.start_response / the server's": (
            new_start_response,
            old_start_response,
        ),
    }


def _empty(n: int) -> None:
    for _ in range(n):
        pass


def _best_ns(loop: Callable[[int], None], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        loop(n)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200_000, help="iterations per run")
    parser.add_argument(
        "--marks",
        action="store_true",
        help="run each loop once between two os.getppid() calls (for callgrind's "
        "--dump-before=getppid), and print the order of the dumps",
    )
    args = parser.parse_args(argv)
    table = steps()
    if args.marks:
        order = []
        for name, (new, old) in table.items():
            for which, loop in (("new", new), ("old", old), ("empty", _empty)):
                loop(1000)  # warm-up (specialisation)
                os.getppid()
                loop(args.n)
                os.getppid()
                order.append(f"{name} [{which}]")
        print("\n".join(f"part {2 * i + 2}: {what}" for i, what in enumerate(order)))
        return 0
    empty = _best_ns(_empty, args.n, 7)
    print(f"{'step':70} {'new ns':>8} {'old ns':>8} {'added':>8}")
    for name, (new, old) in table.items():
        new_ns = _best_ns(new, args.n, 7) - empty
        old_ns = _best_ns(old, args.n, 7) - empty
        print(f"{name:70} {new_ns:8.1f} {old_ns:8.1f} {new_ns - old_ns:+8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
