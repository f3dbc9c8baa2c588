"""Where the de-duplication window is kept.

``claim(key, window)`` is the one decision: it returns True for exactly one
caller per key per window (that caller alerts), False for every other. Keys
expire by themselves.

``PERFALERT_STORAGE_URI`` chooses the store:

* ``memory://``: this process only (:mod:`.memory`);
* ``sqlite:///path/to/perfalert.db``: every worker of one host, across
  restarts (:mod:`.sqlite`);
* ``redis://host:port/db``, ``rediss://...``: every worker of every host
  (:mod:`.redis`, needs the ``flask-perfalert[redis]`` extra).

A shared store is wrapped in a :class:`~.fallback.FallbackStore`: when it does
not answer, the window is kept in memory meanwhile, and ``claim`` never raises.

The shared stores also sum every worker's counters: ``add_counters(app_key,
deltas, batch)`` and ``counters(app_key)`` (see ``flask_perfalert._counters``);
``MemoryStore`` has neither, so ``flask perfalert stats`` shows its own process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Protocol

from .fallback import FallbackStore
from .memory import MemoryStore

__all__ = ["AlertStore", "FallbackStore", "MemoryStore", "masked_uri", "open_store"]

Clock = Callable[[], float]

SCHEMES = ("memory", "sqlite", "redis", "rediss")

_MASK = "**********"
_PASSWORD = re.compile(r"(?<=://)([^/@?#]*?):([^/@?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&][^=&#]*pass[^=&#]*=)[^&#]*")


def masked_uri(uri: str) -> str:
    """``uri`` with the password (``redis://:secret@host``, ``?password=``) masked."""
    uri = _PASSWORD.sub(lambda m: f"{m.group(1)}:{_MASK}@", uri)
    return _QUERY_PASSWORD.sub(lambda m: m.group(1) + _MASK, uri)


class AlertStore(Protocol):
    #: Short description for logs and ``flask perfalert config`` (no credentials).
    description: str

    def claim(self, key: str, window_seconds: float) -> bool:
        """True if no alert for ``key`` was claimed inside the window; claims it."""

    def close(self) -> None:
        """Release connections."""


def open_store(uri: str, prefix: str, clock: Clock = time.time) -> AlertStore:
    """The store for ``PERFALERT_STORAGE_URI``.

    Raises ValueError for an unknown scheme or an unusable address (a missing
    folder), RuntimeError when the ``redis`` package is missing; the messages
    say what to change and never contain credentials. A shared store that is
    merely unreachable does not raise: it is used once it answers.
    """
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    if scheme == "memory":
        return MemoryStore(prefix=prefix, clock=clock)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return FallbackStore(SQLiteStore.from_uri(uri, prefix, clock), prefix, clock)
    if scheme in ("redis", "rediss"):
        from .redis import RedisStore

        return FallbackStore(RedisStore(uri, prefix, clock), prefix, clock)
    supported = ", ".join(f"{name}://" for name in SCHEMES)
    if not scheme:
        raise ValueError(f"PERFALERT_STORAGE_URI is not a URI; use one of {supported}")
    raise ValueError(f"unsupported PERFALERT_STORAGE_URI scheme {scheme!r}; use one of {supported}")
