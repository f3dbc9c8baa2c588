"""The per-process store: a bounded dict of key -> expiry.

It keeps no counters: each process's own are in its ``perf.stats()``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .._fork import renew_locks_after_fork
from .base import Batch, Deltas, Later

#: Keys kept at most; the oldest claims are forgotten first.
MAX_KEYS = 10_000


class MemoryStore:
    description = "memory:// (this process only)"
    shared = False

    def __init__(self, prefix: str = "", clock: Callable[[], float] = time.time) -> None:
        self.prefix = prefix
        self.clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()
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
