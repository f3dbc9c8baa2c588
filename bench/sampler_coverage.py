"""How much of a CPU-bound slow request the sampler's profile covers.

    python bench/sampler_coverage.py [--requests 5] [--seconds 1.0]

A view computes for ``--seconds`` without allocating a container (recursive
arithmetic); its profile should cover the request from the arm point
(``PERFALERT_SAMPLE_AFTER`` of the threshold) to its end, about 95 % of it.
On CPython 3.11.0 to 3.11.8 the sampler reads stacks only while the garbage
collector's young count leaves room below its threshold, and such a view
never moves that count: this shows whether sampling goes on to the end.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from flask import Flask

from flask_perfalert import PerfAlert, perf_slow_request


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args(argv)

    app = Flask(__name__)
    app.testing = True  # the event is made before client.get() returns
    PerfAlert(app, threshold_seconds=args.seconds / 2, file_enabled=False)

    @app.get("/cpu")
    def cpu() -> str:
        began = time.perf_counter()
        while time.perf_counter() - began < args.seconds:
            fib(18)
        return "ok"

    notes: list[str] = []

    def on_slow(sender: Flask, event: Any, **extra: Any) -> None:
        notes.append(event.profile_note)

    perf_slow_request.connect(on_slow, app)
    client = app.test_client()
    shares = []
    for _ in range(args.requests):
        client.get("/cpu")
        found = re.search(r"\((\d+)% of the time\)", notes[-1])
        shares.append(int(found.group(1)) if found else 0)
        print(notes[-1].split(";")[0])
    print(f"Python {sys.version.split()[0]}: profile covers {shares} % of each request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
