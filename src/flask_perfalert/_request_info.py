"""What an event tells about the request: URL, parameters and headers, redacted.

Runs only for slow requests, after the response was sent, on the Werkzeug
request object that Flask left in the WSGI environ.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request

from ._redaction import MAX_BODY_BYTES, Redactor, truncate


def request_url(request: Request, redactor: Redactor) -> str:
    """The URL with secret query values filtered."""
    base = truncate(request.base_url, 2048)
    if not request.args:
        return base
    redacted = redactor.mapping(request.args.items(multi=True))
    pairs: list[tuple[str, str]] = []
    for key, value in redacted.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, item if isinstance(item, str) else json.dumps(item)))
    return f"{base}?{truncate(urlencode(pairs), 2048)}"


def request_params(request: Request, redactor: Redactor) -> dict[str, Any]:
    """Query-string and form values, and the top-level items of a JSON body."""
    pairs: list[tuple[str, Any]] = list(request.args.items(multi=True))
    length = request.content_length
    small = length is not None and length <= MAX_BODY_BYTES
    mimetype = request.mimetype
    if "form" in request.__dict__ or (
        small and mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        pairs.extend(request.form.items(multi=True))
        for key, storage in request.files.items(multi=True):
            pairs.append((key, f"[file {storage.filename!r}, {storage.mimetype}]"))
    elif request.is_json:
        pairs.extend(_json_items(request, small))
    elif length:
        pairs.append(("[body]", f"[{mimetype or 'unknown'} body, {length} bytes, not copied]"))
    return redactor.mapping(pairs)


def _json_items(request: Request, small: bool) -> list[tuple[str, Any]]:
    if not small:
        return [("[body]", f"[JSON body of {request.content_length} bytes, not copied]")]
    data = request.get_json(silent=True, cache=True)
    if data is None:
        raw = request.get_data(cache=True)
        return [("[body]", f"[malformed JSON body, {len(raw)} bytes]")] if raw else []
    if isinstance(data, dict):
        return list(data.items())
    return [("[json]", data)]


def request_headers(request: Request, redactor: Redactor) -> dict[str, str]:
    return redactor.headers(request.headers.items())
