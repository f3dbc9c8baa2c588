"""The profiling policy: the one place that decides when and how a profile is taken.

``begin`` and ``end`` run on the request path and are cheap; ``result`` turns
what was collected into a pyinstrument session, and runs only for slow work.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyinstrument import Profiler

from . import _pyinstrument_compat as _compat
from ._measurement import Measurement
from ._pyinstrument_compat import combine, session_from_samples
from ._sampler import SAMPLER, green_threads_in_use

if TYPE_CHECKING:
    from pyinstrument.session import Session

    from .settings import PerfAlertSettings

logger = logging.getLogger("flask_perfalert")

#: Fewer samples than this make no useful call tree.
MIN_SAMPLES = 2

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
    """Starts and stops the chosen profiler for each measurement of one app."""

    def __init__(self, settings: PerfAlertSettings) -> None:
        self.mode = settings.profiler
        self.sample_after = settings.sample_after
        self.interval = settings.sample_interval
        self.green = green_threads_in_use()
        #: Whether the sampler takes stacks (it also arms requests in every mode).
        self.samples = self.mode == "sampling" and not self.green
        if self.mode == "sampling":
            if self.green:  # pragma: no cover - needs gevent/eventlet patching
                logger.warning(
                    "%s is patching threads: stack sampling cannot tell its greenlets "
                    "apart, so alerts will carry no profile. Use PERFALERT_PROFILER="
                    '"pyinstrument" or a sync/gthread worker for profiles.',
                    self.green,
                )
        if settings.enabled:  # disabled: no side effects on the process at all
            SAMPLER.configure(settings.sample_interval, settings.max_overhead)
            SAMPLER.install_signal_handler()

    def begin(self, entry: tuple[Any, ...]) -> Any:
        """Start collecting for a watched call's ``entry``; returns a token for ``end``."""
        if self.mode == "pyinstrument":
            return self.start_pyinstrument(entry)
        SAMPLER.register(entry)
        return entry

    def start_pyinstrument(self, entry: tuple[Any, ...]) -> Any:
        # async_mode="disabled" lets a watched function nested in a profiled request
        # run its own profiler on the same thread.
        profiler = Profiler(interval=0.001, async_mode="disabled")
        try:
            profiler.start()
        except RuntimeError:
            logger.debug("pyinstrument refused to start; sampling instead", exc_info=True)
            SAMPLER.register(entry)
            return entry
        return profiler

    def end(self, token: Any) -> Measurement | Session | None:
        """Stop collecting; what was collected goes to ``result``."""
        if token is None:
            return None
        if isinstance(token, tuple):
            return SAMPLER.unregister(token)
        try:
            session: Session = token.stop()
        except Exception:
            logger.exception("pyinstrument failed to stop")
            return None
        return session

    def result(
        self,
        collected: Measurement | Session | None,
        start: float,
        end: float,
        description: str,
        linked_sessions: list[Session] | None = None,
    ) -> ProfileResult:
        """Turn what ``end`` returned into a profile, for slow work only."""
        duration = end - start
        if self.mode == "none":
            return ProfileResult(None, "No profile: profiling is off (PERFALERT_PROFILER=none).")
        if self.green and self.mode == "sampling":
            return ProfileResult(
                None, f"No profile: stack sampling is not possible under {self.green}."
            )
        if _compat.incompatible is not None:
            return ProfileResult(None, f"No profile: {_compat.incompatible}.")
        if collected is not None and not isinstance(collected, Measurement):
            session = collected
            for linked in linked_sessions or ():
                session = combine(session, linked)
            return ProfileResult(
                session, "Profiled by pyinstrument for the whole duration (exact call tree)."
            )
        m = collected
        if m is None or m.sample_count < MIN_SAMPLES:
            count = 0 if m is None else m.sample_count
            arm = duration * self.sample_after if m is None else m.arm_at - start
            return ProfileResult(
                None,
                f"No profile: too few samples ({count}); sampling starts {arm:.3f}s "
                f"into the work, every {self.interval * 1000:.0f} ms.",
            )
        covered_from = m.first_sample_at - start
        covered_to = m.last_sample_at - start
        share = (covered_to - covered_from) / duration if duration > 0 else 0.0
        note = (
            f"Sampled every {m.interval * 1000:.0f} ms from {covered_from:.3f}s to "
            f"{covered_to:.3f}s of {duration:.3f}s ({share:.0%} of the time); the first "
            f"{covered_from:.3f}s were not sampled. {C_TIME_NOTE}"
        )
        wall_start = time.time() - (time.perf_counter() - start)
        session = session_from_samples(
            m.stacks.items(),
            start_time=wall_start + covered_from,
            duration=covered_to - covered_from,
            interval=m.interval,
            sample_count=m.sample_count,
            description=description,
            cpu_time=max(m.cpu_last - m.cpu_first, 0.0),
        )
        return ProfileResult(session, note)
