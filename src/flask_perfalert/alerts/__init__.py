"""The built-in alert subscribers of :data:`~flask_perfalert.perf_slow_request`."""

from __future__ import annotations

from typing import Protocol


class Counts(Protocol):
    """Where a subscriber counts what became of its alerts (the app's ``Stats``)."""

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter ``name`` (``delivered``, ``dropped``, ...)."""
        ...
