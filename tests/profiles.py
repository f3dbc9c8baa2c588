"""What the tests read from a slow event's profile (tests and test apps alike)."""

from __future__ import annotations

from flask_perfalert import SlowRequestEvent


def call_tree_functions(event: SlowRequestEvent) -> list[str]:
    """The function of every frame in the event's call tree; empty without a profile."""
    root = event.profile.root_frame() if event.profile is not None else None
    names: list[str] = []
    stack = [root] if root is not None else []
    while stack:
        frame = stack.pop()
        names.append(frame.function)
        stack.extend(frame.children)
    return names
