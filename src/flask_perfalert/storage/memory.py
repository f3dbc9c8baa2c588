"""The per-process store: bounded dicts of key -> expiry, key -> state, and histograms.

It keeps no counters: each process's own are in its ``perf.stats()``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from .._fork import renew_locks_after_fork
from .base import (
    Batch,
    Deltas,
    Histograms,
    KeyState,
    Later,
    Settled,
    settle_state,
    state_ttl,
)

#: Keys kept at most; the oldest claims (and states) are forgotten first.
MAX_KEYS = 10_000
#: Endpoints whose latencies are kept at most (the least recently fed go first).
MAX_ENDPOINTS = 2_000


class MemoryStore:
    description = "memory:// (this process only)"
    shared = False

    def __init__(self, prefix: str = "", clock: Callable[[], float] = time.time) -> None:
        self.prefix = prefix
        self.clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()
        self._states: OrderedDict[str, tuple[KeyState, float]] = OrderedDict()
        self._latencies: OrderedDict[tuple[str, str], dict[int, dict[int, int]]] = OrderedDict()
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")

    def claim(self, key: str, window_seconds: float, later: Later | None = None) -> bool:
        key = self.prefix + key
        now = self.clock()
        with self._lock:
            expiry = self._expiry.get(key)
            if expiry is not None and expiry > now:
                return False
            self._expiry[key] = now + window_seconds
            self._expiry.move_to_end(key)
            self._evict(now)
            return True

    def _evict(self, now: float) -> None:
        while self._expiry:
            oldest_key, oldest_expiry = next(iter(self._expiry.items()))
            if oldest_expiry > now and len(self._expiry) <= MAX_KEYS:
                break
            del self._expiry[oldest_key]

    def settle(
        self,
        key: str,
        seconds: float,
        first: bool,
        factor: float,
        window_seconds: float,
        started: float,
    ) -> Settled:
        key = self.prefix + key
        now = self.clock()
        with self._lock:
            state, expires = self._states.get(key, (None, 0.0))
            current = state if expires > now else None
            new, settled = settle_state(current, seconds, first, factor, started)
            self._states[key] = (new, now + state_ttl(window_seconds))
            self._states.move_to_end(key)
            while len(self._states) > MAX_KEYS:
                self._states.popitem(last=False)
        return settled

    def key_states(self) -> dict[str, KeyState]:
        now = self.clock()
        size = len(self.prefix)
        with self._lock:
            return {k[size:]: s for k, (s, e) in self._states.items() if e > now}

    def add_latencies(self, app_key: str, slot: int, histograms: Histograms) -> bool:
        with self._lock:
            for endpoint, counts in histograms.items():
                slots = self._latencies.setdefault((app_key, endpoint), {})
                into = slots.setdefault(slot, {})
                for index, count in counts.items():
                    into[index] = into.get(index, 0) + int(count)
                for old in [s for s in slots if s < slot - 48]:
                    del slots[old]
                self._latencies.move_to_end((app_key, endpoint))
            while len(self._latencies) > MAX_ENDPOINTS:
                self._latencies.popitem(last=False)
        return True

    def latencies(self, app_key: str, endpoint: str, slots: Iterable[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        with self._lock:
            kept = self._latencies.get((app_key, endpoint), {})
            for slot in slots:
                for index, count in kept.get(slot, {}).items():
                    out[index] = out.get(index, 0) + count
        return out

    def add_counters(
        self, app_key: str, deltas: Deltas, batch: Batch | None = None, *, retry_now: bool = False
    ) -> bool:
        return False  # not shared: nothing to sum

    def counters(self, app_key: str) -> dict[str, float]:
        return {}

    def prepare(self) -> None:
        pass

    def close(self) -> None:
        pass
