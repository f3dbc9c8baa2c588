"""The README's demo: run the one-file example app, make one slow request, show the report.

Serves ``examples/hello.py`` with Werkzeug's WSGI server on a free port of
127.0.0.1, requests ``/orders`` once (about 0.4 s, threshold 0.25 s), waits
for the report to be written and prints its path. Run again within the
de-duplication window, the slow request is a duplicate: no new report, and the
one written before is shown. Exits 1 if there is no report.

    python examples/demo.py            # or: bash examples/demo.sh
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import urllib.request
from pathlib import Path

from werkzeug.serving import make_server

from flask_perfalert import SlowRequestEvent, perf_slow_request

#: Seconds to wait for the report; writing it normally takes milliseconds.
REPORT_TIMEOUT = 30.0


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import hello

    app, perf = hello.app, hello.perf
    # This script prints what matters itself; keep the server's own logging quiet.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("flask_perfalert").setLevel(logging.WARNING)
    folder = Path(perf.settings(app).file_dir)
    seen: list[SlowRequestEvent] = []

    def remember(sender: object, event: SlowRequestEvent, **extra: object) -> None:
        seen.append(event)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="demo-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/orders"
    try:
        with perf_slow_request.connected_to(remember, sender=app):
            print(f"Example app running; requesting {url} (threshold 0.25 s) ...", flush=True)
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
            print(f"Response {response.status}; waiting for the report ...", flush=True)
            report = _wait_for_report(folder, seen)
    finally:
        server.shutdown()
        thread.join(timeout=10)
    if report is None:
        print(f"No report appeared in {folder} within {REPORT_TIMEOUT:.0f} s.", file=sys.stderr)
        return 1
    event = seen[0]
    print(f"Slow request: {event.summary()}")
    for frame in event.hot_frames(3):
        print(f"  {frame.share:4.0%}  {frame.function}  ({frame.location})")
    if event.duplicate:
        days = perf.settings(app).alert_window_days
        print(
            f"Already alerted within the de-duplication window ({days:g} days, kept in "
            f"{perf.settings(app).storage_uri}): no new report."
        )
        print(f"The report written then: {report}")
    else:
        print(f"Report written to: {report}")
    print(f"Open it in a browser: {report.as_uri()}")
    return 0


def _wait_for_report(folder: Path, seen: list[SlowRequestEvent]) -> Path | None:
    deadline = time.monotonic() + REPORT_TIMEOUT
    while time.monotonic() < deadline:
        # The server sends the signal after the response; the report is then written
        # by Flask-PerfAlert's delivery thread and renamed into place when complete.
        if seen and folder.is_dir():
            if seen[0].duplicate:  # an earlier run alerted: its newest report of /orders
                earlier = sorted(folder.glob("perfalert-*-orders-*.html"))
                return earlier[-1] if earlier else None
            ids = {event.id for event in seen}
            for path in folder.glob("perfalert-*.html"):
                if any(path.name.endswith(f"-{event_id}.html") for event_id in ids):
                    return path
        time.sleep(0.02)
    return None


if __name__ == "__main__":
    sys.exit(main())
