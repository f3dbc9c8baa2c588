"""Where the de-duplication window is kept.

``claim(key, window)`` is the one decision: it returns True for exactly one
caller per key per window (that caller alerts), False for every other. Keys
expire by themselves. Every store follows the one protocol of :mod:`.base`.

``PERFALERT_STORAGE_URI`` chooses the store:

* ``memory://``: this process only (:mod:`.memory`);
* ``sqlite:///path/to/perfalert.db``: every worker of one host, across
  restarts (:mod:`.sqlite`);
* ``redis://host:port/db``, ``rediss://...``: every worker of every host
  (:mod:`.redis`, needs the ``flask-perfalert[redis]`` extra).

A shared store is wrapped in a :class:`~.fallback.FallbackStore`: when it does
not answer, the window is kept in memory meanwhile, and ``claim`` never raises.
The shared stores also sum every worker's counters (``add_counters``,
``counters``); ``memory://`` keeps none (``shared`` is False), so ``flask
perfalert stats`` shows its own process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .base import Clock, Store, masked_uri
from .fallback import FallbackStore
from .memory import MemoryStore
from .redis import RedisStore
from .sqlite import SQLiteStore

__all__ = ["FallbackStore", "MemoryStore", "Store", "masked_uri", "open_store"]

SCHEMES = ("memory", "sqlite", "redis", "rediss")


def open_store(
    uri: str,
    prefix: str,
    clock: Clock = time.time,
    thread_setup: Callable[[], None] = lambda: None,
) -> Store:
    """The store for ``PERFALERT_STORAGE_URI``.

    ``thread_setup`` is called first on the thread a shared store starts to
    decide held claims (see :class:`~.fallback.FallbackStore`).

    Raises ValueError for an unknown scheme or an unusable address (a missing
    folder), RuntimeError when the ``redis`` package is missing; the messages
    say what to change and never contain credentials. A shared store that is
    merely unreachable does not raise: it is used once it answers.
    """
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    if scheme == "memory":
        return MemoryStore(prefix=prefix, clock=clock)
    if scheme == "sqlite":
        shared: Store = SQLiteStore.from_uri(uri, prefix, clock)
        return FallbackStore(shared, prefix, clock, thread_setup=thread_setup)
    if scheme in ("redis", "rediss"):
        return FallbackStore(
            RedisStore(uri, prefix, clock), prefix, clock, thread_setup=thread_setup
        )
    supported = ", ".join(f"{name}://" for name in SCHEMES)
    if not scheme:
        raise ValueError(f"PERFALERT_STORAGE_URI is not a URI; use one of {supported}")
    raise ValueError(f"unsupported PERFALERT_STORAGE_URI scheme {scheme!r}; use one of {supported}")
