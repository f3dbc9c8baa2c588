"""Redaction of request data before it reaches any event, report, message or log.

A value whose key contains one of the deny-listed words is replaced with
``"[Filtered]"``. Keys are compared in lower case with ``-``, ``.`` and spaces
read as ``_`` (``X-Api-Key`` is ``x_api_key``, ``apiKey`` is ``apikey``).
Credential headers are never captured at all, and everything kept is bounded
in size. docs/security.rst describes the rules; keep it in step with this file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

FILTERED = "[Filtered]"

#: Substrings of parameter and header names whose values are never shown.
#: Substring matching errs on the side of hiding: ``auth`` also hides ``author``.
DEFAULT_DENYLIST: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "passcode",
    "secret",
    "token",
    "api_key",
    "apikey",
    "access_key",
    "accesskey",
    "private_key",
    "privatekey",
    "auth",
    "credential",
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
)

#: Headers that are never captured, whatever the deny-list says.
NEVER_CAPTURED_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)

#: Bodies the view read but did not parse are parsed only up to this size.
MAX_BODY_BYTES = 64 * 1024
#: A single value longer than this is cut, with a note of its full length.
MAX_VALUE_CHARS = 1024
#: A single header value longer than this is cut.
MAX_HEADER_CHARS = 512
#: A key longer than this is cut (after it was checked against the deny-list).
MAX_KEY_CHARS = 200
#: At most this many items per mapping or list, and nesting levels.
MAX_ITEMS = 200
MAX_DEPTH = 8
#: At most this many values in all of one request's parameters (or headers).
MAX_TOTAL_ITEMS = 1000

_SEPARATORS = re.compile(r"[-.\s]+")
#: ``key=value`` pairs inside a header value (a query string, ``a=1; b=2``).
_PAIR = re.compile(r"(^|[?&;,\s])([^=&;,?#\s]+)=([^&;,#\s]*)")
#: Header values that carry a credential whatever the header is called.
_CREDENTIAL_VALUE = re.compile(r"^\s*(bearer|basic|digest|token|negotiate)\s+\S", re.IGNORECASE)


def normalise_key(key: str) -> str:
    return _SEPARATORS.sub("_", key.lower())


class _Budget:
    """What is left of one request's allowance of values."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items = MAX_TOTAL_ITEMS


class Redactor:
    """Applies the deny-list (built-in plus ``PERFALERT_REDACT_KEYS``) to request data."""

    def __init__(self, extra_keys: Iterable[str] = ()) -> None:
        extra = [normalise_key(k).strip("_") for k in extra_keys]
        #: ``"*"`` in ``PERFALERT_REDACT_KEYS``: every parameter and header value is hidden.
        self.everything = "*" in extra
        words = {normalise_key(w) for w in DEFAULT_DENYLIST}
        words.update(word for word in extra if word and word != "*")
        self.words = tuple(sorted(words))

    def is_secret(self, key: object) -> bool:
        if self.everything:
            return True
        name = normalise_key(str(key))
        return any(word in name for word in self.words)

    def _value(self, key: object, value: Any, depth: int, budget: _Budget) -> Any:
        if self.is_secret(key):
            return FILTERED
        return self._clean(value, depth, budget)

    def _clean(self, value: Any, depth: int, budget: _Budget) -> Any:
        if budget.items <= 0:
            return "[truncated]"
        budget.items -= 1
        if depth >= MAX_DEPTH:
            return "[too deep]"
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(value.items()):
                if i >= MAX_ITEMS or budget.items <= 0:
                    out["[truncated]"] = f"{len(value) - i} more items"
                    break
                out[text(k, MAX_KEY_CHARS)] = self._value(k, v, depth + 1, budget)
            return out
        if isinstance(value, list | tuple):
            items = []
            for i, v in enumerate(value):
                if i >= MAX_ITEMS or budget.items <= 0:
                    items.append(f"[{len(value) - i} more items]")
                    break
                items.append(self._clean(v, depth + 1, budget))
            return items
        if isinstance(value, str):
            return text(value)
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            return value if -(10**18) < value < 10**18 else "[large integer]"
        return "[" + type(value).__name__ + "]"

    def mapping(self, pairs: Iterable[tuple[Any, Any]]) -> dict[str, Any]:
        """Redact ``(key, value)`` pairs; repeated keys become lists."""
        budget = _Budget()
        out: dict[str, Any] = {}
        for i, (raw_key, value) in enumerate(pairs):
            if i >= MAX_ITEMS or budget.items <= 0:
                out["[truncated]"] = "more parameters not shown"
                break
            clean = self._value(raw_key, value, 0, budget)
            key = text(str(raw_key), MAX_KEY_CHARS)
            if key in out:
                previous = out[key]
                out[key] = [*previous, clean] if isinstance(previous, list) else [previous, clean]
            else:
                out[key] = clean
        return out

    def headers(self, pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        """Headers worth showing: never credentials, secret ones filtered, all bounded."""
        out: dict[str, str] = {}
        for key, value in pairs:
            if key.lower() in NEVER_CAPTURED_HEADERS:
                continue
            if len(out) >= MAX_ITEMS:
                out["[truncated]"] = "more headers not shown"
                break
            name = text(key, MAX_KEY_CHARS)
            if self.is_secret(key) or _CREDENTIAL_VALUE.match(value):
                out[name] = FILTERED
            else:
                out[name] = self.inline_pairs(text(value, MAX_HEADER_CHARS))
        return out

    def inline_pairs(self, value: str) -> str:
        """``value`` with the values of secret ``key=value`` pairs in it filtered."""
        if "=" not in value:
            return value

        def replace(match: re.Match[str]) -> str:
            lead, key, _ = match.groups()
            if self.is_secret(key) or self.is_secret(unquote_plus(key)):
                return f"{lead}{key}={FILTERED}"
            return match.group(0)

        return _PAIR.sub(replace, value)


def text(value: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` as valid Unicode (no lone surrogates), cut to ``limit`` characters."""
    if len(value) > limit:
        value = f"{value[:limit]}... [{len(value)} characters]"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value
