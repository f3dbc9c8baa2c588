"""A stand-in for a slow remote service: replies ``ok`` after the delay it is sent.

``python -m bench.delay_server`` listens on a free port of 127.0.0.1 and prints
the port on its first line. A client sends the delay in milliseconds and a
newline, and reads ``ok\\n`` back that much later. It stops by itself after
``--lifetime`` seconds (default one hour) or when its standard input closes.
"""

from __future__ import annotations

import argparse
import socketserver
import sys
import threading
import time


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
