"""What an event tells about the request: URL, parameters and headers, redacted.

Runs only for slow requests, after the response was sent, on the Werkzeug
request object that Flask left in the WSGI environ.

A request body is never read here: only what the view itself read and Flask
kept (``request.form``, ``request.get_json()``, ``request.get_data()``) is
shown. Reading after the response could block on a client that announced a
body and never sent it, hold a large upload in memory, or change what the
server does with the connection. A raw body is never copied: form fields and
JSON values are, redacted and bounded; anything else is described by type and
size.

Each function returns a placeholder instead of raising, and logs the failure
without its message (which could quote request data).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

from flask import Request
from werkzeug.exceptions import SecurityError

from ._redaction import FILTERED, MAX_BODY_BYTES, MAX_ITEMS, Redactor, text

logger = logging.getLogger("flask_perfalert")

T = TypeVar("T")

#: The longest URL (or path) an event carries.
MAX_URL_CHARS = 2048
#: Characters left as they are in a path; everything else is percent-encoded, so
#: an event's URL is plain ASCII without quotes, spaces or angle brackets.
_PATH_SAFE = "/!$&()*+,;=:@-._~"
_FORM_TYPES = ("application/x-www-form-urlencoded",)


def _guarded(
    what: str, fallback: Callable[[str], T]
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    def decorate(func: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(func)
        def guarded(*args: Any) -> T:
            try:
                return func(*args)
            except Exception as exc:
                # Not logger.exception: the message could quote request data.
                frame = traceback.extract_tb(exc.__traceback__)[-1]
                logger.error(
                    "Flask-PerfAlert could not read the request's %s (%s at %s:%s); "
                    "the event shows a placeholder.",
                    what,
                    type(exc).__name__,
                    os.path.basename(frame.filename),
                    frame.lineno,
                )
                return fallback(type(exc).__name__)

        return guarded

    return decorate


def _cut(value: str) -> str:
    return value if len(value) <= MAX_URL_CHARS else value[:MAX_URL_CHARS] + "..."


@_guarded("path", lambda error: f"[path not available: {error}]")
def request_path(request: Request, redactor: Redactor) -> str:
    """The path, percent-encoded, with the values of secret URL variables filtered.

    ``/reset/<token>`` requested as ``/reset/abc`` reads ``/reset/%5BFiltered%5D``.
    """
    path = request.path
    secrets = [
        str(value) for key, value in (request.view_args or {}).items() if redactor.is_secret(key)
    ]
    if secrets:
        if all(secret and secret in path for secret in secrets):
            for secret in sorted(secrets, key=len, reverse=True):
                path = path.replace(secret, FILTERED)
        else:  # a converter changed the value: show the rule, not the path
            rule = request.url_rule
            path = rule.rule if rule is not None else FILTERED
    full = request.script_root + path
    return _cut(quote(full, safe=_PATH_SAFE, errors="replace"))


@_guarded("URL", lambda error: f"[URL not available: {error}]")
def request_url(request: Request, redactor: Redactor) -> str:
    """The URL with secret query and path values filtered; ASCII, percent-encoded."""
    base = f"{request.scheme}://{_host(request)}{request_path(request, redactor)}"
    if not request.args:
        return _cut(base)
    redacted = redactor.mapping(itertools.islice(request.args.items(multi=True), MAX_ITEMS + 1))
    pairs: list[tuple[str, str]] = []
    for key, value in redacted.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, item if isinstance(item, str) else json.dumps(item)))
    return _cut(f"{base}?{urlencode(pairs, errors='replace')}")


def _host(request: Request) -> str:
    try:
        host = request.host
    except SecurityError:  # not in the app's TRUSTED_HOSTS; Flask answered 400
        return "[untrusted host]"
    return quote(host, safe=":[]", errors="replace")


@_guarded("parameters", lambda error: {"[error]": f"[parameters not available: {error}]"})
def request_params(request: Request, redactor: Redactor) -> dict[str, Any]:
    """Query-string values, and the form fields or JSON values the view read."""
    pairs: list[tuple[str, Any]] = list(
        itertools.islice(request.args.items(multi=True), MAX_ITEMS + 1)
    )
    pairs.extend(_body_items(request))
    return redactor.mapping(pairs)


def _body_items(request: Request) -> list[tuple[str, Any]]:
    cached = request.__dict__
    form = cached.get("form")
    if form:  # the view read request.form (or .values, .files)
        items: list[tuple[str, Any]] = list(itertools.islice(form.items(multi=True), MAX_ITEMS))
        files = cached.get("files")
        for key, storage in itertools.islice(files.items(multi=True) if files else (), MAX_ITEMS):
            name = text(str(storage.filename), 200)
            items.append((key, f"[file {name!r}, {text(storage.mimetype, 100)}, not copied]"))
        return items
    if cached.get("files"):
        return [
            (key, f"[file {text(str(s.filename), 200)!r}, not copied]")
            for key, s in itertools.islice(cached["files"].items(multi=True), MAX_ITEMS)
        ]
    mimetype = text(request.mimetype, 100) or "unknown type"
    for parsed in getattr(request, "_cached_json", ()):
        if parsed is not Ellipsis and parsed is not None:  # the view read request.json
            return _json_items(parsed)
    data = getattr(request, "_cached_data", None)
    if isinstance(data, bytes) and data:  # the view read request.data / get_data()
        if request.is_json:
            return _parse_json(data)
        if mimetype in _FORM_TYPES and len(data) <= MAX_BODY_BYTES:
            return parse_qsl(
                data.decode("utf-8", "replace"),
                keep_blank_values=True,
                max_num_fields=None,
                separator="&",
            )[:MAX_ITEMS]
        return [("[body]", f"[{mimetype} body, {len(data)} bytes, not copied]")]
    length = request.content_length
    if length:
        return [("[body]", f"[{mimetype} body, {length} bytes, not parsed by the view]")]
    if length is None and "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        return [("[body]", f"[{mimetype} body, not parsed by the view]")]
    return []


def _parse_json(data: bytes) -> list[tuple[str, Any]]:
    note = [("[body]", f"[malformed JSON body, {len(data)} bytes, not copied]")]
    if len(data) > MAX_BODY_BYTES:
        return [("[body]", f"[JSON body, {len(data)} bytes, not parsed]")]
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return note
    return _json_items(parsed)


def _json_items(parsed: Any) -> list[tuple[str, Any]]:
    if isinstance(parsed, dict):
        return list(itertools.islice(parsed.items(), MAX_ITEMS + 1))
    return [("[json]", parsed)]


@_guarded("headers", lambda error: {"[error]": f"[headers not available: {error}]"})
def request_headers(request: Request, redactor: Redactor) -> dict[str, str]:
    return redactor.headers(request.headers.items())


def profile_description(request: Request, redactor: Redactor) -> str:
    """``"GET /path"`` for the profile's title: redacted, and plain ASCII.

    pyinstrument writes it unescaped into a ``<script>`` block of the report,
    so it must never hold ``<`` (a path of ``/</script><script>...`` would run).
    """
    method = quote(text(request.method, 20), safe="", errors="replace")
    return f"{method} {request_path(request, redactor)}"
