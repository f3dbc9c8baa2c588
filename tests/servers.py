"""Real servers for tests: ``redis-server`` and gunicorn, on 127.0.0.1, bounded in time.

Use from a test module::

    from servers import Gunicorn, RedisServer, http_get, redis_server, wait_for

``redis_server`` is a fixture (a fresh server per test, in the test's tmp dir,
no persistence, always shut down). :class:`Gunicorn` runs an app module found
under ``tests/`` (e.g. ``"apps.storage_app:app"``) with a given environment
and worker set-up, on a port the kernel chose, and is stopped (SIGTERM, then
SIGKILL) when the ``with`` block ends. Every wait has a deadline.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def http_get(url: str, timeout: float = 15.0) -> tuple[int, bytes]:
    """GET ``url`` (http://127.0.0.1:port/path) on a fresh connection: status and body."""
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", "/" + path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# -- redis-server ----------------------------------------------------------------------------
class RedisServer:
    """One ``redis-server`` on 127.0.0.1, without persistence, in ``workdir``."""

    def __init__(
        self, workdir: Path, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.log = self.workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start (again, on the same port) and wait until it answers PING."""
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--daemonize",
            "no",
            *self.extra_args,
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc
        try:
            wait_for(
                lambda: proc.poll() is not None or self.ping(),
                timeout,
                what=f"redis-server on port {self.port}",
            )
        except BaseException:
            self.stop()
            raise
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
        return self

    def ping(self, timeout: float = 0.5) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                # +PONG, or -NOAUTH with --requirepass: either way it is serving.
                return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def client(self) -> Any:
        """A redis-py client for inspecting the server from the test."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL: the server vanishes at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None:
            _stop_process(self.proc, timeout)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running ``redis-server`` on a free port of 127.0.0.1, stopped after the test."""
    server = RedisServer(tmp_path / "redis")
    # The port was free when chosen; another process may take it meanwhile: try again.
    for attempt in range(3):
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
            server = RedisServer(tmp_path / f"redis{attempt}")
    try:
        yield server
    finally:
        server.stop()


# -- gunicorn ----------------------------------------------------------------------------------
def _control_socket_args() -> list[str]:
    # gunicorn 24+ opens a control socket in ~/.gunicorn by default; tests must not share it.
    from gunicorn.config import KNOWN_SETTINGS

    if any("--no-control-socket" in (s.cli or []) for s in KNOWN_SETTINGS):
        return ["--no-control-socket"]
    return []


class Gunicorn:
    """A gunicorn master serving ``app`` (``"module:variable"`` importable from ``tests/``).

    ``env`` is added to a copy of this process's environment (``PERFALERT_*``
    keys of the test process are not passed on). The log (gunicorn's and the
    app's stderr) is in ``workdir/<name>.log``.
    """

    def __init__(
        self,
        app: str,
        workdir: Path,
        env: Mapping[str, str] | None = None,
        *,
        workers: int = 1,
        worker_class: str = "sync",
        threads: int = 1,
        preload: bool = False,
        name: str = "gunicorn",
        extra_args: Sequence[str] = (),
        default_folders: bool = False,
    ) -> None:
        self.app = app
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env or {})
        self.workers = workers
        self.worker_class = worker_class
        self.threads = threads
        self.preload = preload
        self.name = name
        self.extra_args = list(extra_args)
        #: Keep the app's data where it would be without settings (its instance folder).
        self.default_folders = default_folders
        self.log = self.workdir / f"{name}.log"
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        assert self.port is not None, "not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/", timeout: float = 30.0) -> Gunicorn:
        """Start, then wait until every worker has booted and ``ready_path`` answers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERFALERT_")}
        if not self.default_folders:
            # The app's data in the test's folder, not in an instance folder under tests/.
            env["PERFALERT_DATA_DIR"] = str(self.workdir / "perfalert-data")
        env.update(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            "127.0.0.1:0",
            "--workers",
            str(self.workers),
            "--worker-class",
            self.worker_class,
            "--threads",
            str(self.threads),
            "--pythonpath",
            str(TESTS_DIR),
            "--chdir",
            str(self.workdir),
            "--timeout",
            "30",
            "--graceful-timeout",
            "10",
            "--log-level",
            "info",
            *(["--preload"] if self.preload else []),
            *_control_socket_args(),
            *self.extra_args,
            self.app,
        ]
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        proc = self.proc

        def listening() -> int | None:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self._log_since(offset)[-3000:]}")
            for line in self._log_since(offset).splitlines():
                if "Listening at: http://127.0.0.1:" in line:
                    return int(line.split("127.0.0.1:", 1)[1].split()[0])
            return None

        def answers() -> bool:
            try:
                return http_get(self.base_url + ready_path, timeout=5)[0] < 500
            except OSError:
                return False

        try:
            self.port = wait_for(listening, timeout, what=f"{self.name} to listen")
            wait_for(
                lambda: self._log_since(offset).count("Booting worker with pid") >= self.workers,
                timeout,
                what=f"{self.workers} {self.name} workers",
            )
            wait_for(answers, timeout, what=f"{self.name} to answer")
        except BaseException:
            self.stop()
            raise
        return self

    def _log_since(self, offset: int) -> str:
        with open(self.log, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (workers finish their requests and run their exit handlers)."""
        if self.proc is not None:
            _stop_process(self.proc, timeout)

    def get(self, path: str, timeout: float = 15.0) -> tuple[int, bytes]:
        return http_get(self.base_url + path, timeout)

    def __enter__(self) -> Gunicorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
