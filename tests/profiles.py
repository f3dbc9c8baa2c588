"""Profiles in tests (tests and test apps alike): busy work to sample, and reading it."""

from __future__ import annotations

import time

from flask_perfalert import SlowRequestEvent


def spin(seconds: float) -> int:
    """Busy Python work for ``seconds`` (what a sampler sees on the caller's line)."""
    deadline = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < deadline:
        n += 1
    return n


def call_tree_functions(event: SlowRequestEvent) -> list[str]:
    """The function of every frame in the event's call tree; empty without a profile."""
    root = event.profile.root_frame() if event.profile is not None else None
    names: list[str] = []
    stack = [root] if root is not None else []
    while stack:
        frame = stack.pop()
        names.append(frame.function)
        stack.extend(frame.children)
        frame.parent = None  # freed at once, not at the next full collection
    return names
