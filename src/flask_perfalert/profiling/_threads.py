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
from collections.abc import Callable, Iterable, Iterator, Sequence
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


# -- reading stacks ------------------------------------------------------------------
# Reading another thread's stack makes frame objects for its frames (CPython 3.11 makes
# them lazily, on sys._current_frames() and on each ``f_back``). On 3.11 the allocation
# of such a frame object can start a garbage collection, and a collection runs
# finalizers and weakref callbacks: Python code, on the sampler thread, between whose
# bytecodes the interpreter may hand the GIL to the thread being read. That thread then
# returns from the very frame whose object is being made, and CPython writes the new
# object into the freed frame: memory corruption, seen as crashes of the app's threads
# and as ``f_back`` returning objects that are not frames. (On 3.12 and later a
# collection starts only between bytecodes; 3.10 makes no frame objects lazily.)
#
# So, on 3.11, the sampler makes frame objects only while the collector's youngest
# generation is far enough below its threshold that the objects made cannot start a
# collection; the check and the reading run in one chain of C calls, no bytecode in
# between, so no other thread runs or allocates meanwhile. The same guard avoids CPython
# gh-106883 (3.11.0 to 3.11.8: a collection inside sys._current_frames(), which holds
# the runtime's thread-list lock, can deadlock the process). We may not touch the app's
# gc settings: when the count is too close, this thread first allocates (and drops) a
# few empty lists, so the young collection the app's next allocations would have
# started runs a moment early, here, while no frame object is half made.
#
# Each thread's frames are read ``_FRAMES_PER_READ`` at a time, innermost first, which
# bounds the objects one guarded read can make; a deeper stack is read on from its last
# frame by further guarded reads. Only ``f_code`` and ``f_lineno`` are read afterwards:
# they stay valid after a frame returns.
NEEDS_GC_HEADROOM = sys.version_info[:2] == (3, 11)

#: Calls its argument, in C (a Python function would run bytecode).
_CALL = operator.methodcaller("__call__")
#: Objects a read may allocate besides frame objects (the dict, tuples, iterators).
_ALLOCATION_MARGIN = 16
#: Frames of one thread read by one guarded read.
_FRAMES_PER_READ = 32
#: Frame objects one guarded read may make for each thread asked for.
FRAME_OBJECTS_PER_THREAD = _FRAMES_PER_READ + 1

#: The last read refused because the gc threshold leaves no room for it at all:
#: (the threshold, the threshold it would need), or None.
too_small: tuple[int, int] | None = None

Frames = tuple[FrameType, ...]
#: How many threads the process has, and the frames of the threads asked for.
ThreadStacks = tuple[int, dict[int, Frames]]


def _chains(
    tops: Iterable[FrameType | None], limit: int = _FRAMES_PER_READ, skip: int = 0
) -> Iterator[Frames]:
    """For each frame of ``tops``: it, its ``f_back`` and so on, innermost first.

    At most ``limit`` frames each, after leaving out the first ``skip``; a chain
    ends at the first None. Lazy, and made of C iterators only: consumed by a C
    call, no bytecode runs.
    """
    as_frames: Callable[[Iterable[Any]], Frames] = tuple
    walks = map(
        itertools.accumulate,
        map(itertools.chain, zip(tops), itertools.repeat(itertools.repeat("f_back"))),
        itertools.repeat(getattr),
    )
    window = map(itertools.islice, walks, itertools.repeat(skip), itertools.repeat(skip + limit))
    return map(as_frames, map(itertools.takewhile, itertools.repeat(operator.truth), window))


def frames_of(frame: FrameType | None) -> Frames:
    """``frame`` and its callers, innermost first (for this thread's own frames)."""
    return next(_chains((frame,), sys.getrecursionlimit() + 1))


