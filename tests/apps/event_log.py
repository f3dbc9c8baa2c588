"""What the test apps tell the tests: one JSON line per slow event, from any worker process."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from profiles import call_tree_functions  # tests/ is on gunicorn's --pythonpath

from flask_perfalert import SlowRequestEvent, perf_slow_request


def log_events(app: Flask, path: str | None) -> None:
    """Append a line to ``path`` for each ``perf_slow_request`` event of ``app`` (None: none).

    Each line is one ``write`` to a file opened with O_APPEND, so lines from
    several workers never interleave.
    """
    if not path:
        return

    def record(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        line = {
            "pid": os.getpid(),
            "endpoint": event.endpoint,
            "url": event.url,
            "path": urlsplit(event.url or "").path,
            "status": event.status_code,
            "profile": event.profile is not None,
            "note": event.profile_note,
            "hot": [frame.function for frame in event.hot_frames(3)],
            "functions": call_tree_functions(event),
            "duration": event.duration,
            "duplicate": event.duplicate,
            "suppressed": event.suppressed,
            "escalated_from": (
                None if event.escalation is None else event.escalation.previous_worst
            ),
            "usual": None if event.usual is None else list(event.usual.__dict__.values()),
        }
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)

    # Held strongly: blinker keeps receivers weakly, and this one is a closure.
    perf_slow_request.connect(record, sender=app, weak=False)
