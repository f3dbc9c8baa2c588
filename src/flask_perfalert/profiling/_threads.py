"""Threads the app does not see, and reading other threads' stacks safely.

The sampler must run on a real operating-system thread, whatever the app's
green-thread library has patched: under gevent or eventlet, ``threading`` and
its locks make greenlets that never run while a request keeps the CPU.
The originals are looked up when the sampler starts (gunicorn's gevent worker
patches after the app was imported, and after a ``--preload`` fork).
"""

from __future__ import annotations

import functools
import gc
import itertools
import operator
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any


def green_library() -> str | None:
    """The name of the green-thread library that patched ``threading``, if any."""
    gevent_monkey = sys.modules.get("gevent.monkey")
    if gevent_monkey is not None and gevent_monkey.is_module_patched("threading"):
        return "gevent"
    eventlet_patcher = sys.modules.get("eventlet.patcher")
    if eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("thread"):
        return "eventlet"
    return None


def _original(module: str, name: str) -> Any:
    library = green_library()
    if library == "gevent":
        return sys.modules["gevent.monkey"].get_original(module, name)
    if library == "eventlet":
        return getattr(sys.modules["eventlet.patcher"].original(module), name)
    return getattr(__import__(module), name)


class OSThreads:
    """The operating system's own thread primitives, unpatched."""

    def __init__(self) -> None:
        self.green = green_library()
        self.start_new_thread: Callable[..., int] = _original("_thread", "start_new_thread")
        self.get_ident: Callable[[], int] = _original("_thread", "get_ident")
        self.allocate_lock: Callable[[], Any] = _original("_thread", "allocate_lock")
        #: The running greenlet (the unit of work under gevent/eventlet), else None.
        self.current_greenlet: Callable[[], Any] | None = None
        if self.green is not None:
            from greenlet import getcurrent

            self.current_greenlet = getcurrent


# -- sys._current_frames() ------------------------------------------------------------
# CPython gh-106883: on 3.11.0 to 3.11.8, a garbage collection that starts inside
# sys._current_frames() (it allocates while holding the runtime's thread-list lock) can
# deadlock the process. The fixed versions disable collection inside the call. We may not
# touch the app's gc settings, so on the affected versions the call is made only when
# the collector's youngest generation is far enough below its threshold that the few
# objects the call allocates cannot start a collection; the check and the call run in
# one chain of C calls (no bytecode between them, so no other thread runs and
# allocates in between). When the count is too close, this thread first allocates
# (and drops) a few empty lists: the young collection the app's next allocations
# would have started runs a moment early, here, outside the lock.
NEEDS_GC_HEADROOM = (3, 11, 0) <= sys.version_info[:3] <= (3, 11, 8)

#: Calls its argument, in C (a Python function would run bytecode).
_CALL = operator.methodcaller("__call__")
#: Objects sys._current_frames() may allocate beyond one frame object per thread.
_ALLOCATION_MARGIN = 16


def current_frames(
    threads_hint: int = 8, guarded: bool = NEEDS_GC_HEADROOM
) -> dict[int, FrameType] | None:
    """``sys._current_frames()``, or None when taking it now could deadlock (see above)."""
    if not guarded or not gc.isenabled():
        return sys._current_frames()
    threshold = gc.get_threshold()[0]
    if threshold <= 0:  # automatic collection is off
        return sys._current_frames()
    limit = threshold - threads_hint - _ALLOCATION_MARGIN
    if limit <= _ALLOCATION_MARGIN:
        return None
    for _ in range(2):
        # (limit,) > gc.get_count() holds when the young count is below limit; the
        # second item, (0, frames), always passes, and is only made if the first did.
        then_frames = functools.partial(tuple, map(_CALL, (int, sys._current_frames)))
        calls = map(_CALL, (gc.get_count, then_frames))
        taken = list(itertools.takewhile((limit,).__gt__, calls))
        if len(taken) == 2:
            frames: dict[int, FrameType] = taken[1][1]
            return frames
        _make_headroom(threshold, limit - _ALLOCATION_MARGIN)
    return None


def _make_headroom(threshold: int, limit: int) -> None:
    """Allocate until the young generation is below ``limit`` (a collection ran)."""
    held: list[list[None]] = []
    for _ in range(threshold + 1):
        if gc.get_count()[0] < limit:
            break
        held.append([])
