"""Servers and load: gunicorn on 127.0.0.1 with ``wrk`` or a Python client, and serve children.

A serve child is the app in a live benchmark process that measures bursts of
in-process requests on command.

All traffic goes to 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent

WRK_SCRIPT = """
-- Latencies are recorded in whole microseconds; a median of ~150 us then moves
-- in steps of 0.7 %. Percentiles are interpolated within their 1 us bucket
-- (latency(i) gives the i-th distinct value and its count, in ascending order).
local function quantiles(latency, qs)
  local total = 0
  for i = 1, #latency do
    local _, count = latency(i)
    total = total + count
  end
  local out, k, seen = {}, 1, 0
  for i = 1, #latency do
    local value, count = latency(i)
    while k <= #qs and seen + count >= qs[k] * total do
      out[k] = value - 0.5 + (qs[k] * total - seen) / count
      k = k + 1
    end
    seen = seen + count
  end
  return out
end

done = function(summary, latency, requests)
  local e = summary.errors
  local q = quantiles(latency, {0.5, 0.9, 0.99})
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, ' ..
    '"median_us": %f, "p90_us": %f, "p99_us": %f, "mean_us": %f}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, q[1], q[2], q[3], latency.mean))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(port: int, path: str, timeout: float = 60.0) -> tuple[int, bytes, float]:
    """One GET on a fresh connection: status, body, seconds until the body was read."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, body, time.perf_counter() - t0
    finally:
        conn.close()


class Gunicorn:
    """``gunicorn -w 1`` serving ``bench.apps:create_app(mode)`` on a free port."""

    def __init__(
        self,
        worker: str,
        mode: str,
        env: dict[str, str],
        log: IO[bytes],
        cpus: set[int] | None = None,
    ) -> None:
        self.worker = worker
        self.mode = mode
        self.env = env
        self.log = log
        #: Run the server (arbiter, worker, its threads) on these CPUs only.
        self.cpus = cpus
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def _command(self) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--worker-class",
            self.worker,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--log-level",
            "warning",
            "--timeout",
            "120",
            "--graceful-timeout",
            "5",
        ]
        if self.worker == "gthread":
            cmd += ["--threads", "4"]
        cmd.append(f"bench.apps:create_app({self.mode!r})")
        return cmd

    def start(self, timeout: float = 60.0) -> None:
        for _attempt in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(
                self._command(),
                cwd=ROOT,
                env=self.env,
                stdout=self.log,
                stderr=self.log,
                preexec_fn=_pinned(self.cpus),
            )
            if self._wait_ready(timeout):
                return
            self.stop()
        raise RuntimeError(f"gunicorn {self.worker}/{self.mode} did not start (see the log)")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                status, _, _ = http_get(self.port, "/json", timeout=5)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def worker_pid(self) -> int:
        assert self.proc is not None
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        children = path.read_text().split()
        if len(children) != 1:
            raise RuntimeError(f"expected one gunicorn worker, found {children}")
        return int(children[0])

    def worker_cpu(self) -> float:
        """CPU seconds used so far by the worker process (all its threads), in ns resolution."""
        pid = self.worker_pid()
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return total / 1e9

    def wait_idle(self, quiet: float = 0.2, timeout: float = 60.0) -> None:
        """Wait until the worker has used (almost) no CPU for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        before = self.worker_cpu()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            now = self.worker_cpu()
            if now - before < quiet * 0.02:
                return
            before = now

    def worker_switches(self) -> int:
        """Voluntary context switches of the worker so far (all its threads)."""
        pid = self.worker_pid()
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches"):
                        total += int(line.split()[1])
            except (OSError, ValueError, IndexError):
                pass
        return total

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            wait_or_kill(self.proc, 15)
        self.proc = None


class ServeChild:
    """A ``serve`` child (``bench/_child.py``): one variant's app, bursts on command."""

    def __init__(
        self,
        label: str,
        spec: dict[str, Any],
        env: dict[str, str],
        log: IO[str],
        cpus: set[int] | None = None,
    ) -> None:
        log.flush()
        self.label = label
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._child", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            preexec_fn=_pinned(cpus),
        )
        self._read()  # {"ready": true} once warmed up

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(30)
            raise RuntimeError(f"serve child {self.label} ended (exit {self.proc.returncode})")
        result: dict[str, Any] = json.loads(line)
        return result

    def burst(self, kind: str, seconds: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"kind": kind, "seconds": seconds}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> int | None:
        """End the child; the number of threads it had at the end."""
        alive = None
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"stop": True}) + "\n")
            self.proc.stdin.flush()
            alive = self._read().get("threads_alive_at_end")
            self.proc.wait(30)
        except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait(10)
        return alive


def wait_or_kill(proc: subprocess.Popen[Any], timeout: float) -> None:
    """Wait up to ``timeout`` seconds for ``proc`` (asked to end) to end; then kill it."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _pinned(cpus: set[int] | None) -> Any:
    """A ``preexec_fn`` that keeps a child (and what it starts) on ``cpus``."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    port: int, path: str, seconds: float, connections: int = 1, cpus: set[int] | None = None
) -> dict[str, Any]:
    """Closed-loop load from ``wrk`` (one thread, ``connections`` connections), on ``cpus``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(WRK_SCRIPT)
        script = handle.name
    try:
        proc = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                script,
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
            preexec_fn=_pinned(cpus),
        )
    finally:
        os.unlink(script)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    wall = data["duration_us"] / 1e6
    return {
        "n": data["requests"],
        "median": data["median_us"] / 1e6,
        "p90": data["p90_us"] / 1e6,
        "p99": data["p99_us"] / 1e6,
        "mean": data["mean_us"] / 1e6,
        "throughput": data["requests"] / wall if wall > 0 else 0.0,
        "errors": data["errors"] + data["non2xx"],
    }


def run_python_client(port: int, path: str, seconds: float) -> dict[str, Any]:
    """Closed-loop load from a Python keep-alive client (in the harness process).

    The harness does nothing else meanwhile, so this is as good as a process of
    its own; its own cost per request (tens of µs) is the same for bare and
    monitored servers, which dilutes the ratios a little compared with ``wrk``.
    """
    from ._child import summarise

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    errors = 0
    began = time.perf_counter()
    deadline = began + seconds
    while True:
        t0 = time.perf_counter()
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
            if response.will_close:
                conn.close()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            if time.perf_counter() >= deadline:
                break
            continue
        t1 = time.perf_counter()
        latencies.append(t1 - t0)
        if t1 >= deadline:
            break
    conn.close()
    result = summarise(latencies, time.perf_counter() - began)
    result["errors"] = errors
    return result
