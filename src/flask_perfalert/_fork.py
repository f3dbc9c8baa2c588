"""Locks and state that survive ``fork``: a lock held by another thread at the moment
of a fork would stay held forever in the child (gunicorn ``--preload`` forks workers
from a master that may have used the store), and a thread of the parent does not
exist in the child."""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def after_fork_in_child(obj: T, action: Callable[[T], None]) -> None:
    """Call ``action(obj)`` in every forked child, while ``obj`` lives."""
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - not POSIX
        return
    ref = weakref.ref(obj)

    def run() -> None:
        target = ref()
        if target is not None:
            action(target)

    os.register_at_fork(after_in_child=run)


def renew_locks_after_fork(obj: object, *attributes: str) -> None:
    """Give ``obj`` fresh locks in ``attributes`` in every forked child."""

    def renew(target: object) -> None:
        for name in attributes:
            setattr(target, name, threading.Lock())

    after_fork_in_child(obj, renew)
