"""How long each endpoint usually takes: a cheap summary fed by a sample of requests.

One request in ``SAMPLE_EVERY`` hands its method, path and duration to a
short list (the request timer appends three values and nothing more). Off the
request path, the path is matched to its endpoint and the duration counted
in a histogram of logarithmic buckets (each 10 % wider than the one below),
one per endpoint and hour. A shared store sums every worker's histograms;
an alert reads the last ``HOURS`` hours of its endpoint and says its median
and 95th percentile, to within 5 %.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask
    from werkzeug.routing import MapAdapter

    from .storage.base import Store

#: One request in this many is sampled (a power of two: the timer tests one bit mask).
SAMPLE_EVERY = 16
SAMPLE_MASK = SAMPLE_EVERY - 1
#: Samples waiting to be counted, at most (more are dropped until the next flush).
MAX_PENDING = 4096
#: Hours of history an alert reads.
HOURS = 24
#: The smallest duration told apart (seconds), and the width of a bucket.
FLOOR = 1e-4
GROWTH = 1.1
MAX_BUCKET = 250
#: Fewer sampled requests than this say nothing usual.
MIN_REQUESTS = 20

_LOG_GROWTH = math.log(GROWTH)

#: endpoint -> bucket -> count.
Histograms = dict[str, dict[int, int]]


@dataclass(frozen=True)
class UsualLatency:
    """How long the endpoint usually takes: a sample of its recent requests.

    Kept by every worker (and host) sharing the store, over the last 24 hours.
    """

    #: Seconds: half of the sampled requests were faster.
    median: float
    #: Seconds: 95 % of the sampled requests were faster.
    p95: float
    #: How many sampled requests it is based on.
    requests: int

    def times(self, duration: float) -> float:
        """How many times the median ``duration`` is."""
        return duration / self.median if self.median > 0 else float("inf")


def seconds_text(value: float) -> str:
    """``80 ms`` below a second, ``1.84 s`` above."""
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def bucket(seconds: float) -> int:
    """The histogram bucket of a duration."""
    if seconds <= FLOOR:
        return 0
    return min(int(math.log(seconds / FLOOR) / _LOG_GROWTH) + 1, MAX_BUCKET)


def bucket_value(index: int) -> float:
    """A duration that stands for bucket ``index`` (the middle of its range)."""
    if index <= 0:
        return FLOOR
    return float(FLOOR * GROWTH ** (index - 0.5))


def hour(now: float | None = None) -> int:
    """The hour slot of a wall-clock time (hours since the epoch)."""
    return int((time.time() if now is None else now) // 3600)


def quantile(counts: Mapping[int, int], q: float) -> float:
    """The ``q`` quantile (0..1) of a histogram."""
    total = sum(counts.values())
    if total <= 0:
        return 0.0
    rank = q * total
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return bucket_value(index)
    return bucket_value(max(counts))


def usual(counts: Mapping[int, int]) -> UsualLatency | None:
    """Median and 95th percentile of a histogram, or None below ``MIN_REQUESTS``."""
    total = sum(counts.values())
    if total < MIN_REQUESTS:
        return None
    return UsualLatency(quantile(counts, 0.5), quantile(counts, 0.95), total)


class EndpointCache:
    """``(method, path)`` -> endpoint, the last ``size`` seen (matching costs microseconds)."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._known: OrderedDict[tuple[str, str], str | None] = OrderedDict()

    def get(self, method: str, path: str) -> tuple[bool, str | None]:
        key = (method, path)
        if key in self._known:
            self._known.move_to_end(key)
            return True, self._known[key]
        return False, None

    def put(self, method: str, path: str, endpoint: str | None) -> None:
        self._known[(method, path)] = endpoint
        if len(self._known) > self.size:
            self._known.popitem(last=False)


def histograms(samples: Iterable[tuple[str | None, float]]) -> Histograms:
    """Count ``(endpoint, seconds)`` samples into one histogram per endpoint."""
    out: Histograms = {}
    for endpoint, seconds in samples:
        if endpoint is None:
            continue
        counts = out.setdefault(endpoint, {})
        index = bucket(seconds)
        counts[index] = counts.get(index, 0) + 1
    return out


class LatencyBook:
    """One app's sampled latencies: counted by endpoint and hour, kept in its store.

    Runs off the request path (the events thread): matching paths to endpoints
    costs microseconds each, and the store may be across the network.
    """

    def __init__(self, store: Store, app_key: str) -> None:
        self.store = store
        self.app_key = app_key
        self._endpoints = EndpointCache()

    def count(self, app: Flask, samples: list[tuple[str, str, float]]) -> None:
        """Count sampled ``(method, path, seconds)``; ``("function", name, s)`` for calls."""
        if not samples:
            return
        adapter = None
        found: list[tuple[str | None, float]] = []
        for method, path, seconds in samples:
            if method == "function":
                found.append((f"function {path}", seconds))
                continue
            known, endpoint = self._endpoints.get(method, path)
            if not known:
                if adapter is None:
                    adapter = app.url_map.bind(app.config.get("SERVER_NAME") or "localhost")
                endpoint = _match(adapter, method, path)
                self._endpoints.put(method, path, endpoint)
            found.append((endpoint, seconds))
        self.store.add_latencies(self.app_key, hour(), histograms(found))

    def usual(self, key: str, now: float | None = None) -> UsualLatency | None:
        """The usual latency of an endpoint (or ``"function <name>"``) over the last hours."""
        current = hour(now)
        return usual(
            self.store.latencies(self.app_key, key, range(current - HOURS + 1, current + 1))
        )


def _match(adapter: MapAdapter, method: str, path: str) -> str | None:
    try:
        rule, _ = adapter.match(path, method, return_rule=True)
    except Exception:  # not found, method not allowed, a redirect: no endpoint
        return None
    endpoint: str = rule.endpoint
    return endpoint
