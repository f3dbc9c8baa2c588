"""What every store is: the one :class:`Store` protocol, and what stores agree on.

A store keeps the de-duplication window (``claim``) and, when it is shared by
every worker, the counters of every worker (``add_counters``, ``counters``;
see ``flask_perfalert.stats``).

Counters are added in *batches*: the counts since the sender's previous batch,
numbered ``1, 2, 3, ...`` by a random sender id made per process. A shared
store applies a batch only if its number is higher than the last one it
applied for that sender, so a batch sent again after an error whose outcome is
unknown (the reply lost in a timeout) is counted once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple, Protocol

#: endpoint -> histogram bucket -> count (see ``flask_perfalert.latency``).
Histograms = Mapping[str, Mapping[int, int]]
#: The wall clock of the window (tests pass a fake one).
Clock = Callable[[], float]
#: Called with the decision of a claim that was held (True: alert), see ``Store.claim``.
Later = Callable[[bool], None]
#: (sender id, batch number), or None for counts sent without a batch.
Batch = tuple[str, int]
#: Counter name -> what to add.
Deltas = Mapping[str, float]

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
#: What may follow the userinfo's "@": a host (or [IPv6]) and a port, then the end or / ? #.
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)(?::\d*)?")
_END_OF_HOST = re.compile(r"[/?#]|$")
_SECRET_QUERY = re.compile(r"(?i)([?&][^=&#]*(?:pass|secret|token|auth|sig|key)[^=&#]*=)[^&#]*")


def masked_uri(text: str, *, address_only: bool = False) -> str:
    """``text`` with the credentials of every URI in it masked; safe for logs and output.

    ``redis://:p@ss@host/0?password=x`` reads ``redis://:**********@host/0?password=**********``:
    the userinfo ends at the last ``@`` that a host follows, so a password may
    hold ``@`` (and ``/``, ``?``, ``#``, which a URI should percent-encode).
    With ``address_only``, only scheme, host, port and path are kept
    (``redis://host/0``), as a store describes itself.
    """
    return _URI.sub(lambda match: _mask(match.group(0), address_only), text)


def _mask(uri: str, address_only: bool) -> str:
    scheme, _, rest = uri.partition("://")
    at = _userinfo_end(rest)
    userinfo, hostpart = (rest[:at], rest[at + 1 :]) if at >= 0 else (None, rest)
    if address_only:
        host_end = _END_OF_HOST.search(hostpart)
        host = hostpart[: host_end.start()] if host_end else hostpart
        path = re.split(r"[?#]", hostpart[len(host) :], maxsplit=1)[0]
        return f"{scheme}://{host or 'localhost'}{path}"
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        # "user:password" keeps the user; a bare userinfo may be a token: masked whole.
        shown = f"{user}:{_MASK}" if colon else _MASK
        hostpart = f"{shown}@{hostpart}"
    return f"{scheme}://" + _SECRET_QUERY.sub(lambda m: m.group(1) + _MASK, hostpart)


def _userinfo_end(rest: str) -> int:
    """Where the userinfo of ``rest`` (a URI after ``scheme://``) ends: its "@", or -1."""
    if "@" not in rest:
        return -1
    netloc = rest[: _END_OF_HOST.search(rest).start()]  # type: ignore[union-attr]
    if "@" not in netloc:
        if not netloc:
            return -1  # no authority (sqlite:///path/a@b.db): the "@" is in the path
        path = re.split(r"[?#]", rest[len(netloc) :], maxsplit=1)[0]
        if _HOST_PORT.fullmatch(netloc) and "@" not in path:
            return -1  # a plain host: the "@" is in the query or the fragment
    for at in reversed([i for i, char in enumerate(rest) if char == "@"]):
        host = _HOST_PORT.match(rest, at + 1)
        if host is not None and _END_OF_HOST.match(rest, host.end()):
            return at
    return rest.rfind("@")  # no host follows any "@": mask all that could be a password


class KeyState(NamedTuple):
    """What a store keeps of a key besides its window, for every worker."""

    #: Seconds the worst request (or call) alerted for in the window took.
    worst: float = 0.0
    #: Slow ones the window suppressed since the last alert.
    since: int = 0
    #: Slow ones the window suppressed in all (``flask perfalert stats``).
    suppressed: int = 0
    #: Alerts sent: the first of each window, and escalations.
    alerts: int = 0
    #: When the last alerted request (or call) ended: wall-clock seconds since the epoch.
    alerted_end: float = 0.0


class Settled(NamedTuple):
    """What a slow request (or call) comes to, once its claim was decided."""

    #: True: alert (the first of the window, or an escalation).
    alert: bool
    #: For an escalation: the worst alerted before it (seconds); else None.
    escalated_from: float | None
    #: The slow ones suppressed since the previous alert (shown with this one).
    suppressed_before: int


def settle_state(
    state: KeyState | None, seconds: float, first: bool, factor: float, started: float
) -> tuple[KeyState, Settled]:
    """The new state of a key, and the outcome, for one slow request or call.

    Every store applies this one rule, atomically: the first of a window
    alerts; a later one alerts again (an escalation) when it took at least
    ``factor`` times the worst alerted so far, so a key escalates at most once
    per ``factor`` (twice as slow, by default); the others are counted.

    ``started`` is when this one began (wall clock). Only one that began after
    the last alerted one had ended is "later": one that ran beside it (on
    another worker or host, slower there) is part of what was alerted, however
    much slower, and is counted.
    """
    state = state or KeyState()
    end = started + seconds
    if first:
        return (
            KeyState(seconds, 0, state.suppressed, state.alerts + 1, end),
            Settled(True, None, state.since),
        )
    if state.worst > 0 and seconds >= factor * state.worst and started >= state.alerted_end:
        return (
            KeyState(seconds, 0, state.suppressed, state.alerts + 1, end),
            Settled(True, state.worst, state.since),
        )
    return (
        state._replace(since=state.since + 1, suppressed=state.suppressed + 1),
        Settled(False, None, 0),
    )


def state_ttl(window_seconds: float) -> float:
    """Seconds a key's state outlives its last change: the next window must see it."""
    return max(2 * window_seconds, window_seconds + 86400.0)


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
        self, app_key: str, deltas: Deltas, batch: Batch | None = None, *, retry_now: bool = False
    ) -> bool:
        """Add this process's counts to the app's; True once the store has them.

        ``retry_now`` (at exit) tries even while a failed store waits for its next try.
        """
        ...

    def counters(self, app_key: str) -> dict[str, float]:
        """Every worker's counters of the app, summed; ``{}`` if none were added."""
        ...

    def settle(
        self,
        key: str,
        seconds: float,
        first: bool,
        factor: float,
        window_seconds: float,
        started: float,
    ) -> Settled:
        """Apply :func:`settle_state` to ``key``'s state, atomically for every worker.

        ``started``: when the request (or call) began, wall-clock seconds since the epoch.
        """
        ...

    def key_states(self) -> dict[str, KeyState]:
        """The state of every key of this store's prefix (without the prefix)."""
        ...

    def add_latencies(self, app_key: str, slot: int, histograms: Histograms) -> bool:
        """Add sampled durations (endpoint -> bucket -> count) to hour ``slot``."""
        ...

    def latencies(self, app_key: str, endpoint: str, slots: Iterable[int]) -> dict[int, int]:
        """The endpoint's histogram summed over ``slots``, from every worker."""
        ...

    def prepare(self) -> None:
        """Check the store now, at start-up (connect, create the file); raises if it cannot."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
