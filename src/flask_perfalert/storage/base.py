"""What every store is: the one :class:`Store` protocol, and what stores agree on.

A store keeps the de-duplication window (``claim``) and, when it is shared by
every worker, the counters of every worker (``add_counters``, ``counters``;
see ``flask_perfalert._counters``).

Counters are added in *batches*: the counts since the sender's previous batch,
numbered ``1, 2, 3, ...`` by a random sender id made per process. A shared
store applies a batch only if its number is higher than the last one it
applied for that sender, so a batch sent again after an error whose outcome is
unknown (the reply lost in a timeout) is counted once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Protocol
from urllib.parse import urlsplit

#: The wall clock of the window (tests pass a fake one).
Clock = Callable[[], float]
#: Called with the decision of a claim that was held (True: alert), see ``Store.claim``.
Later = Callable[[bool], None]
#: (sender id, batch number), or None for counts sent without a batch.
Batch = tuple[str, int]

#: Seconds the counters of an app outlive the last batch added to them (Redis).
COUNTER_TTL = 30 * 86400
#: Seconds a sender's last batch number is remembered after its last batch.
SENDER_TTL = 86400
#: A sender that added a batch in this many seconds counts in ``workers_seen``.
WORKERS_RECENT = 600.0
#: Names in ``counters()`` that are not summed counts.
SINCE = "since"
WORKERS_SEEN = "workers_seen"

_MASK = "**********"
#: A URI inside any text (a setting's value, the repr of a list of them).
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]*")
_PASSWORD = re.compile(r"(?<=://)([^/@?#]*?):([^/@?#]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&][^=&#]*pass[^=&#]*=)[^&#]*")


def masked_uri(text: str, *, address_only: bool = False) -> str:
    """``text`` with the password of every URI in it masked; safe for logs and output.

    ``redis://:secret@host/0?password=x`` reads ``redis://:**********@host/0?password=**********``;
    with ``address_only``, only scheme, host, port and path are kept
    (``redis://host/0``), as a store describes itself.
    """
    return _URI.sub(lambda match: _mask(match.group(0), address_only), text)


def _mask(uri: str, address_only: bool) -> str:
    if address_only:
        try:
            parts = urlsplit(uri)
            host = parts.hostname or "localhost"
            port = parts.port
        except ValueError:
            return f"{uri.partition('://')[0]}://(invalid address)"
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{port}" if port is not None else host
        return f"{parts.scheme}://{netloc}{parts.path}"
    uri = _PASSWORD.sub(lambda m: f"{m.group(1)}:{_MASK}@", uri)
    return _QUERY_PASSWORD.sub(lambda m: m.group(1) + _MASK, uri)


class Store(Protocol):
    """Where the window is kept: ``memory://``, ``sqlite://``, ``redis://``.

    :func:`~flask_perfalert.storage.open_store` returns a store whose methods
    never raise (a shared one wrapped in a
    :class:`~flask_perfalert.storage.FallbackStore`); the shared stores it
    wraps raise when they cannot answer.
    """

    #: Where the store is, for logs and ``flask perfalert config`` (no credentials).
    description: str
    #: True when every worker (and host) using it sees the same claims and counters.
    shared: bool

    def claim(self, key: str, window_seconds: float, later: Later | None = None) -> bool | None:
        """True for exactly one caller per ``key`` per window (it alerts); claims it.

        A store that cannot answer now may hold the claim instead when the caller
        passes ``later``: it returns None and calls ``later(won)`` once it knows
        (see :class:`~flask_perfalert.storage.FallbackStore`). Without ``later``
        the answer is True or False.
        """
        ...

    def add_counters(
        self,
        app_key: str,
        deltas: Mapping[str, float],
        batch: Batch | None = None,
        *,
        retry_now: bool = False,
    ) -> bool:
        """Add this process's counts to the app's; True once the store has them.

        ``retry_now`` (at exit) tries even while a failed store waits for its next try.
        """
        ...

    def counters(self, app_key: str) -> dict[str, float]:
        """Every worker's counters of the app, summed; ``{}`` if none were added."""
        ...

    def prepare(self) -> None:
        """Check the store now, at start-up (connect, create the file); raises if it cannot."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
