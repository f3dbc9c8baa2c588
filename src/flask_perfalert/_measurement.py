"""One timed unit of work: a request or a call of a watched function.

A :class:`Measurement` is created when the work starts and closed when it
ends. While it runs, the sampler may add stack samples to it; they are kept
as a table of distinct stacks with their accumulated time, so a request that
runs for minutes costs memory by the variety of its stacks, not its length.
"""

from __future__ import annotations

import time
from types import CodeType
from typing import Any

from ._pyinstrument_compat import synthetic_identifier

#: Distinct stacks kept per measurement before samples are merged.
MAX_DISTINCT_STACKS = 5_000
_OVERFLOW_STACK = (synthetic_identifier("[samples merged: too many distinct stacks]"),)


def _without_lines(stack: tuple[str, ...]) -> tuple[str, ...]:
    # Dropping the line attributes merges samples by function, which is what a
    # call tree shows anyway; only the per-line detail is lost.
    return tuple(info.split("\x01l", 1)[0] for info in stack)


def _cpu_clock(thread_id: int) -> int | None:
    try:
        return time.pthread_getcpuclockid(thread_id)
    except (AttributeError, OSError, OverflowError):  # not Linux/BSD, or a gone thread
        return None


class Measurement:
    """The samples of one armed entry (see ``_sampler``), or its pyinstrument profile."""

    __slots__ = (
        "start",
        "thread_id",
        "arm_at",
        "skip",
        "stop_code",
        "linked_threads",
        "stacks",
        "sample_count",
        "first_sample_at",
        "last_sample_at",
        "interval",
        "environ",
        "cpu_clock",
        "cpu_first",
        "cpu_last",
    )

    def __init__(
        self,
        start: float,
        thread_id: int,
        arm_at: float,
        stop_code: CodeType | None = None,
        skip: bool = False,
    ) -> None:
        self.start = start
        self.thread_id = thread_id
        self.arm_at = arm_at
        #: Set when the work turns out to be excluded from monitoring.
        self.skip = skip
        #: For a watched function: its code; frames of its callers are left out.
        self.stop_code = stop_code
        #: Threads doing this work too (the event loop of an async view).
        self.linked_threads: list[int] = []
        self.stacks: dict[tuple[str, ...], float] = {}
        self.sample_count = 0
        self.first_sample_at = 0.0
        self.last_sample_at = 0.0
        self.interval = 0.0
        #: A request's WSGI environ until its Flask request has been captured.
        self.environ: dict[str, Any] | None = None
        #: The thread's CPU clock, read at the first and the last sample.
        self.cpu_clock = _cpu_clock(thread_id)
        self.cpu_first = self.cpu_last = 0.0

    def add_sample(self, stack: tuple[str, ...], now: float) -> None:
        """Count ``stack`` for the time since the previous sample (or the arm point)."""
        if self.cpu_clock is not None:
            try:
                self.cpu_last = time.clock_gettime(self.cpu_clock)
            except OSError:  # the thread has just ended
                self.cpu_clock = None
        if self.sample_count == 0:
            self.first_sample_at = previous = self.arm_at
            self.cpu_first = self.cpu_last
        else:
            previous = self.last_sample_at
        self.last_sample_at = now
        self.sample_count += 1
        seconds = now - previous
        stacks = self.stacks
        if stack not in stacks and len(stacks) >= MAX_DISTINCT_STACKS:
            stack = _without_lines(stack)
            if stack not in stacks and len(stacks) >= 2 * MAX_DISTINCT_STACKS:
                stack = _OVERFLOW_STACK
        stacks[stack] = stacks.get(stack, 0.0) + seconds
