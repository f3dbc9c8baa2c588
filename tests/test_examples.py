"""Every example in examples/ runs and does what its docstring promises.

The apps are served by a real WSGI server on 127.0.0.1 (Werkzeug's, in a
thread), the demo runs as the README says, and the gunicorn config starts real
workers next to a real redis-server.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from profiles import call_tree_functions
from servers import RedisServer
from werkzeug.serving import make_server

from flask_perfalert import SlowRequestEvent, perf_slow_request

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
_counter = itertools.count()


def load_example(name: str) -> ModuleType:
    """A fresh import of examples/<name>.py (a new app each time)."""
    module_name = f"example_{name}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1; yields the base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
    return body.decode()


@contextlib.contextmanager
def recorded(app: Flask) -> Iterator[list[SlowRequestEvent]]:
    events: list[SlowRequestEvent] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        events.append(event)

    with perf_slow_request.connected_to(receiver, sender=app):
        yield events


def wait_for(condition: Any, timeout: float = 20.0) -> Any:
    """Poll ``condition`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def reports_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("perfalert-*.html")) if folder.is_dir() else []


def functions_in(event: SlowRequestEvent) -> set[str]:
    """Every function in the event's call tree."""
    assert event.profile is not None, event.profile_note
    return set(call_tree_functions(event))


# -- the one-file app ------------------------------------------------------------------


def test_hello_reports_the_slow_page_only(
    monkeypatch: pytest.MonkeyPatch, report_dir: Path, wait_delivery: Any
) -> None:
    monkeypatch.setenv("PERFALERT_FILE_DIR", str(report_dir))
    hello = load_example("hello")
    with recorded(hello.app) as events, serve(hello.app) as base:
        assert "fast" in get(base + "/")
        assert "order 50: 499.50" in get(base + "/orders")
        wait_for(lambda: events)
    wait_delivery()
    assert [e.endpoint for e in events] == ["orders"]
    [report] = reports_in(report_dir)
    page = report.read_text()
    assert "load_orders" in page
    assert "GET /orders" in page


def test_demo_command_prints_where_the_report_is(tmp_path: Path) -> None:
    # demo.sh installs nothing when its virtual environment already has the
    # package: point it at one whose python is the interpreter running the tests.
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    python = venv_bin / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    report_dir = tmp_path / "reports"
    env = {
        **os.environ,
        "VENV": str(tmp_path / "venv"),
        "PERFALERT_FILE_DIR": str(report_dir),
    }
    result = subprocess.run(
        ["bash", str(EXAMPLES / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"^Report written to: (.+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    report = Path(match.group(1))
    assert report.parent == report_dir
    assert "load_orders" in result.stdout  # where the time went, printed too
    assert "load_orders" in report.read_text()
    assert "Installing" not in result.stdout


def test_demo_on_defaults_runs_again_and_again(tmp_path: Path) -> None:
    # The README's demo in a fresh clone, with no setting: the report goes to the
    # example's instance folder, whose alert window outlives the run; a second run
    # is a duplicate and shows the first report instead of failing.
    clone = tmp_path / "clone"
    shutil.copytree(
        EXAMPLES, clone / "examples", ignore=shutil.ignore_patterns("instance", "__pycache__")
    )
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (venv_bin / "python").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFALERT_")}
    env["VENV"] = str(tmp_path / "venv")
    folder = clone / "examples" / "instance" / "perfalert" / "hello" / "reports"
    outputs = []
    for _ in range(2):
        result = subprocess.run(
            ["bash", str(clone / "examples" / "demo.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout)
    [report] = folder.glob("perfalert-*-orders-*.html")
    assert f"Report written to: {report}" in outputs[0]
    assert "Already alerted within the de-duplication window (10 days" in outputs[1]
    assert f"The report written then: {report}" in outputs[1]


# -- the app factory with blueprints -----------------------------------------------------


def test_factory_with_blueprints(
    monkeypatch: pytest.MonkeyPatch, report_dir: Path, wait_delivery: Any
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES / "factory"))
    shop = importlib.import_module("shop")
    app = shop.create_app({"PERFALERT_FILE_DIR": str(report_dir)})
    with recorded(app) as events, serve(app) as base:
        assert json.loads(get(base + "/health")) == {"status": "ok"}
        assert "red lamp" in get(base + "/catalog/")
        assert json.loads(get(base + "/catalog/search?q=lamp")) == {
            "results": ["blue lamp", "red lamp"]
        }
        wait_for(lambda: len(events) >= 2)
    wait_delivery()
    by_kind = {e.kind: e for e in events}
    assert len(events) == 2
    # The blueprint's own threshold (0.2 s) applied, not the app's 0.5 s.
    assert by_kind["request"].endpoint == "catalog.search"
    assert by_kind["request"].threshold == 0.2
    assert by_kind["function"].endpoint == "shop.catalog.rank_products"
    assert by_kind["function"].threshold == 0.1
    assert len(reports_in(report_dir)) == 2
    assert app.extensions["perfalert"].stats(app)["requests"] == 2  # /health not counted


# -- the async view --------------------------------------------------------------------


def test_async_view(monkeypatch: pytest.MonkeyPatch, report_dir: Path, wait_delivery: Any) -> None:
    monkeypatch.setenv("PERFALERT_FILE_DIR", str(report_dir))
    example = load_example("async_view")
    with recorded(example.app) as events, serve(example.app) as base:
        assert get(base + "/ping") == "pong\n"
        assert get(base + "/dashboard").startswith("10 widgets")
        wait_for(lambda: events)
    wait_delivery()
    [event] = events
    assert event.endpoint == "dashboard"
    # The event loop's thread was sampled: the blocking call inside the coroutine shows.
    assert "summarise" in functions_in(event)
    [report] = reports_in(report_dir)
    assert "summarise" in report.read_text()


# -- a custom subscriber -----------------------------------------------------------------


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], dict[str, Any]]]

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        self.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def webhook_server() -> Iterator[tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]]:
    received: list[tuple[dict[str, str], dict[str, Any]]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/perf", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_webhook_subscriber_posts_each_new_slow_request_once(
    monkeypatch: pytest.MonkeyPatch, report_dir: Path
) -> None:
    monkeypatch.setenv("PERFALERT_FILE_DIR", str(report_dir))
    example = load_example("webhook_subscriber")
    with webhook_server() as (url, received):
        example.app.config["WEBHOOK_URL"] = url
        with serve(example.app) as base:
            assert get(base + "/report") == "done\n"
            assert get(base + "/report") == "done\n"  # a duplicate inside the window
            assert example.sender.flush(timeout=20)
    [(headers, payload)] = received
    assert payload["endpoint"] == "report"
    assert payload["method"] == "GET"
    assert payload["status"] == 200
    assert payload["duration_seconds"] >= 0.2
    assert payload["text"].startswith("Slow request: GET report (200)")
    assert payload["suppressed_since_previous_alert"] == 0
    assert payload["escalated_from_seconds"] is None and payload["usual"] is None
    assert payload["time_by_kind"] and payload["time_by_kind"][0]["kind"]
    assert headers["Idempotency-Key"] == payload["id"]
    assert headers["Content-Type"] == "application/json"


# -- gunicorn with several workers and the shared store ------------------------------------


@pytest.mark.server
def test_gunicorn_config_runs_several_workers(tmp_path: Path) -> None:
    report_dir = tmp_path / "reports"
    with RedisServer(tmp_path / "redis") as redis:
        env = {
            **os.environ,
            "PERFALERT_FILE_DIR": str(report_dir),
            "PERFALERT_STORAGE_URI": redis.url,
        }
        env.pop("WEB_CONCURRENCY", None)
        gunicorn = Path(sys.executable).with_name("gunicorn")
        cmd = [str(gunicorn), "-c", str(EXAMPLES / "gunicorn.conf.py"), "-b", "127.0.0.1:0"]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.extend(iter(proc.stderr.readline, "")),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        try:

            def listening() -> str | None:
                for line in list(lines):
                    found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", line)
                    if found:
                        return found.group(1)
                return None

            def booted() -> int:
                return sum("Booting worker" in line for line in list(lines))

            base = wait_for(listening, timeout=60)
            assert base, "".join(lines)
            assert wait_for(lambda: booted() == 3, timeout=60), "".join(lines)
            assert "fast" in get(base + "/")
            assert "order 1:" in get(base + "/orders")
            assert wait_for(lambda: reports_in(report_dir), timeout=30), "".join(lines)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            reader.join(timeout=10)
            proc.stderr.close()  # type: ignore[union-attr]
    [report] = reports_in(report_dir)
    assert "load_orders" in report.read_text()
    assert proc.returncode == 0, "".join(lines)
    assert not [line for line in lines if "Traceback" in line], "".join(lines)
