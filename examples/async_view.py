"""An async view, monitored like any other (needs ``pip install flask[async]``).

Flask runs an async view to completion on an event loop in another thread;
Flask-PerfAlert times the whole request and samples that thread too, so the
report shows what the coroutine was doing.

    flask --app examples/async_view.py run

then open http://127.0.0.1:5000/dashboard (about 0.4 s; threshold 0.2 s).
"""

from __future__ import annotations

import asyncio
import time

from flask import Flask

from flask_perfalert import PerfAlert

app = Flask(__name__)
app.config["PERFALERT_THRESHOLD_SECONDS"] = 0.2
perf = PerfAlert(app)


async def fetch_widgets() -> list[str]:
    """Stands for a call to another service."""
    await asyncio.sleep(0.1)
    return [f"widget {n}" for n in range(10)]


def summarise(widgets: list[str]) -> str:
    """Blocking CPU work inside the coroutine: this is what the report will point at."""
    deadline = time.perf_counter() + 0.3
    checksum = 0
    while time.perf_counter() < deadline:
        checksum = (checksum + sum(len(w) for w in widgets)) % 1_000_003
    return f"{len(widgets)} widgets, checksum {checksum}"


@app.get("/dashboard")
async def dashboard() -> str:
    widgets, _ = await asyncio.gather(fetch_widgets(), asyncio.sleep(0.05))
    return summarise(widgets) + "\n"


@app.get("/ping")
async def ping() -> str:
    await asyncio.sleep(0)
    return "pong\n"
