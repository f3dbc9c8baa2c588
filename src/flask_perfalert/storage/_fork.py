"""Locks and state that survive ``fork``: a lock held by another thread at the moment
of a fork would stay held forever in the child (gunicorn ``--preload`` forks workers
from a master that may have used the store), and a thread of the parent does not
exist in the child."""

from __future__ import annotations

import os
import threading
import weakref


def renew_locks_after_fork(obj: object, *attributes: str) -> None:
    """Give ``obj`` fresh locks in ``attributes`` in every forked child."""
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - not POSIX
        return
    ref = weakref.ref(obj)

    def renew() -> None:
        target = ref()
        if target is not None:
            for name in attributes:
                setattr(target, name, threading.Lock())

    os.register_at_fork(after_in_child=renew)


def reset_after_fork(obj: object, method: str) -> None:
    """Call ``obj.<method>()`` in every forked child (after its locks are renewed)."""
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - not POSIX
        return
    ref = weakref.ref(obj)

    def reset() -> None:
        target = ref()
        if target is not None:
            getattr(target, method)()

    os.register_at_fork(after_in_child=reset)
