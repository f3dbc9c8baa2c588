"""The benchmarked app: the same endpoints, bare or monitored by Flask-PerfAlert.

``create_app(mode)`` with ``mode`` one of :data:`MODES`: ``"bare"`` (no
extension) or a profiler mode (``PERFALERT_PROFILER``). Everything else is
left at its default; the environment may set ``PERFALERT_*`` keys as for any
app (the harness sets ``PERFALERT_FILE_DIR`` to a folder of its own, and
``--quick`` lowers ``PERFALERT_THRESHOLD_SECONDS``).

Fast endpoint kinds (:data:`FAST_KINDS`) stay far below the 1 s threshold.
The two slow views (:data:`SLOW_KINDS`) run three part functions each, whose
wall time the view measures itself with ``perf_counter``: that is the truth a
profile's shares are compared with (:func:`analyse`). How much work each part
does is calibrated by the harness (``BENCH_CALIBRATION``, JSON) so that the
parts take 50/29/21 % of about 1.1 s on the machine at hand.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, jsonify, render_template, request
from jinja2 import DictLoader

MODES = ("bare", "sampling", "pyinstrument", "none")
PROFILER_MODES = MODES[1:]

#: Fast endpoint kinds by name: their URL.
FAST_KINDS = {
    "json": "/json",
    "json300": "/json300",
    "template300": "/template300",
    "recursive": "/recursive",
    "sqlite": "/sqlite",
    "io5ms": "/io5ms",
    "streamed": "/streamed",
}
FAST_DESCRIPTIONS = {
    "json": "trivial JSON",
    "json300": "JSON of 300 objects",
    "template300": "Jinja template of 300 rows",
    "recursive": "recursive Python (fib(16))",
    "sqlite": "SQLite query (GROUP BY over 2,000 rows)",
    "io5ms": "5 ms I/O wait",
    "streamed": "streamed response (30 chunks from a generator)",
}
#: Slow views by endpoint name: their URL and their three part functions.
SLOW_KINDS = {
    "slow_cpu": "/slow/cpu",
    "slow_io": "/slow/io",
}
PARTS = {
    "slow_cpu": ("compute_tree", "crunch_numbers", "build_strings"),
    "slow_io": ("fetch_remote", "run_query", "process_rows"),
}
SLOW_DESCRIPTIONS = {
    "slow_cpu": "CPU-bound: recursive calls / a tight loop / string building",
    "slow_io": "I/O-bound: network wait (local server) / SQLite query / row processing",
}
#: The intended split of a slow view between its three parts.
TARGET_SHARES = (0.50, 0.29, 0.21)
TARGET_SECONDS = 1.1

#: Work per part when no calibration is given (about right on a 2.6 GHz core).
DEFAULT_CALIBRATION: dict[str, Any] = {
    "cpu": [2000, 5_000_000, 600_000],
    "io": {"delay": 0.55, "query": 3_000_000, "rows": 150},
    "delay_addr": None,
}

_HERE = os.path.abspath(__file__)

# -- the work ----------------------------------------------------------------------


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def compute_tree(n: int) -> int:
    """Call-heavy: ``n`` recursive ``fib(15)`` (1,973 Python calls each)."""
    total = 0
    for _ in range(n):
        total += fib(15)
    return total


def crunch_numbers(n: int) -> int:
    """A tight loop without calls."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1_000_003
    return acc


def build_strings(n: int) -> int:
    """C method calls: formatting and joining strings."""
    parts: list[str] = []
    size = 0
    for i in range(n):
        parts.append(str(i).zfill(8))
        if len(parts) >= 1000:
            size += len(",".join(parts))
            parts.clear()
    return size


def fetch_remote(addr: tuple[str, int] | None, delay: float) -> bytes:
    """Wait for a reply from the harness's delay server (a real socket read)."""
    if addr is None:
        time.sleep(delay)
        return b"ok\n"
    with socket.create_connection(addr, timeout=30) as conn:
        conn.sendall(f"{delay * 1000:.0f}\n".encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(64)
            if not chunk:
                break
            data += chunk
    return data


QUERY_SQL = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) "
    "SELECT sum(x % 7) FROM c"
)


def run_query(conn: sqlite3.Connection, n: int) -> int:
    """A query that keeps SQLite busy (in C) for a calibrated time."""
    return int(conn.execute(QUERY_SQL, (n,)).fetchone()[0])