def greenlet_frames(greenlet: Any) -> Frames | None:
    """A suspended greenlet's frames, innermost first; () if it runs or ended.

    None when they cannot be read safely now (see above).
    """
    first = itertools.accumulate(
        itertools.chain((greenlet, "gr_frame"), itertools.repeat("f_back")), getattr
    )
    window = itertools.islice(first, 1, 1 + _FRAMES_PER_READ)
    read = _guarded(functools.partial(tuple, itertools.takewhile(operator.truth, window)), 0)
    if read is None:
        return None
    frames: Frames = read
    return _read_on(frames)


def guarded_attribute(obj: Any, name: str) -> Any:
    """``getattr(obj, name)`` for an attribute that may make a frame object (see above).

    None when it cannot be read safely now.
    """
    return _guarded(functools.partial(operator.attrgetter(name), obj), 0)


def _guarded(read: Callable[[], Any], threads: int, threads_asked: int = 1) -> Any:
    """``read()`` (a C callable), or None when the objects it makes could start a collection.

    ``threads`` frame objects for the tops of every thread, and ``_FRAMES_PER_READ``
    for each of ``threads_asked`` threads, may be made.
    """
    if not NEEDS_GC_HEADROOM or not gc.isenabled():
        return read()
    threshold = gc.get_threshold()[0]
    if threshold <= 0:  # automatic collection is off
        return read()
    allocations = threads + threads_asked * FRAME_OBJECTS_PER_THREAD + _ALLOCATION_MARGIN
    limit = threshold - allocations
    if limit <= _ALLOCATION_MARGIN:
        global too_small
        too_small = (threshold, allocations + _ALLOCATION_MARGIN)
        return None
    for _ in range(2):
        # (limit,) > gc.get_count() holds when the young count is below limit; the
        # second item, (0, result), always passes, and is only made if the first did.
        then_read = functools.partial(tuple, itertools.chain((0,), map(_CALL, (read,))))
        calls = map(_CALL, (gc.get_count, then_read))
        taken = list(itertools.takewhile((limit,).__gt__, calls))
        if len(taken) == 2:
            return taken[1][1]
        _make_headroom(threshold, limit - _ALLOCATION_MARGIN)
    return None


def _read_on(frames: Frames) -> Frames | None:
    """``frames`` and, if it filled its read, the rest of the stack below its last frame."""
    while len(frames) % _FRAMES_PER_READ == 0 and frames:
        more: Frames | None = _guarded(functools.partial(next, _chains((frames[-1],), skip=1)), 0)
        if more is None:
            return None
        if not more:
            break
        frames += more
    return frames


def _reader(thread_ids: Sequence[int]) -> Callable[[], tuple[Any, ...]]:
    """One C callable: ``sys._current_frames()``, its size, and the chains asked for."""
    taken = map(_CALL, (sys._current_frames,))
    for_count, for_stacks = itertools.tee(taken)
    tops = map(
        dict.get,
        itertools.chain.from_iterable(map(itertools.repeat, for_stacks, (len(thread_ids),))),
        thread_ids,
    )
    chains = zip(thread_ids, _chains(tops), strict=True)
    return functools.partial(tuple, itertools.chain(map(len, for_count), map(dict, (chains,))))


def read_stacks(thread_ids: Sequence[int], threads_hint: int = 8) -> ThreadStacks | None:
    """The frames of ``thread_ids`` (see above), or None when they cannot be read safely now.

    ``threads_hint``: how many threads the process had at the last read.
    """
    read = _guarded(_reader(thread_ids), threads_hint, len(thread_ids))
    if read is None:
        return None
    count, stacks = read
    for thread, frames in stacks.items():
        whole = _read_on(frames)
        if whole is None:
            return None
        stacks[thread] = whole
    return count, stacks


def _make_headroom(threshold: int, limit: int) -> None:
    """Allocate until the young generation is below ``limit`` (a collection ran)."""
    held: list[list[None]] = []
    for _ in range(threshold + 1):
        if gc.get_count()[0] < limit:
            break
        held.append([])
