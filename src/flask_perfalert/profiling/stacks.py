"""Reading the stacks of the work being sampled: which reader, and what it can do here.

Two readers give the same stacks (frame identifiers, the root first):

* the compiled reader (``_stackreader.c``) walks the interpreter's own frame
  records without making frame objects or any other object while it walks, so
  no garbage collection can start mid-read, whatever the app's gc settings,
  and a sample of a 30-frame stack holds the interpreter lock for about a
  microsecond;
* the pure-Python reader (``_threads.read_stacks``) makes frame objects; on
  CPython 3.11 it reads only while the collector's youngest generation has room
  (see ``_threads``), so with a very small gc threshold it cannot read at all,
  and says so once.

The compiled reader is used where it was built, unless the environment sets
``FLASK_PERFALERT_PURE_PYTHON=1`` (the test suite runs both). On a
free-threaded CPython neither is safe: reading another thread's frames there is
a use-after-free, so sampling is off (:data:`UNAVAILABLE` says why).
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import sysconfig
from collections.abc import Callable
from types import CoroutineType, GeneratorType, ModuleType
from typing import Any

from . import _threads
from .session import line_identifier, stack_of

logger = logging.getLogger("flask_perfalert")

Stack = tuple[str, ...]
#: Coroutines of one await chain read at most.
_AWAIT_DEPTH = 50
#: How many threads the process has, and the stacks of the threads asked for.
ThreadStacks = tuple[int, dict[int, Stack]]


def _free_threaded() -> bool:
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        return False
    gil_enabled = getattr(sys, "_is_gil_enabled", None)
    return gil_enabled is None or not gil_enabled()


def _load_compiled() -> ModuleType | None:
    if os.environ.get("FLASK_PERFALERT_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _stackreader
    except ImportError:
        return None
    _stackreader.set_identifier_factory(line_identifier)
    return _stackreader


#: Why stacks cannot be sampled in this process, or None.
UNAVAILABLE: str | None = (
    "sampling is off on free-threaded CPython: reading another thread's frames is unsafe there"
    if _free_threaded()
    else None
)
_compiled = None if UNAVAILABLE else _load_compiled()
#: Which reader this process uses: "compiled", "python", or "off".
READER = "off" if UNAVAILABLE else ("compiled" if _compiled is not None else "python")


def refusal() -> str | None:
    """Why the last refused read could not be made safely, if it is more than a moment."""
    if READER != "python" or _threads.too_small is None:
        return None
    threshold, needed = _threads.too_small
    if gc.get_threshold()[0] != threshold or not gc.isenabled():
        return None
    return (
        f"the garbage collector's threshold ({threshold}, set by gc.set_threshold) leaves "
        f"the pure-Python stack reader of CPython 3.11 no room to read safely (it needs "
        f"more than {needed}); the compiled reader has no such limit"
    )


def _read_stacks_python(thread_ids: tuple[int, ...], threads_hint: int = 8) -> ThreadStacks | None:
    frames = _threads.read_stacks(thread_ids, threads_hint)
    if frames is None:
        return None
    count, by_thread = frames
    return count, {thread: stack_of(f) for thread, f in by_thread.items()}


#: ``read_stacks(thread_ids, threads_hint)``: the stacks of ``thread_ids`` (a tuple),
#: or None when they cannot be read now. With the compiled reader it is the C
#: function itself: a sample makes no Python call to read stacks.
read_stacks: Callable[[tuple[int, ...], int], ThreadStacks | None] = (
    _read_stacks_python if _compiled is None else _compiled.read_stacks
)


#: Objects the collector tracks that one tick of the sampler makes besides its stacks
#: (the list of work, its entries), and those each thread sampled adds.
_TICK_OBJECTS = 32
_OBJECTS_PER_THREAD = 8


def _young_gc_room_python(needed: int) -> bool:
    if not gc.isenabled():
        return True
    threshold = gc.get_threshold()[0]
    if threshold <= 0:
        return True
    return gc.get_count()[0] + min(needed, threshold // 2) < threshold


_young_gc_room: Callable[[int], bool] = (
    _young_gc_room_python if _compiled is None else _compiled.young_gc_room
)


def gc_room(threads: int) -> bool:
    """Whether a tick sampling ``threads`` threads can run now without starting a collection.

    Any allocation that takes the collector's young generation over its
    threshold makes the thread that allocates run the collection, and with it
    every finalizer and weakref callback of the app's garbage: under an app
    whose finalizers release the GIL while other threads keep the CPU, that
    is seconds without a sample, and the next collection, due by then, falls
    to the sampler again. So the sampler waits a moment while the young
    generation is nearly full: the app's next allocation runs the collection
    on the app's own thread, as it would without the extension. With the
    compiled reader the check reads the collector's counters and makes no
    object; the pure-Python one makes two tuples, and on 3.11 its reads need
    room for their frame objects too (see ``_threads``).
    """
    needed = _TICK_OBJECTS + _OBJECTS_PER_THREAD * threads
    if _compiled is None and _threads.NEEDS_GC_HEADROOM:
        needed += threads * _threads.FRAME_OBJECTS_PER_THREAD
    return _young_gc_room(needed)


def greenlet_stack(greenlet: Any) -> Stack | None:
    """A suspended greenlet's stack; () if it runs or ended; None if not readable now."""
    if _compiled is not None:
        # A suspended greenlet keeps the frame object of its top frame (made when it
        # switched out), so this makes no frame object; its callers are walked in C.
        top = greenlet.gr_frame
        stack: Stack | None = _compiled.read_frame(top)
        return stack
    frames = _threads.greenlet_frames(greenlet)
    return None if frames is None else stack_of(frames)


def awaiting_stack(coroutine: Any) -> Stack | None:
    """What a suspended coroutine awaits, the coroutine first; None while it runs.

    Its frames are then on no thread's stack: the compiled reader reads each
    coroutine of the await chain from the interpreter's record of it; the
    pure-Python reader from its frame object (one each, made under the same
    guard as its stack reads on CPython 3.11).
    """
    if _compiled is not None:
        read: Stack | None = _compiled.read_awaiting(coroutine, _AWAIT_DEPTH)
        return read
    stack: list[str] = []
    current = coroutine
    for _ in range(_AWAIT_DEPTH):
        if isinstance(current, CoroutineType):
            running, attribute, awaits = current.cr_running, "cr_frame", "cr_await"
        elif isinstance(current, GeneratorType):  # a generator-based coroutine, yield from
            running, attribute, awaits = current.gi_running, "gi_frame", "gi_yieldfrom"
        else:  # a future, or the end of the chain
            break
        if running:
            return None
        frame = _threads.guarded_attribute(current, attribute)
        if frame is None:
            break
        stack.append(line_identifier(frame.f_code, frame.f_lineno or 0))
        current = getattr(current, awaits)
    return tuple(stack)


def own_stack() -> Stack:
    """The calling thread's own stack (for checks and tests)."""
    if _compiled is not None:
        return _compiled.read_frame(sys._getframe(1)) or ()
    return stack_of(_threads.frames_of(sys._getframe(1)))
