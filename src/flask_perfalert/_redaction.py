"""Redaction of request data before it reaches any event, report, message or log.

By name
    A value whose key matches the deny-list is replaced with ``"[Filtered]"``.
    Keys are compared in lower case with ``-``, ``.`` and spaces read as
    ``_``, and camelCase split at its capitals (``X-Api-Key`` is
    ``x_api_key``, ``apiKey`` is ``api_key``). Long, telling words match
    anywhere in a key (``password`` hides ``user_password``); short ones only
    as a whole part of it (``pin`` hides ``user_pin``, not ``shipping``); and
    ``code`` and ``state`` (OAuth's) only as the whole key.

By value
    Every value filtered by name, every credential a header carries (those
    never captured too: ``Authorization``, ``Cookie``, ...) is a *secret* of
    the request. :class:`Secrets` then filters it wherever else it appears in
    the same event: a confirmation field, a Referer, another header, the URL.

Credential headers are never captured at all, everything kept is bounded in
size, and control characters are shown escaped (:func:`printable`).
docs/security.rst describes the rules; keep it in step with this file.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

FILTERED = "[Filtered]"

#: Words of parameter and header names whose values are never shown, matched
#: anywhere in a name. Substring matching errs on the side of hiding: ``auth``
#: also hides ``author``. Sentry's default deny-list is covered.
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
    "sessid",
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
    "symfony",
    "x_forwarded_for",
)
#: Short words that hide a value only as a whole part of its name
#: (``X-Service-Key``, ``user_pin``, ``connect.sid``), so ``keyword`` or
#: ``shipping`` stay visible.
DENIED_PARTS: tuple[str, ...] = (
    "key",
    "sig",
    "sid",
    "pin",
    "otp",
    "totp",
    "hotp",
    "mfa",
    "pass",
    "creds",
    "confirm",
    "nonce",
    "salt",
)
#: Names that hide a value only when they are the whole name (OAuth's parameters).
DENIED_NAMES: tuple[str, ...] = ("code", "state")

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
#: A secret shorter than this is filtered by name only (a "1" would hide every 1).
MIN_SECRET_CHARS = 4
#: Values filtered by name but too common to hide everywhere else.
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "yes", "no", "on", "off"})

_SEPARATORS = re.compile(r"[-.\s]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_PARTS = re.compile(r"[a-z0-9]+")
#: ``key=value`` pairs inside a header value (a query string, a fragment, ``a=1; b=2``);
#: a value may be quoted (``token="a b"``).
_PAIR = re.compile(r'(^|[?&;,#\s])([^=&;,?#\s]+)=("(?:[^"\\]|\\.)*"?|[^&;,#\s]*)')
#: Header values that carry a credential whatever the header is called.
_CREDENTIAL_VALUE = re.compile(
    r"^\s*(bearer|basic|digest|token|negotiate|ntlm|hoba|mutual|vapid|oauth|apikey|"
    r"scram-sha-1|scram-sha-256|aws4-hmac-sha256|sharedaccesssignature)\s+(\S.*)$",
    re.IGNORECASE | re.DOTALL,
)
#: What a terminal or a browser would act on: C0 and C1 controls, line and
#: paragraph separators, bidirectional and zero-width format characters.
_UNPRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]"
)


def normalise_key(key: str) -> str:
    return _SEPARATORS.sub("_", key.lower())


def printable(text: str, keep: str = "") -> str:
    """``text`` with every control or invisible format character escaped (``\\x00``).

    ``keep`` lists characters left as they are (the report keeps line breaks).
    Use it wherever text from a request or an app is printed to a terminal.
    """

    def escape(match: re.Match[str]) -> str:
        char = match.group(0)
        if char in keep:
            return char
        return char.encode("unicode_escape").decode("ascii")

    return _UNPRINTABLE.sub(escape, text)


def text(value: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` as valid, printable Unicode (line breaks kept), cut to ``limit`` characters."""
    if len(value) > limit:
        value = f"{value[:limit]}... [{len(value)} characters]"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return printable(value, keep="\t\n\r")


