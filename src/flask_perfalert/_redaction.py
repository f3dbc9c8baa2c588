"""Redaction of request data before it reaches any event, report, message or log.

A value whose key contains one of the deny-listed words (case-insensitively)
is replaced with ``"[Filtered]"``; credential headers are never captured at
all. Bodies are copied only when small and textual.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FILTERED = "[Filtered]"

#: Substrings of parameter and header names whose values are never shown.
DEFAULT_DENYLIST: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "auth",
    "credential",
    "private_key",
    "privatekey",
    "session",
    "cookie",
    "csrf",
    "xsrf",
    "card",
    "cvv",
    "cvc",
    "ssn",
    "signature",
    "jwt",
    "bearer",
    "passphrase",
)

#: Headers that are never captured, whatever the deny-list says.
NEVER_CAPTURED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)

#: Bodies larger than this are not parsed for parameters.
MAX_BODY_BYTES = 64 * 1024
#: A single value longer than this is cut, with a note of its full length.
MAX_VALUE_CHARS = 1024
#: At most this many parameters (and nesting levels) are kept.
MAX_ITEMS = 200
MAX_DEPTH = 8


class Redactor:
    def __init__(self, extra_keys: Iterable[str] = ()) -> None:
        words = {w.lower() for w in DEFAULT_DENYLIST}
        words.update(k.strip().lower() for k in extra_keys if k.strip())
        self.words = tuple(sorted(words))

    def is_secret(self, key: object) -> bool:
        name = str(key).lower()
        return any(word in name for word in self.words)

    def value(self, key: object, value: Any, depth: int = 0) -> Any:
        """``value`` with secrets filtered, recursively, and bounded in size."""
        if self.is_secret(key):
            return FILTERED
        return self._clean(value, depth)

    def _clean(self, value: Any, depth: int) -> Any:
        if depth >= MAX_DEPTH:
            return "[too deep]"
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(value.items()):
                if i >= MAX_ITEMS:
                    out["[truncated]"] = f"{len(value) - MAX_ITEMS} more items"
                    break
                out[truncate(str(k))] = self.value(k, v, depth + 1)
            return out
        if isinstance(value, list | tuple):
            items = [self._clean(v, depth + 1) for v in value[:MAX_ITEMS]]
            if len(value) > MAX_ITEMS:
                items.append(f"[{len(value) - MAX_ITEMS} more items]")
            return items
        if isinstance(value, str):
            return truncate(value)
        if value is None or isinstance(value, bool | int | float):
            return value
        return truncate(repr(value))

    def mapping(self, pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        """Redact ``(key, value)`` pairs; repeated keys become lists."""
        out: dict[str, Any] = {}
        for i, (key, value) in enumerate(pairs):
            if i >= MAX_ITEMS:
                out["[truncated]"] = "more parameters not shown"
                break
            key = truncate(str(key), 200)
            clean = self.value(key, value)
            if key in out:
                previous = out[key]
                out[key] = [*previous, clean] if isinstance(previous, list) else [previous, clean]
            else:
                out[key] = clean
        return out

    def headers(self, pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in pairs:
            if key.lower() in NEVER_CAPTURED_HEADERS:
                continue
            out[key] = FILTERED if self.is_secret(key) else truncate(value, 512)
        return out


def truncate(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text)} characters]"
