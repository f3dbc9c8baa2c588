"""A subscriber of your own: post every new slow request to a JSON webhook.

Any service that accepts a JSON POST works (a chat's incoming webhook, an
incident tool, your own endpoint). Set its address and run::

    WEBHOOK_URL=http://127.0.0.1:9000/hooks/perf flask --app examples/webhook_subscriber.py run

then open http://127.0.0.1:5000/report.

The receiver runs in the request's thread after the response was sent, so it
only builds the payload and hands it to one background thread: a slow or
unreachable webhook never holds up the app's threads. Posting is retried a
few times; a payload that still cannot be sent is logged with its content,
never dropped silently.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import threading
import time
import urllib.request
from typing import Any

from flask import Flask

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request

logger = logging.getLogger(__name__)


def to_payload(event: SlowRequestEvent) -> dict[str, Any]:
    """What the webhook receives: plain JSON, already redacted by Flask-PerfAlert."""
    usual = event.usual
    escalation = event.escalation
    return {
        "id": event.id,
        # What, how unusual, what kind of time, how many were suppressed before it.
        "text": event.headline(),
        "kind": event.kind,
        "endpoint": event.endpoint,
        "method": event.method,
        "url": event.url,
        "status": event.status_code,
        "duration_seconds": round(event.duration, 4),
        "threshold_seconds": event.threshold,
        "time": event.timestamp.isoformat(),
        "host": event.host,
        "pid": event.pid,
        "hot_frames": [
            {"function": f.function, "location": f.location, "share": round(f.share, 3)}
            for f in event.hot_frames(5)
        ],
        # What kind of time it was: database, outgoing HTTP, templates, app code...
        "time_by_kind": [
            {"kind": s.kind, "share": round(s.share, 3), "sources": list(s.sources)}
            for s in event.time_by_kind
        ],
        # How long the endpoint usually takes (None until enough requests were sampled).
        "usual": None
        if usual is None
        else {"median_seconds": usual.median, "p95_seconds": usual.p95},
        # Slow requests of this endpoint the window suppressed since its previous alert.
        "suppressed_since_previous_alert": event.suppressed,
        # Set when it alerts again because it got markedly worse.
        "escalated_from_seconds": None if escalation is None else escalation.previous_worst,
    }


class WebhookSender:
    """Posts JSON payloads from one background thread, started on first use."""

    def __init__(self, timeout: float = 5.0, retries: int = 2, max_queued: int = 100) -> None:
        self.timeout = timeout
        self.retries = retries
        self._queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(max_queued)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, url: str, payload: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((url, payload))
        except queue.Full:
            logger.error("Webhook queue full; alert not sent: %s", json.dumps(payload))
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
                self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued payload was posted (or given up on)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            url, payload = self._queue.get()
            try:
                self._post_with_retries(url, payload)
            finally:
                self._queue.task_done()

    def _post_with_retries(self, url: str, payload: dict[str, Any]) -> None:
        for attempt in range(self.retries + 1):
            try:
                self.post(url, payload)
                return
            except (OSError, http.client.HTTPException) as exc:
                if attempt == self.retries:
                    logger.error("Webhook %s failed (%s); alert: %s", url, exc, json.dumps(payload))
                    return
                time.sleep(0.5 * 2**attempt)

    def post(self, url: str, payload: dict[str, Any]) -> None:
        request = urllib.request.Request(
            url,
            data=json.dumps(payload).encode("utf-8"),
            # The event id lets the receiving side ignore a retried duplicate.
            headers={"Content-Type": "application/json", "Idempotency-Key": payload["id"]},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            response.read()


sender = WebhookSender()


# A module-level function: blinker holds receivers by weak reference, and a
# module-level function lives as long as its module. A function defined inside
# another one (create_app) needs connect(..., weak=False).
def post_slow_request(app: Flask, event: SlowRequestEvent, **extra: Any) -> None:
    if event.duplicate:  # already alerted inside the de-duplication window
        return
    url = app.config.get("WEBHOOK_URL")  # the sender is the app; no context is pushed
    if url:
        sender.submit(url, to_payload(event))


app = Flask(__name__)
app.config["WEBHOOK_URL"] = os.environ.get("WEBHOOK_URL", "http://127.0.0.1:9000/hooks/perf")
app.config["PERFALERT_THRESHOLD_SECONDS"] = 0.2
perf = PerfAlert(app)
perf_slow_request.connect(post_slow_request, sender=app)


@app.get("/report")
def report() -> str:
    time.sleep(0.3)  # stands for slow work
    return "done\n"
