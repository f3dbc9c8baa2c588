"""A shared store that may be away: fall back to this process's memory meanwhile.

While the shared store (SQLite, Redis) answers, it decides, and every key it
reports is also noted in a local :class:`MemoryStore`. When a call fails (Redis
down, the file locked or unwritable), that call and every call until the next
retry are decided by the local memory instead: the app keeps being served,
slow requests still alert (at most once per key per process, and not at all
for a key this process already saw claimed), and one warning is logged, not
one per request. The shared store is tried again after a back-off that grows
from ``RETRY_MIN`` to ``RETRY_MAX`` seconds; when it answers, it decides again,
and the keys claimed locally meanwhile are claimed in it too, so other
processes do not alert for them a second time.

Counters follow the same state: ``add_counters`` returns False, without
trying, while the store is away (the caller keeps the counts and sends them
again later), and a call at retry time probes the store like a claim does.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from .._logging import LimitedWarning, logger
from ._fork import renew_locks_after_fork
from .base import Batch, Store
from .memory import MemoryStore

#: Seconds before the first retry of a failed shared store; doubled up to RETRY_MAX.
RETRY_MIN = 1.0
RETRY_MAX = 30.0
#: Keys claimed locally during an outage that are handed to the store when it is back.
MAX_PENDING = 100


class FallbackStore:
    """Wraps a shared store; never raises."""

    shared = True

    def __init__(
        self,
        store: Store,
        prefix: str = "",
        clock: Callable[[], float] = time.time,
        prepare: bool = True,
    ) -> None:
        #: The shared store (SQLite, Redis) this one falls back from.
        self.store = store
        self.clock = clock
        self.description = store.description
        self.memory = MemoryStore(prefix=prefix, clock=clock)
        #: True while the shared store is not used (after a failure, until it answers).
        self.degraded = False
        self._retry_at = 0.0
        self._delay = RETRY_MIN
        #: The store's clock times the warnings too (tests pass a fake one).
        self._warning = LimitedWarning(clock=clock)
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")
        if prepare:
            self.prepare()

    def prepare(self) -> None:
        """Check the shared store now; a failure starts the fallback (never raises)."""
        try:
            self.store.prepare()
        except Exception as exc:
            self._failed(exc, self.clock())

    def claim(self, key: str, window_seconds: float) -> bool:
        now = self.clock()
        probing = False
        with self._lock:
            if self.degraded:
                if now < self._retry_at:
                    return self._claim_locally(key, window_seconds, now)
                # This thread probes; the others stay local until it is done.
                self._retry_at = now + self._delay
                probing = True
        try:
            if probing:
                self._hand_over(now)
            won = self.store.claim(key, window_seconds)
        except Exception as exc:
            with self._lock:
                self._failed(exc, now)
                return self._claim_locally(key, window_seconds, now)
        if probing:
            self._recovered()
        self.memory.claim(key, window_seconds)  # remembered, in case the store goes away
        return won

    def add_counters(
        self,
        app_key: str,
        deltas: Mapping[str, float],
        batch: Batch | None = None,
        *,
        retry_now: bool = False,
    ) -> bool:
        """Add counts to the shared store: True once it has them, False otherwise.

        Never raises. While the store is away this returns False at once (before
        the next retry; ``retry_now``, at exit, tries anyway): the caller keeps
        the counts and sends the same batch again, which the store applies once.
        """
        now = self.clock()
        probing = False
        with self._lock:
            if self.degraded:
                if now < self._retry_at and not retry_now:
                    return False
                self._retry_at = now + self._delay
                probing = True
        try:
            if probing:
                self._hand_over(now)
            self.store.add_counters(app_key, deltas, batch)
        except Exception as exc:
            with self._lock:
                self._failed(exc, now)
            return False
        if probing:
            self._recovered()
        return True

    def counters(self, app_key: str) -> dict[str, float]:
        """Every worker's counters of the app, read from the shared store (raises if away)."""
        return self.store.counters(app_key)

    def close(self) -> None:
        try:
            self.store.close()
        except Exception:
            logger.debug("Closing %s failed", self.description, exc_info=True)

    # -- internals ----------------------------------------------------------------------
    def _claim_locally(self, key: str, window_seconds: float, now: float) -> bool:
        won = self.memory.claim(key, window_seconds)
        if won:
            self._pending[key] = now + window_seconds
            self._pending.move_to_end(key)
            self._trim()
        return won

    def _trim(self) -> None:
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    def _failed(self, exc: BaseException, now: float) -> None:
        if self.degraded:
            self._delay = min(self._delay * 2, RETRY_MAX)
        else:
            self.degraded = True
            self._delay = RETRY_MIN
        self._retry_at = now + self._delay
        reason = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
        self._warning.warn(
            "The alert store %s is not available (%s); slow requests are de-duplicated in "
            "this process's memory until it answers again (counts wait in this process; "
            "next try in %.0f s)",
            self.description,
            reason,
            self._delay,
            now=now,
        )

    def _hand_over(self, now: float) -> None:
        """Claim in the shared store what was claimed here during the outage.

        Otherwise other processes, and this one, would alert for them once more.
        The store's answer does not matter; an error puts the rest back and raises.
        """
        with self._lock:
            pending, self._pending = self._pending, OrderedDict()
        try:
            while pending:
                key, expires = next(iter(pending.items()))
                if expires > now:
                    self.store.claim(key, expires - now)
                del pending[key]
        except BaseException:
            with self._lock:
                pending.update(self._pending)
                self._pending = pending
                self._trim()
            raise

    def _recovered(self) -> None:
        with self._lock:
            self.degraded = False
            self._delay = RETRY_MIN
        logger.info("The alert store %s is back; de-duplication is shared again.", self.description)
