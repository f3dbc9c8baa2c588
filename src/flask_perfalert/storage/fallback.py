"""A shared store that may be away: one decision per key even while it fails or recovers.

While the shared store (SQLite, Redis) answers, it decides, one thread of
this process at a time per key (a second thread asking about a key being
decided gets a duplicate), and every key it reports is also noted in a local
:class:`MemoryStore` for while it may be away.

When a call fails (Redis down or hung, the file locked), a caller that can
wait passes ``later``: its claim is *held* (``claim`` returns None) and
decided as soon as the store answers again, by a retry thread of this store,
which then calls ``later(won)``. So workers that saw the same endpoint during
an outage still alert once between them. After a failure, the store is not
called on the caller's thread again until it has answered the retry thread:
a failing store costs a caller at most one bounded call. A claim held longer
than ``HOLD_MAX`` is decided in this process's memory (``later(True)``, once
per key per process, with a warning), so no alert waits for ever; that is
the one case where two processes may alert for one key.

A caller that cannot wait (no ``later``) gets a decision at once: from the
store, or from this process's memory while the store is away (before: at
most one alert per key per process). The keys decided in memory are claimed
in the store when it is back, so other processes do not alert for them again.

The store is tried again after a back-off that grows from ``RETRY_MIN`` to
``RETRY_MAX`` seconds, and one warning is logged per interval, not one per
request. Counters follow the same state: ``add_counters`` returns False,
without trying, while the store is away (the caller keeps the counts and sends
them again later), and a call at retry time probes the store like a claim does.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import NamedTuple

from .._fork import after_fork_in_child, renew_locks_after_fork
from .._logging import LimitedWarning, logger
from .base import Batch, Deltas, Histograms, KeyState, Later, Settled, Store
from .memory import MemoryStore

#: Seconds before the first retry of a failed shared store; doubled up to RETRY_MAX.
RETRY_MIN = 1.0
RETRY_MAX = 30.0
#: A claim held this long (seconds) while the store is away is decided in memory.
HOLD_MAX = 60.0
#: Claims held at most; more are decided in memory at once.
MAX_HELD = 100
#: Keys decided locally during an outage that are handed to the store when it is back.
MAX_PENDING = 100
#: The retry thread looks at the clock at least this often (seconds).
POLL_SECONDS = 1.0


class _Held(NamedTuple):
    window: float
    since: float
    later: Later


class FallbackStore:
    """Wraps a shared store; never raises."""

    shared = True

    def __init__(
        self,
        store: Store,
        prefix: str = "",
        clock: Callable[[], float] = time.time,
        prepare: bool = True,
        thread_setup: Callable[[], None] = lambda: None,
    ) -> None:
        #: The shared store (SQLite, Redis) this one falls back from.
        self.store = store
        self.clock = clock
        self.description = store.description
        self.memory = MemoryStore(prefix=prefix, clock=clock)
        #: True while the shared store is not used (after a failure, until it answers).
        self.degraded = False
        #: Called first on the retry thread (the extension keeps its signals off it).
        self.thread_setup = thread_setup
        self._retry_at = 0.0
        self._delay = RETRY_MIN
        self._probing = False
        #: The store's clock times the warnings too (tests pass a fake one).
        self._warning = LimitedWarning(clock=clock)
        self._overdue_warning = LimitedWarning(clock=clock)
        self._pending: OrderedDict[str, float] = OrderedDict()
        self._held: OrderedDict[str, _Held] = OrderedDict()
        #: Keys a thread is asking the store about right now.
        self._deciding: set[str] = set()
        self._retrier: threading.Thread | None = None
        self._wake = threading.Event()
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")
        after_fork_in_child(self, FallbackStore._forget_held)
        if prepare:
            self.prepare()

    def prepare(self) -> None:
        """Check the shared store now; a failure starts the fallback (never raises)."""
        try:
            self.store.prepare()
        except Exception as exc:
            self._failed(exc, self.clock())

    def claim(self, key: str, window_seconds: float, later: Later | None = None) -> bool | None:
        """True: alert; False: a duplicate; None: held, ``later(won)`` follows."""
        now = self.clock()
        known = probe = False
        with self._lock:
            if key in self._deciding:
                return False  # another thread decides this key now: this one is a duplicate
            if self.degraded:
                known = not self.memory.claim(key, window_seconds)
                probe = later is None and now >= self._retry_at and not self._probing
                if not probe:
                    if known:
                        return False
                    if later is not None:
                        return self._hold(key, window_seconds, now, later)
                    return self._decide_here(key, window_seconds, now)
                self._probing = True
                self._retry_at = now + self._delay
            self._deciding.add(key)
        try:
            if probe:
                self._hand_over(now)
            won = self.store.claim(key, window_seconds) is True
        except Exception as exc:
            with self._lock:
                self._failed(exc, now)
                if not probe:  # was healthy: the memory has not been asked yet
                    known = not self.memory.claim(key, window_seconds)
                if known:
                    return False
                if later is not None:
                    return self._hold(key, window_seconds, now, later)
                return self._decide_here(key, window_seconds, now)
        finally:
            with self._lock:
                self._deciding.discard(key)
                if probe:
                    self._probing = False
        if probe:
            self._recovered()
        # Remembered, for while the store may be away.
        self.memory.claim(key, window_seconds)
        return won and not known

    def add_counters(
        self, app_key: str, deltas: Deltas, batch: Batch | None = None, *, retry_now: bool = False
    ) -> bool:
        """Add counts to the shared store: True once it has them, False otherwise.

        Never raises. While the store is away this returns False at once (before
        the next retry; ``retry_now``, at exit, tries anyway): the caller keeps
        the counts and sends the same batch again, which the store applies once.
        """
        now = self.clock()
        probe = False
        with self._lock:
            if self.degraded:
                if (now < self._retry_at or self._probing) and not retry_now:
                    return False
                self._probing = probe = True
                self._retry_at = now + self._delay
        try:
            if probe:
                self._hand_over(now)
            self.store.add_counters(app_key, deltas, batch)
        except Exception as exc:
            with self._lock:
                self._failed(exc, now)
            return False
        finally:
            if probe:
                self._probing = False
        if probe:
            self._recovered()
        return True

    def counters(self, app_key: str) -> dict[str, float]:
        """Every worker's counters of the app, read from the shared store (raises if away)."""
        return self.store.counters(app_key)

    # -- key states and latencies: the store's while it answers, this process's else --------
    def settle(
        self,
        key: str,
        seconds: float,
        first: bool,
        factor: float,
        window_seconds: float,
        started: float,
    ) -> Settled:
        """The store's rule for ``key``; while it is away, this process's memory's."""
        local = self.memory.settle(key, seconds, first, factor, window_seconds, started)
        if self.degraded:
            return local
        try:
            return self.store.settle(key, seconds, first, factor, window_seconds, started)
        except Exception as exc:
            with self._lock:
                self._failed(exc, self.clock())
            return local

    def key_states(self) -> dict[str, KeyState]:
        if not self.degraded:
            try:
                return self.store.key_states()
            except Exception as exc:
                with self._lock:
                    self._failed(exc, self.clock())
        return self.memory.key_states()

    def add_latencies(self, app_key: str, slot: int, histograms: Histograms) -> bool:
        """Add to the shared store; while it is away, to this process's memory (False)."""
        if not self.degraded:
            try:
                return self.store.add_latencies(app_key, slot, histograms)
            except Exception as exc:
                with self._lock:
                    self._failed(exc, self.clock())
        self.memory.add_latencies(app_key, slot, histograms)
        return False

    def latencies(self, app_key: str, endpoint: str, slots: Iterable[int]) -> dict[int, int]:
        hours = list(slots)
        if not self.degraded:
            try:
                return self.store.latencies(app_key, endpoint, hours)
            except Exception as exc:
                with self._lock:
                    self._failed(exc, self.clock())
        return self.memory.latencies(app_key, endpoint, hours)

    def close(self) -> None:
        try:
            self.store.close()
        except Exception:
            logger.debug("Closing %s failed", self.description, exc_info=True)

    # -- held claims ---------------------------------------------------------------------
    def _hold(self, key: str, window: float, now: float, later: Later) -> bool | None:
        """Hold the claim until the store answers (lock held); None, or True if full."""
        if len(self._held) >= MAX_HELD:
            return self._decide_here(key, window, now)
        if self._retrier is None:
            retrier = threading.Thread(
                target=self._retry_held, name="flask-perfalert-store", daemon=True
            )
            try:
                retrier.start()
            except RuntimeError:  # the process exits (3.12+ starts no thread then)
                return self._decide_here(key, window, now)
            self._retrier = retrier
        self._held[key] = _Held(window, now, later)
        _STORES_HOLDING.add(self)
        return None

    def _retry_held(self) -> None:
        self.thread_setup()
        while True:
            with self._lock:
                if not self._held:
                    self._retrier = None
                    return
                wait = self._retry_at - self.clock() if self.degraded else 0.0
            if wait > 0:
                self._wake.wait(min(wait, POLL_SECONDS))
                self._wake.clear()
            self.decide_held()

    def decide_held(self, final: bool = False) -> None:
        """Decide the held claims the store answers for now; those held too long, here.

        ``final`` (at exit): try the store once whatever the back-off, then
        decide the rest here, so no alert is lost.
        """
        now = self.clock()
        with self._lock:
            due = final or not self.degraded or (now >= self._retry_at and not self._probing)
            probe = due and self.degraded
            if probe:
                self._probing = True
                self._retry_at = now + self._delay
            held = list(self._held.items())
        decided: list[tuple[Later, bool]] = []
        if due and held:
            try:
                if probe:
                    self._hand_over(now)
                for key, claim in held:
                    left = max(claim.window - (now - claim.since), 0.001)
                    won = self.store.claim(key, left) is True
                    with self._lock:
                        del self._held[key]
                    decided.append((claim.later, won))
                if probe:
                    self._recovered()
            except Exception as exc:
                with self._lock:
                    self._failed(exc, now)
            finally:
                if probe:
                    self._probing = False
        overdue = 0
        with self._lock:
            for key, claim in list(self._held.items()):
                if final or now - claim.since >= HOLD_MAX:
                    del self._held[key]
                    self._note_pending(key, claim.since + claim.window)
                    decided.append((claim.later, True))
                    overdue += 1
        if overdue:
            self._overdue_warning.warn(
                "%d slow endpoint(s) decided in this process %s, the alert store %s being "
                "away: other processes may alert for them too",
                overdue,
                "as it exits" if final else f"after {HOLD_MAX:.0f} s",
                self.description,
                now=now,
            )
        for later, won in decided:
            try:
                later(won)
            except Exception:
                logger.exception("Flask-PerfAlert failed to send a held alert")

    def _forget_held(self) -> None:
        # In a forked child: the parent's held alerts are the parent's to send.
        self._held = OrderedDict()
        self._retrier = None
        self._wake = threading.Event()
        self._probing = False

    # -- internals ----------------------------------------------------------------------
    def _decide_here(self, key: str, window_seconds: float, now: float) -> bool:
        """Decide in memory (lock held): the memory has just noted the key, so it wins here."""
        self._note_pending(key, now + window_seconds)
        return True

    def _note_pending(self, key: str, expires: float) -> None:
        self._pending[key] = expires
        self._pending.move_to_end(key)
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
            "The alert store %s is not available (%s); slow requests wait for it to decide "
            "(those that cannot wait are de-duplicated in this process's memory; counts "
            "wait in this process; next try in %.0f s)",
            self.description,
            reason,
            self._delay,
            now=now,
        )

    def _hand_over(self, now: float) -> None:
        """Claim in the shared store what was decided here during the outage.

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
                for key, expires in pending.items():
                    self._note_pending(key, expires)
            raise

    def _recovered(self) -> None:
        with self._lock:
            was_degraded = self.degraded
            self.degraded = False
            self._delay = RETRY_MIN
        self._wake.set()  # the held claims are decided now
        if was_degraded:
            logger.info(
                "The alert store %s is back; de-duplication is shared again.", self.description
            )


#: Stores holding claims: at exit, each decides them, so no alert is lost.
_STORES_HOLDING: weakref.WeakSet[FallbackStore] = weakref.WeakSet()


def decide_held_at_exit() -> None:
    """Decide every held claim of this process: the last try of each store, then here.

    The events thread runs it first at exit (the alerts it decides are then
    sent); registered here too, for a process that has no events thread.
    """
    for store in list(_STORES_HOLDING):
        store.decide_held(final=True)


atexit.register(decide_held_at_exit)
