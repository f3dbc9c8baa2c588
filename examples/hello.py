"""The one-file example: a Flask app with a fast page and a slow one.

Run it with Flask's development server::

    flask --app examples/hello.py run

then open http://127.0.0.1:5000/orders. The request takes about 0.4 s, more
than the 0.25 s threshold set below, so Flask-PerfAlert writes an HTML report
and logs its path: open it to see that ``load_orders`` took the time.

``bash examples/demo.sh`` does all of that in one command.
"""

from __future__ import annotations

import logging
import time

from flask import Flask

from flask_perfalert import PerfAlert

app = Flask(__name__)
# Any PERFALERT_* key can be set in app.config, or as an environment variable.
app.config["PERFALERT_THRESHOLD_SECONDS"] = 0.25
perf = PerfAlert(app)

# Show Flask-PerfAlert's INFO messages ("Slow request report: <path>") on stderr.
logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s")
logging.getLogger("flask_perfalert").setLevel(logging.INFO)


def load_orders() -> list[tuple[int, float]]:
    """Stands for a slow database query."""
    time.sleep(0.4)
    return [(number, number * 9.99) for number in range(1, 51)]


def format_orders(orders: list[tuple[int, float]]) -> str:
    return "\n".join(f"order {number}: {total:.2f}" for number, total in orders)


@app.get("/")
def index() -> str:
    return "Hello! This page is fast; /orders is slow.\n"


@app.get("/orders")
def orders() -> str:
    return format_orders(load_orders()) + "\n"