class Secrets:
    """The secret values of one request, filtered wherever they appear in its event."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: Any) -> None:
        """Note ``value`` (every string and number in it) as secret."""
        if isinstance(value, dict):
            for item in value.values():
                self.add(item)
        elif isinstance(value, list | tuple):
            for item in value:
                self.add(item)
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            raw = str(value).strip()
            if len(raw) >= MIN_SECRET_CHARS and raw.lower() not in _NOT_SECRET_VALUES:
                # As written, and as it appears in a URL or a form body.
                self._values.update({raw, quote(raw, safe=""), quote_plus(raw), quote(raw)})
                self._pattern = None

    def scrub(self, value: str) -> str:
        """``value`` with every secret in it replaced by ``[Filtered]``."""
        if not self._values or not value:
            return value
        if self._pattern is None:
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
        return self._pattern.sub(FILTERED, value)

    def scrub_all(self, value: Any) -> Any:
        """``value`` (a string, or a mapping or list of them) with every secret filtered."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub_all(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.scrub_all(v) for v in value]
        return value

    def add_credentials(self, header: str, value: str) -> None:
        """Note the credential in a header value (``Bearer x``, ``Basic ...``, cookies)."""
        if header.lower() in ("cookie", "set-cookie"):
            for pair in value.split(";"):
                self.add(pair.partition("=")[2].strip().strip('"'))
            return
        match = _CREDENTIAL_VALUE.match(value)
        credential = match.group(2).strip() if match else value.strip()
        self.add(credential)
        if match and match.group(1).lower() == "basic":
            try:
                decoded = base64.b64decode(credential, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return
            self.add(decoded.partition(":")[2])
        for found in _PAIR.finditer(value):  # SharedAccessSignature sr=...&sig=...
            self.add(found.group(3).strip('"'))


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
        raw = str(key)
        name = normalise_key(raw)
        split = normalise_key(_CAMEL.sub("_", raw))
        if any(word in name or word in split for word in self.words):
            return True
        parts = set(_PARTS.findall(split))
        return bool(parts.intersection(DENIED_PARTS)) or name.strip("_") in DENIED_NAMES

    def _value(self, key: object, value: Any, depth: int, budget: _Budget, secrets: Secrets) -> Any:
        if self.is_secret(key):
            secrets.add(value)
            return FILTERED
        return self._clean(value, depth, budget, secrets)

    def _clean(self, value: Any, depth: int, budget: _Budget, secrets: Secrets) -> Any:
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
                out[text(str(k), MAX_KEY_CHARS)] = self._value(k, v, depth + 1, budget, secrets)
            return out
        if isinstance(value, list | tuple):
            items = []
            for i, v in enumerate(value):
                if i >= MAX_ITEMS or budget.items <= 0:
                    items.append(f"[{len(value) - i} more items]")
                    break
                items.append(self._clean(v, depth + 1, budget, secrets))
            return items
        if isinstance(value, str):
            return text(value)
        if value is None or isinstance(value, bool | float):
            return value
        if isinstance(value, int):
            return value if -(10**18) < value < 10**18 else "[large integer]"
        return "[" + type(value).__name__ + "]"

    def mapping(
        self, pairs: Iterable[tuple[Any, Any]], secrets: Secrets | None = None
    ) -> dict[str, Any]:
        """Redact ``(key, value)`` pairs by name; repeated keys become lists.

        The values filtered are noted in ``secrets``.
        """
        secrets = Secrets() if secrets is None else secrets
        budget = _Budget()
        out: dict[str, Any] = {}
        for i, (raw_key, value) in enumerate(pairs):
            if i >= MAX_ITEMS or budget.items <= 0:
                out["[truncated]"] = "more parameters not shown"
                break
            clean = self._value(raw_key, value, 0, budget, secrets)
            key = text(str(raw_key), MAX_KEY_CHARS)
            if key in out:
                previous = out[key]
                out[key] = [*previous, clean] if isinstance(previous, list) else [previous, clean]
            else:
                out[key] = clean
        return out

    def headers(
        self, pairs: Iterable[tuple[str, str]], secrets: Secrets | None = None
    ) -> dict[str, str]:
        """Headers worth showing: never credentials, secret ones filtered, all bounded.

        The credentials seen (in captured headers or not) are noted in ``secrets``.
        """
        secrets = Secrets() if secrets is None else secrets
        out: dict[str, str] = {}
        for key, value in pairs:
            never = key.lower() in NEVER_CAPTURED_HEADERS
            if never or self.is_secret(key) or _CREDENTIAL_VALUE.match(value):
                secrets.add_credentials(key, value)
                if never:
                    continue
                if len(out) < MAX_ITEMS:
                    out[text(key, MAX_KEY_CHARS)] = FILTERED
                continue
            if len(out) >= MAX_ITEMS:
                out["[truncated]"] = "more headers not shown"
                continue  # the credentials of the rest are still noted
            out[text(key, MAX_KEY_CHARS)] = self.inline_pairs(
                text(value, MAX_HEADER_CHARS), secrets
            )
        return out

    def inline_pairs(self, value: str, secrets: Secrets | None = None) -> str:
        """``value`` with the values of secret ``key=value`` pairs in it filtered."""
        if "=" not in value:
            return value

        def replace(match: re.Match[str]) -> str:
            lead, key, found = match.groups()
            if self.is_secret(key) or self.is_secret(unquote_plus(key)):
                if secrets is not None:
                    secrets.add(unquote_plus(found.strip('"')))
                    secrets.add(found.strip('"'))
                return f"{lead}{key}={FILTERED}"
            return match.group(0)

        return _PAIR.sub(replace, value)
