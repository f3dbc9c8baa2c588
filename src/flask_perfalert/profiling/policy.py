"""The profiler modes: the one place that decides how a profile is taken.

``start_pyinstrument`` and ``stop`` run on the request path in pyinstrument
mode; :meth:`ProfilingPolicy.result` turns what was collected into a
pyinstrument session, and runs only for slow work, after its response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyinstrument import Profiler

from . import session as _session
from .session import combine, session_from_samples
from .stacks import UNAVAILABLE

if TYPE_CHECKING:
    from pyinstrument.session import Session

    from ..settings import PerfAlertSettings
    from .measurement import Measurement

logger = logging.getLogger("flask_perfalert")

#: Fewer samples than this make no call tree. One is enough: the time before it is
#: counted to its stack, and the note says the tree rests on one sample. A request
#: just over its threshold, or one whose sampler waited for a busy CPU, often has
#: no more, and its stack is still where the time went.
MIN_SAMPLES = 1

C_TIME_NOTE = (
    "Time spent inside C code (database drivers, JSON, regular expressions, "
    "waiting on the network) is counted on the Python line that called it."
)


@dataclass(frozen=True)
class ProfileResult:
    session: Session | None
    #: Which part of the work the profile covers, or why there is none.
    note: str


class ProfilingPolicy:
    """Starts and stops the chosen profiler for each piece of work of one app."""

    def __init__(self, settings: PerfAlertSettings) -> None:
        self.mode = settings.profiler
        self.sample_after = settings.sample_after
        self.interval = settings.sample_interval
        #: Whether the sampler takes stacks (it also keeps request objects in every mode).
        self.samples = self.mode == "sampling" and UNAVAILABLE is None

    def start_pyinstrument(self) -> Profiler | None:
        # async_mode="disabled" lets a watched function nested in a profiled request
        # run its own profiler on the same thread.
        profiler = Profiler(interval=0.001, async_mode="disabled")
        try:
            profiler.start()
        except RuntimeError:
            logger.debug("pyinstrument refused to start", exc_info=True)
            return None
        return profiler

    @staticmethod
    def stop(profiler: Profiler | None) -> Session | None:
        """Stop a profiler of :meth:`start_pyinstrument`; its session."""
        if profiler is None:
            return None
        try:
            session: Session = profiler.stop()
        except Exception:
            logger.exception("pyinstrument failed to stop")
            return None
        return session

    def result(
        self,
        start: float,
        end: float,
        description: str,
        measurement: Measurement | None,
        sessions: Sequence[Session] = (),
    ) -> ProfileResult:
        """The profile of finished work, for slow work only.

        ``measurement``: its samples (sampling mode); ``sessions``: its
        pyinstrument sessions, the work's own first (pyinstrument mode).
        """
        duration = end - start
        if self.mode == "none":
            return ProfileResult(None, "No profile: profiling is off (PERFALERT_PROFILER=none).")
        if _session.incompatible is not None:
            return ProfileResult(None, f"No profile: {_session.incompatible}.")
        if self.mode == "pyinstrument":
            if not sessions:
                return ProfileResult(None, "No profile: pyinstrument could not profile it.")
            session = sessions[0]
            for linked in sessions[1:]:
                session = combine(session, linked)
            return ProfileResult(
                session, "Profiled by pyinstrument for the whole duration (exact call tree)."
            )
        m = measurement
        if UNAVAILABLE is not None:
            return ProfileResult(None, f"No profile: {UNAVAILABLE}.")
        if m is None or m.sample_count < MIN_SAMPLES:
            count = 0 if m is None else m.sample_count
            arm = duration * self.sample_after if m is None else m.arm_at - start
            why = ""
            if m is not None and m.refusal is not None:
                why = f" Stacks could not be read safely {m.refused} times: {m.refusal}."
            return ProfileResult(
                None,
                f"No profile: too few samples ({count}); sampling starts {arm:.3f}s "
                f"into the work, every {self.interval * 1000:.0f} ms.{why}",
            )
        sampled_from = m.first_sample_at - start
        covered_to = m.last_sample_at - start
        share = covered_to / duration if duration > 0 else 0.0
        # The sampler waits for the interpreter lock, so samples may come later
        # than asked; say how often they really came.
        every = (covered_to - sampled_from) / max(m.sample_count - 1, 1)
        if m.sample_count == 1:
            note = (
                f"One sample, at {sampled_from:.3f}s of {duration:.3f}s: the request ended "
                f"before a second; the time to it is counted to its stack ({share:.0%} "
                f"of the time in the profile). {C_TIME_NOTE}"
            )
        else:
            note = (
                f"Sampled every {m.interval * 1000:.0f} ms ({every * 1000:.0f} ms on "
                f"average) from {sampled_from:.3f}s to {covered_to:.3f}s of "
                f"{duration:.3f}s; the first {sampled_from:.3f}s, before sampling "
                f"starts, are counted to the first sample's stack ({share:.0%} of the "
                f"time in the profile). {C_TIME_NOTE}"
            )
        wall_start = wall_time(start)
        session = session_from_samples(
            m.stacks.items(),
            start_time=wall_start,
            duration=covered_to,
            interval=m.interval,
            sample_count=m.sample_count,
            description=description,
            # Read to the end of the work, which may lie past the last sample.
            cpu_time=min(max(m.cpu_last - m.cpu_first, 0.0), covered_to),
        )
        return ProfileResult(session, note)


def wall_time(perf: float) -> float:
    """The ``time.time()`` of a ``perf_counter()`` reading."""
    return time.time() - (time.perf_counter() - perf)
