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

Each part falls back to a placeholder instead of raising, and the failure is
logged without its message (which could quote request data).
"""

from __future__ import annotations

import itertools
import json
import os
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from flask import Flask, Request
from werkzeug.exceptions import SecurityError

from ._logging import logger
from ._redaction import FILTERED, MAX_BODY_BYTES, MAX_ITEMS, Redactor, Secrets, text

#: The longest URL (or path) an event carries.
MAX_URL_CHARS = 2048
#: Characters left as they are in a path; everything else is percent-encoded, so
#: an event's URL is plain ASCII without quotes, spaces or angle brackets.
_PATH_SAFE = "/!$&()*+,;=:@-._~"
_FORM_TYPES = ("application/x-www-form-urlencoded",)
_SCHEMES = ("http", "https")


class RequestInfo(NamedTuple):
    """What an event shows of a request, redacted by name and by value."""

    #: The URL: ASCII, percent-encoded; it always parses with ``urlsplit``.
    url: str
    #: Query-string values, and the form fields or JSON values the view read.
    params: dict[str, Any]
    #: Headers worth showing (never credentials).
    headers: dict[str, str]
    #: ``"GET /path"`` for the profile's title: plain ASCII (see :func:`describe_request`).
    title: str


def describe_request(request: Request, redactor: Redactor) -> RequestInfo:
    """URL, parameters, headers and title of ``request``, with every secret filtered.

    First every source says what it hides by name (parameters, headers and
    the credentials they carry, URL variables, path parameters such as
    ``;jsessionid=``); then those values are filtered wherever else they
    appear. The title goes into a ``<script>`` block of the report, unescaped
    by pyinstrument, so it is percent-encoded and never holds ``<``.
    """
    secrets = Secrets()
    params = _guard(
        "parameters",
        lambda: redactor.mapping([*_query_items(request), *_body_items(request)], secrets),
        lambda error: {"[error]": f"[parameters not available: {error}]"},
    )
    headers = _guard(
        "headers",
        lambda: redactor.headers(request.headers.items(), secrets),
        lambda error: {"[error]": f"[headers not available: {error}]"},
    )
    path = _guard("path", lambda: _path(request, redactor, secrets), lambda error: None)
    query = _guard(
        "URL", lambda: redactor.mapping(_query_items(request), secrets), lambda error: None
    )
    method = quote(text(request.method, 20), safe="", errors="replace")
    if path is None:
        quoted = "/[path-not-available]"
    else:
        quoted = _cut(quote(secrets.scrub(path), safe=_PATH_SAFE, errors="replace"))
    return RequestInfo(
        url=_url(request, quoted if path is not None else None, query, secrets),
        params=secrets.scrub_all(params),
        headers=secrets.scrub_all(headers),
        title=f"{method} {quoted}",
    )


T = TypeVar("T")


def _guard(what: str, func: Callable[[], T], fallback: Callable[[str], T]) -> T:
    """``func()``, or ``fallback(error name)`` after logging the failure without its data."""
    try:
        return func()
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


def _cut(value: str) -> str:
    return value if len(value) <= MAX_URL_CHARS else value[:MAX_URL_CHARS] + "..."


def _query_items(request: Request) -> list[tuple[str, Any]]:
    return list(itertools.islice(request.args.items(multi=True), MAX_ITEMS + 1))


def _path(request: Request, redactor: Redactor, secrets: Secrets) -> str:
    """The path, decoded, with secret URL variables and path parameters filtered by name.

    ``/reset/<token>`` requested as ``/reset/abc`` reads ``/reset/[Filtered]``;
    ``/page;jsessionid=abc`` reads ``/page;jsessionid=[Filtered]``.
    """
    path = request.path
    hidden = [
        str(value) for key, value in (request.view_args or {}).items() if redactor.is_secret(key)
    ]
    secrets.add(hidden)
    if hidden:
        if all(secret and secret in path for secret in hidden):
            for secret in sorted(hidden, key=len, reverse=True):
                path = path.replace(secret, FILTERED)
        else:  # a converter changed the value: show the rule, not the path
            rule = request.url_rule
            path = rule.rule if rule is not None else FILTERED
    if ";" in path:
        path = "/".join(_path_parameters(segment, redactor, secrets) for segment in path.split("/"))
    return request.script_root + path


def _path_parameters(segment: str, redactor: Redactor, secrets: Secrets) -> str:
    name, *parameters = segment.split(";")
    shown = [name]
    for parameter in parameters:
        key, equals, value = parameter.partition("=")
        if equals and redactor.is_secret(key):
            secrets.add(value)
            parameter = f"{key}={FILTERED}"
        shown.append(parameter)
    return ";".join(shown)


def _url(request: Request, path: str | None, query: dict[str, Any] | None, secrets: Secrets) -> str:
    """The URL from its redacted parts; a placeholder that still parses when one failed."""
    environ = request.environ
    scheme = environ.get("wsgi.url_scheme")
    scheme = scheme if scheme in _SCHEMES else "http"
    if path is None or query is None:
        missing = "path" if path is None else "query"
        return f"{scheme}://{_server_address(environ, scheme)}/#{missing}-not-available"
    try:
        host = quote(request.host, safe=":[]", errors="replace")
        _ = urlsplit(f"{scheme}://{host}/").port  # a host that does not parse is not used
    except (SecurityError, ValueError):  # SecurityError: not in the app's TRUSTED_HOSTS
        host = _server_address(environ, scheme)
    base = f"{scheme}://{host}{path}"
    if not query:
        return _cut(base)
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            shown = item if isinstance(item, str) else json.dumps(item)
            pairs.append((secrets.scrub(key), secrets.scrub(shown)))
    return _cut(f"{base}?{urlencode(pairs, errors='replace')}")


def _server_address(environ: dict[str, Any], scheme: str) -> str:
    """The server's own name and port (the WSGI ``SERVER_NAME``), in a form that parses."""
    name = str(environ.get("SERVER_NAME") or "localhost")
    port = str(environ.get("SERVER_PORT") or "")
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"  # an IPv6 address
    host = quote(name, safe="[]:", errors="replace")
    default = (scheme, port) in (("http", "80"), ("https", "443"))
    if port.isdigit() and not default:
        host = f"{host}:{port}"
    try:
        _ = urlsplit(f"{scheme}://{host}/").port
    except ValueError:  # "[" without "]", a port out of range
        host = quote(name, safe="", errors="replace") or "localhost"
    return host


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


def request_from_environ(app: Flask, environ: dict[str, Any]) -> Request:
    """A request rebuilt from the environ, for a slow request never seen while running.

    Shallow: the body is not read again. The endpoint is matched afresh.
    """
    request: Request = app.request_class(environ, populate_request=False, shallow=True)
    try:
        adapter = app.url_map.bind_to_environ(environ, server_name=app.config["SERVER_NAME"])
        rule, args = adapter.match(return_rule=True)
        request.url_rule, request.view_args = rule, dict(args)
    except Exception:
        pass  # unmatched (404, 405): no endpoint
    return request
