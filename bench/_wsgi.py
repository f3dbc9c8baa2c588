"""A request as a WSGI server makes it, for the benchmark children."""

from __future__ import annotations

import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

perf_counter = time.perf_counter
#: CPU time of the whole process (every thread): robust against other load on the machine.
process_time = time.process_time


def make_caller(app: Callable[..., Any]) -> Callable[..., tuple[float, float, float, str]]:
    """A minimal WSGI server loop: one request, returns (start, body sent, closed, status).

    ``sent``, a list, receives the process CPU time when the body was sent.
    """
    base = EnvironBuilder(path="/", base_url="http://127.0.0.1:8000/").get_environ()
    status: list[str] = []

    def write(data: bytes) -> None:
        pass

    def start_response(line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(line)
        return write

    def call(
        path: str, query: str = "", sent: list[float] | None = None
    ) -> tuple[float, float, float, str]:
        environ = base.copy()
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query
        environ["REQUEST_URI"] = environ["RAW_URI"] = f"{path}?{query}" if query else path
        environ["wsgi.input"] = BytesIO()
        status.clear()
        t0 = perf_counter()
        body = app(environ, start_response)
        for _chunk in body:
            pass
        t1 = perf_counter()
        if sent is not None:
            sent.append(process_time())
        close = getattr(body, "close", None)
        if close is not None:
            close()
        t2 = perf_counter()
        return t0, t1, t2, status[-1] if status else ""

    return call


def trivial_wsgi_app(environ: dict[str, Any], start_response: Any) -> Any:
    """The least a Werkzeug app does: a two-byte response."""
    return Response(b"ok", content_type="text/plain")(environ, start_response)