def _score_row(row: Sequence[Any]) -> float:
    record = {"id": row[0], "name": row[1], "category": row[2], "price": row[3]}
    return len(record["name"]) + record["price"] * (1 if record["category"] % 2 else 2)


def process_rows(rows: Sequence[Sequence[Any]], passes: int) -> float:
    """Python work per row (a function call and a dict each)."""
    total = 0.0
    for _ in range(passes):
        for row in rows:
            total += _score_row(row)
    return total


# -- the truth of the slow views ------------------------------------------------------

#: Per-part timings of recent slow requests, by the request's ``rid`` parameter.
TRUTH: dict[str, dict[str, Any]] = {}
_TRUTH_MAX = 200


def _timed(parts: list[list[Any]], name: str, func: Callable[..., Any], *args: Any) -> None:
    wall0 = time.time()
    t0 = time.perf_counter()
    func(*args)
    t1 = time.perf_counter()
    parts.append([name, wall0, wall0 + (t1 - t0), t1 - t0])


def _record_truth(rid: str | None, parts: list[list[Any]], seconds: float) -> None:
    if rid is None:
        return
    if len(TRUTH) >= _TRUTH_MAX:
        TRUTH.pop(next(iter(TRUTH)))
    TRUTH[rid] = {"parts": parts, "view_seconds": seconds}


# -- the app -------------------------------------------------------------------------

ROW_TEMPLATE = (
    "<table>{% for r in rows %}<tr><td>{{ r.id }}</td><td>{{ r.name }}</td>"
    "<td>{{ '%.2f'|format(r.price) }}</td><td>{{ r.tags|join(', ') }}</td>"
    "<td>{% if r.active %}yes{% else %}no{% endif %}</td></tr>{% endfor %}</table>"
)


class Item:
    __slots__ = ("id", "name", "price", "tags", "active")

    def __init__(self, i: int) -> None:
        self.id = i
        self.name = f"item <{i}>"
        self.price = i * 1.25
        self.tags = ["red", "small"] if i % 2 else ["blue"]
        self.active = i % 3 == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "price": self.price,
            "tags": list(self.tags),
            "active": self.active,
        }


def load_calibration() -> dict[str, Any]:
    raw = os.environ.get("BENCH_CALIBRATION")
    return json.loads(raw) if raw else dict(DEFAULT_CALIBRATION)


