"""The extension's logger, and warnings that repeat at most once per interval.

Everything is logged on the ``flask_perfalert`` logger; no handler is added,
so the app's logging set-up decides where it goes.

A problem that lasts (a full disk, a store that is away) would otherwise log
one warning per alert. :class:`LimitedWarning` logs the first as a warning,
the ones in the next ``interval`` seconds at debug level, then a warning
again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("flask_perfalert")

#: Seconds a repeated warning stays muted (at debug level) after it was logged.
WARN_INTERVAL = 300.0


class LimitedWarning:
    """One kind of warning, logged at most once per ``interval`` seconds."""

    def __init__(
        self, interval: float = WARN_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        #: The clock of the interval (tests pass a fake one).
        self.clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def warn(self, message: str, *args: object, now: float | None = None) -> bool:
        """Log ``message % args``: a warning if none was logged in the interval, else debug.

        Returns True when it was logged as a warning.
        """
        now = self.clock() if now is None else now
        with self._lock:
            due = self._last is None or now - self._last >= self.interval
            if due:
                self._last = now
        if due:
            logger.warning(
                message + " (similar warnings are muted for %.0f s)", *args, self.interval
            )
        else:
            logger.debug(message, *args)
        return due
