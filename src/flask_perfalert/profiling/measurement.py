"""The samples of one unit of work, made when the sampler arms it.

They are kept as a table of distinct stacks with their accumulated time, so a
request that runs for minutes costs memory by the variety of its stacks, not
its length.
"""

from __future__ import annotations

import time
from types import CodeType

from .session import synthetic_identifier

#: Distinct stacks kept per measurement before samples are merged.
MAX_DISTINCT_STACKS = 5_000
_OVERFLOW_STACK = (synthetic_identifier("[samples merged: too many distinct stacks]"),)


def _without_lines(stack: tuple[str, ...]) -> tuple[str, ...]:
    # Dropping the line attributes merges samples by function, which is what a
    # call tree shows anyway; only the per-line detail is lost.
    return tuple(info.split("\x01l", 1)[0] for info in stack)


def _cpu_clock(thread_id: int | None) -> int | None:
    if thread_id is None:
        return None
    try:
        return time.pthread_getcpuclockid(thread_id)
    except (AttributeError, OSError, OverflowError):  # not Linux/BSD, or a gone thread
        return None


class Measurement:
    """The stack samples of one armed request or watched call."""

    __slots__ = (
        "start",
        "arm_at",
        "routed",
        "skip",
        "stop_code",
        "_stacks",
        "_last_stack",
        "_last_seconds",
        "sample_count",
        "first_sample_at",
        "last_sample_at",
        "interval",
        "cpu_clock",
        "cpu_first",
        "cpu_last",
        "refused",
        "refusal",
    )

    def __init__(
        self,
        start: float,
        arm_at: float,
        stop_code: CodeType | None = None,
        skip: bool = False,
        cpu_thread: int | None = None,
    ) -> None:
        self.start = start
        #: ``perf_counter()`` time of the first sample.
        self.arm_at = arm_at
        #: For a request: its endpoint is known (and with it its threshold).
        self.routed = False
        #: Set when the work turns out to need no samples (excluded, or not sampling).
        self.skip = skip
        #: For a watched function: its code; frames of its callers are left out.
        self.stop_code = stop_code
        self._stacks: dict[tuple[str, ...], float] = {}
        #: The latest sample's stack and the time counted for it since it last changed:
        #: a stack that stays the same (the reader gives the same tuple) is not hashed.
        self._last_stack: tuple[str, ...] | None = None
        self._last_seconds = 0.0
        self.sample_count = 0
        self.first_sample_at = 0.0
        self.last_sample_at = 0.0
        self.interval = 0.0
        #: The thread's CPU clock (not for greenlets, which share their thread's).
        self.cpu_clock = _cpu_clock(cpu_thread)
        self.cpu_first = self.cpu_last = 0.0
        #: Reads refused while this work was armed, and why (if more than a moment).
        self.refused = 0
        self.refusal: str | None = None

    def add_sample(self, stack: tuple[str, ...], now: float) -> None:
        """Count ``stack`` for the time since the previous sample.

        The first sample is counted from the start of the work: the time before
        the arm point, never sampled, goes to the stack the work had when sampling
        began, its best estimate (without it, every share in the profile would be
        off by the unsampled start).
        """
        # The work's CPU time: a system call, so read at the first sample and every
        # eighth after it (the last reading is at most eight samples old).
        if self.cpu_clock is not None and not self.sample_count & 7:
            self.read_cpu()
        if self.sample_count == 0:
            self.first_sample_at = self.arm_at
            previous = self.start
            self.cpu_first = self.cpu_last
        else:
            previous = self.last_sample_at
        self.last_sample_at = now
        self.sample_count += 1
        seconds = now - previous
        if stack is self._last_stack:
            self._last_seconds += seconds
            return
        self._flush()
        self._last_stack = stack
        self._last_seconds = seconds

    def read_cpu(self) -> None:
        """Read the work's thread's CPU clock: at samples, and once when the work ends.

        The reading at the end makes the CPU time right for work with few samples
        (a loaded machine, a long interval), whose every-eighth readings may be
        only the first.
        """
        clock = self.cpu_clock
        if clock is None:
            return
        try:
            self.cpu_last = time.clock_gettime(clock)
        except OSError:  # the thread has just ended
            self.cpu_clock = None

    @property
    def stacks(self) -> dict[tuple[str, ...], float]:
        """The distinct stacks sampled, with the time counted for each."""
        self._flush()
        return self._stacks

    def _flush(self) -> None:
        stack = self._last_stack
        if stack is None:
            return
        self._last_stack = None
        stacks = self._stacks
        seconds = stacks.get(stack)
        if seconds is None and len(stacks) >= MAX_DISTINCT_STACKS:
            stack = _without_lines(stack)
            seconds = stacks.get(stack)
            if seconds is None and len(stacks) >= 2 * MAX_DISTINCT_STACKS:
                stack = _OVERFLOW_STACK
                seconds = stacks.get(stack)
        stacks[stack] = (seconds or 0.0) + self._last_seconds
