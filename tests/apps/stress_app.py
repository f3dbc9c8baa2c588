"""An app whose every request is slow, and hard on a sampler: the stress tests' app.

Views recurse deep, leave cyclic garbage whose finalizers let other threads run,
collect garbage, stream from a generator, and await; every one allocates
heavily. Each answers a body the client can check. With ``STRESS_PERFALERT=1``
Flask-PerfAlert is on (threshold 25 ms) and each slow event is one JSON line in
``STRESS_EVENTS`` (apps/event_log.py).

``python -m apps.stress_app REQUESTS THREADS`` (from tests/) serves REQUESTS
requests from THREADS threads through the test client and prints one JSON
line: wrong answers, and the process's peak RSS.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator

from flask import Flask, Response, stream_with_context

from apps.event_log import log_events
from flask_perfalert import PerfAlert

ON = os.environ.get("STRESS_PERFALERT") == "1"
KINDS = ("deep", "finalizers", "collect", "stream", "async")

app = Flask(__name__)
if ON:
    PerfAlert(app, threshold_seconds=0.025, file_enabled=False)
    log_events(app, os.environ.get("STRESS_EVENTS"))


def churn(n: int) -> int:
    """Allocate heavily for a few milliseconds (young collections all the time)."""
    total = 0
    for i in range(1500):
        item = {"i": i, "l": [i, n], "s": str(i)}
        total += len(item["l"])
    return total + n


def answer(kind: str, n: int) -> str:
    return f"{kind}:{n}:{n * 7 + len(kind)}"


def stress_deep(n: int, depth: int = 150) -> int:
    if depth:
        return stress_deep(n, depth - 1)
    time.sleep(0.035)
    return churn(n)


class Cyclic:
    """Garbage in a cycle whose finalizer releases the GIL and allocates."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        try:
            time.sleep(0)
        except Exception:
            # Under gevent a collection can run this where gevent refuses to switch:
            # in a greenlet being finalized (RuntimeError) or in the hub's own loop
            # (BlockingSwitchOutError), with or without the extension. A finalizer
            # that may switch must allow for it.
            pass
        [object() for _ in range(10)]


@app.route("/deep/<int:n>")
def deep(n: int) -> str:
    stress_deep(n)
    return answer("deep", n)


@app.route("/finalizers/<int:n>")
def finalizers(n: int) -> str:
    for _ in range(200):
        Cyclic()
    time.sleep(0.035)
    churn(n)
    return answer("finalizers", n)


@app.route("/collect/<int:n>")
def collect(n: int) -> str:
    churn(n)
    gc.collect()
    time.sleep(0.035)
    return answer("collect", n)


@app.route("/stream/<int:n>")
def stream(n: int) -> Response:
    def chunks() -> Iterator[str]:
        for part in answer("stream", n).split(":"):
            churn(n)
            time.sleep(0.012)
            yield part + "|"

    return Response(stream_with_context(chunks()))


@app.route("/async/<int:n>")
async def async_view(n: int) -> str:
    churn(n)
    await asyncio.sleep(0.035)
    return answer("async", n)


@app.route("/")
def index() -> str:
    return "ok"


def expected(kind: str, n: int) -> bytes:
    body = answer(kind, n)
    if kind == "stream":
        body = "".join(part + "|" for part in body.split(":"))
    return body.encode()


def serve(requests: int, threads: int) -> dict[str, int]:
    """``requests`` requests from ``threads`` threads through the test client."""
    wrong = 0
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        nonlocal wrong
        test_client = app.test_client()
        for n in counter:
            kind = KINDS[n % len(KINDS)]
            response = test_client.get(f"/{kind}/{n}", buffered=True)
            if response.status_code != 200 or response.data != expected(kind, n):
                with lock:
                    wrong += 1

    workers = [threading.Thread(target=client) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if ON:
        from flask_perfalert.events_thread import EVENTS

        EVENTS.wait_idle(60)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"wrong": wrong, "peak_rss_kb": peak_kb}


if __name__ == "__main__":
    print(json.dumps(serve(int(sys.argv[1]), int(sys.argv[2]))))
