"""What one alert costs in each de-duplication store (memory://, sqlite://, redis://).

Each slow request makes one claim in the store, on the events thread after
its response: a new key when it alerts, a key already claimed when it is a
duplicate. The child (:func:`task_stores`) opens each store the way the
extension does (``PERFALERT_STORAGE_URI``) and times single claims of both
kinds. The harness (:func:`run_stores`) gives it a SQLite file in a
temporary folder and a ``redis-server`` of its own on 127.0.0.1, when one is
installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._load import free_port, wait_or_kill

ROOT = Path(__file__).resolve().parent.parent
WINDOW_SECONDS = 10 * 86400


def task_stores(spec: dict[str, Any]) -> dict[str, Any]:
    """Per URI: seconds per claim of a new key and of a key already claimed."""
    # Imported here: every other task of a child may run a bare app, which must
    # not have loaded the extension.
    from flask_perfalert.storage import open_store

    out: dict[str, Any] = {}
    for name, uri in spec["uris"].items():
        store = open_store(uri, "bench:")
        try:
            for i in range(spec["warmup"]):
                store.claim(f"warm-{i}", WINDOW_SECONDS)
            new, again = [], []
            for i in range(spec["claims"]):
                t0 = time.perf_counter()
                first = store.claim(f"endpoint-{i}", WINDOW_SECONDS)
                t1 = time.perf_counter()
                second = store.claim(f"endpoint-{i}", WINDOW_SECONDS)
                t2 = time.perf_counter()
                if not first or second:
                    raise RuntimeError(f"{name}: a claim was not decided as it should be")
                new.append(t1 - t0)
                again.append(t2 - t1)
            out[name] = {
                "uri": uri.split("://", 1)[0] + "://",
                "new_median": statistics.median(new),
                "new_p99": sorted(new)[int(len(new) * 0.99)],
                "duplicate_median": statistics.median(again),
                "duplicate_p99": sorted(again)[int(len(again) * 0.99)],
                "claims": len(new),
            }
        finally:
            store.close()
    return out


def _start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait(5)
    return None


def run_stores(env: dict[str, str], claims: int, warmup: int) -> dict[str, Any]:
    """The child, with a SQLite file and (if installed) a redis-server of its own."""
    folder = Path(tempfile.mkdtemp(prefix="perfalert-bench-stores-"))
    uris = {"memory": "memory://", "sqlite": f"sqlite:///{folder / 'alerts.db'}"}
    redis = _start_redis(folder)
    if redis is not None:
        uris["redis"] = f"redis://127.0.0.1:{redis[1]}/0"
    try:
        spec = {"task": "stores", "uris": uris, "claims": claims, "warmup": warmup}
        proc = subprocess.run(
            [sys.executable, "-m", "bench._child", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"child stores failed:\n{proc.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        result.pop("pid", None)
        result.pop("threads_alive_at_end", None)
        if redis is None:
            result["redis"] = {"skipped": "redis-server is not installed"}
        return result
    finally:
        if redis is not None:
            redis[0].terminate()
            wait_or_kill(redis[0], 10)
        shutil.rmtree(folder, ignore_errors=True)
