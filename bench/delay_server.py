"""A stand-in for a slow remote service: replies ``ok`` after the delay it is sent.

``python -m bench.delay_server`` listens on a free port of 127.0.0.1 and prints
the port on its first line. A client sends the delay in milliseconds and a
newline, and reads ``ok\\n`` back that much later. It stops by itself after
``--lifetime`` seconds (default one hour) or when its standard input closes.
"""

from __future__ import annotations

import argparse
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

from ._load import wait_or_kill


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(64)
        try:
            delay = min(max(float(line.strip() or 0) / 1000, 0.0), 60.0)
        except ValueError:
            delay = 0.0
        time.sleep(delay)
        self.wfile.write(b"ok\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class DelayServer:
    """This server in a process of its own, for the harness: ``start()``, then ``stop()``."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> tuple[str, int]:
        """Start it; the address to send delays to."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.delay_server", "--lifetime", "3600"],
            cwd=Path(__file__).resolve().parent.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        return ("127.0.0.1", int(self.proc.stdout.readline()))

    def stop(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # it ends when its standard input closes
        wait_or_kill(self.proc, 10)
        self.proc = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lifetime", type=float, default=3600.0)
    args = parser.parse_args()
    server = _Server(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stdin_closed = threading.Event()

    def wait_for_stdin_close() -> None:
        sys.stdin.read()
        stdin_closed.set()

    threading.Thread(target=wait_for_stdin_close, daemon=True).start()
    stdin_closed.wait(args.lifetime)
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