def create_app(mode: str = "sampling", endpoints: int = 0) -> Flask:
    """The benchmark app, bare or monitored with profiler ``mode``.

    ``endpoints`` adds that many extra endpoints ``/ep<k>/<n>`` (memory test).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}: {mode!r}")
    calibration = load_calibration()
    app = Flask(__name__)
    app.jinja_loader = DictLoader({"rows.html": ROW_TEMPLATE})
    items = [Item(i) for i in range(300)]

    folder = tempfile.mkdtemp(prefix="perfalert-bench-db-")
    db_path = os.path.join(folder, "bench.db")
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER, name TEXT, category INTEGER, price REAL)")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [(i, f"name {i}", i % 17, (i * 7919) % 1000 / 10) for i in range(2000)],
        )
    conn.close()
    rows = sqlite3.connect(db_path).execute("SELECT * FROM items LIMIT 1000").fetchall()
    local = threading.local()
    pid = os.getpid()

    def cleanup() -> None:
        if os.getpid() == pid:
            shutil.rmtree(folder, ignore_errors=True)

    import atexit

    atexit.register(cleanup)

    def db() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(db_path)
        return conn

    @app.get("/json")
    def json_trivial() -> Any:
        return {"ok": True, "n": 1}

    @app.get("/json300")
    def json300() -> Any:
        return jsonify([item.to_dict() for item in items])

    @app.get("/template300")
    def template300() -> Any:
        return render_template("rows.html", rows=items)

    @app.get("/recursive")
    def recursive() -> Any:
        return {"fib": fib(16)}

    @app.get("/sqlite")
    def sqlite_query() -> Any:
        result = (
            db()
            .execute(
                "SELECT category, count(*), avg(price), max(price) FROM items "
                "WHERE price > ? GROUP BY category ORDER BY category",
                (10.0,),
            )
            .fetchall()
        )
        return jsonify(result)

    @app.get("/streamed")
    def streamed() -> Any:
        def rows() -> Any:
            for item in items[:30]:
                yield f"{item.id},{item.name},{item.price}\n"

        return app.response_class(rows(), mimetype="text/csv")

    @app.get("/io5ms")
    def io5ms() -> Any:
        time.sleep(0.005)
        return {"slept": 0.005}

    cpu_work = calibration["cpu"]
    io_work = calibration["io"]
    addr = calibration.get("delay_addr")
    delay_addr = (addr[0], int(addr[1])) if addr else None

    @app.get("/slow/cpu")
    def slow_cpu() -> Any:
        t0 = time.perf_counter()
        parts: list[list[Any]] = []
        _timed(parts, "compute_tree", compute_tree, cpu_work[0])
        _timed(parts, "crunch_numbers", crunch_numbers, cpu_work[1])
        _timed(parts, "build_strings", build_strings, cpu_work[2])
        seconds = time.perf_counter() - t0
        _record_truth(request.args.get("rid"), parts, seconds)
        return {"parts": parts, "view_seconds": seconds}

    @app.get("/slow/io")
    def slow_io() -> Any:
        t0 = time.perf_counter()
        parts: list[list[Any]] = []
        _timed(parts, "fetch_remote", fetch_remote, delay_addr, io_work["delay"])
        _timed(parts, "run_query", run_query, db(), io_work["query"])
        _timed(parts, "process_rows", process_rows, rows, io_work["rows"])
        seconds = time.perf_counter() - t0
        _record_truth(request.args.get("rid"), parts, seconds)
        return {"parts": parts, "view_seconds": seconds}

    def extra_endpoint(n: int) -> Any:
        return "ok"

    for k in range(endpoints):
        app.add_url_rule(f"/ep{k}/<int:n>", f"ep{k}", extra_endpoint)

    if mode != "bare":
        from flask_perfalert import PerfAlert, perf_slow_request

        PerfAlert(app, profiler=mode)
        perf_slow_request.connect(_on_slow_event, sender=app)
    return app


# -- the slow events ---------------------------------------------------------------------

#: Events of slow views received in this process (in-process runs read them).
EVENTS: list[Any] = []


def _on_slow_event(sender: Flask, event: Any, **extra: Any) -> None:
    if event.endpoint not in PARTS:
        return
    out = os.environ.get("BENCH_EVENTS_FILE")
    if not out:
        EVENTS.append(event)
        return
    # Under gunicorn: analysed here (after the response was sent) and written out.
    record = analyse(event)
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def profile_part_seconds(session: Any, names: Sequence[str]) -> tuple[float, dict[str, float]]:
    """Total profiled seconds, and the seconds under each part function of this module."""
    sums = dict.fromkeys(names, 0.0)
    root = session.root_frame() if session is not None else None
    if root is None:
        return 0.0, sums
    stack = [root]
    while stack:
        frame = stack.pop()
        path = frame.file_path or ""
        if frame.function in sums and os.path.abspath(path) == _HERE:
            sums[frame.function] += frame.time
            continue
        stack.extend(frame.children)
    return root.time, sums


def analyse(event: Any) -> dict[str, Any]:
    """A slow event's profile against the truth its view measured in the same request."""
    rid = event.params.get("rid")
    truth = TRUTH.pop(rid, None) if rid is not None else None
    names = PARTS[event.endpoint]
    session = event.profile
    total, sums = profile_part_seconds(session, names)
    record: dict[str, Any] = {
        "endpoint": event.endpoint,
        "rid": rid,
        "duration": event.duration,
        "profile_note": event.profile_note,
        "profiled_seconds": total,
        "sample_count": getattr(session, "sample_count", 0) if session is not None else 0,
        "hot_frames": [[f.function, f.share] for f in event.hot_frames(3)],
        "parts": {},
    }
    if truth is None:
        return record
    view = truth["view_seconds"]
    window: tuple[float, float] | None = None
    if session is not None:
        window = (session.start_time, session.start_time + session.duration)
    for name, wall0, wall1, seconds in truth["parts"]:
        entry = {
            "true_share": seconds / view if view > 0 else 0.0,
            "profile_share": sums[name] / total if total > 0 else 0.0,
            "true_seconds": seconds,
            "profile_seconds": sums[name],
        }
        if window is not None and window[1] > window[0]:
            overlap = max(0.0, min(wall1, window[1]) - max(wall0, window[0]))
            entry["window_true_share"] = overlap / (window[1] - window[0])
        record["parts"][name] = entry
    record["view_seconds"] = view
    return record
