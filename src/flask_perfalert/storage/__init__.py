"""Where the de-duplication window is kept.

``claim(key, window)`` is the one decision: it returns True for exactly one
caller per key per window (that caller alerts), False for every other. Keys
expire by themselves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from .memory import MemoryStore

__all__ = ["AlertStore", "MemoryStore", "open_store"]

Clock = Callable[[], float]


class AlertStore(Protocol):
    #: Short description for logs and ``flask perfalert config`` (no credentials).
    description: str

    def claim(self, key: str, window_seconds: float) -> bool:
        """True if no alert for ``key`` was claimed inside the window; claims it."""

    def close(self) -> None:
        """Release connections."""


def open_store(uri: str, prefix: str, clock: Clock = time.time) -> AlertStore:
    """The store for ``PERFALERT_STORAGE_URI``; raises ValueError for an unknown scheme."""
    scheme = uri.partition("://")[0].lower()
    if scheme == "memory":
        return MemoryStore(prefix=prefix, clock=clock)
    raise ValueError(f"unsupported PERFALERT_STORAGE_URI scheme {scheme!r}")
