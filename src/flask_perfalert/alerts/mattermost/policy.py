"""What each answer does to an alert: the one table of retries, keeps, smaller posts and drops.

Every answer a call can get, from Mattermost or from a proxy in front of it
(nginx answers 408, 413, 429, 502, 503, 504 with HTML pages of its own),
goes through :func:`rule_for`, which finds its row in :data:`POLICY`. The row
says what the delivery code does (:class:`Action`), in which words
(``reason``, filled in by the client) and with which log line (``log``, filled
in by the delivery code). docs/mattermost.rst shows the same table; a test
keeps the two alike.

Nothing but a permanent refusal of the message itself (a 400 whose
Mattermost error id says the post is invalid) drops an alert: an answer this
table does not know keeps the alert in the spool, for a person to look at.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Literal

#: The calls an alert makes (``token``: ``flask perfalert check`` only).
Call = Literal["token", "upload", "post", "lookup"]
#: How each call is named in a reason ("could not upload the report: ...").
WHAT: dict[Call, str] = {
    "token": "check the token",
    "upload": "upload the report",
    "post": "create the post",
    "lookup": "look for the post",
}


class Action(Enum):
    #: Try again after a back-off (``PERFALERT_MATTERMOST_MAX_RETRIES`` times),
    #: then keep the alert in the spool for the replay.
    RETRY = "retry with back-off"
    #: Keep the alert in the spool until someone fixes what the reason names.
    KEEP = "keep in the spool"
    #: Send less: the post without the report, or a shorter message.
    SMALLER = "send a smaller post"
    #: The message itself is refused for good: drop it, saying why.
    DROP = "drop"


@dataclass(frozen=True)
class LogLine:
    """A line the delivery code logs on ``flask_perfalert``; ``text`` is a format string."""

    level: int
    text: str

    def format(self, **fields: object) -> str:
        return self.text.format(**fields)

    def __str__(self) -> str:
        return f"{logging.getLevelName(self.level)} {self.text}"


# The log lines; ``{reason}`` is the row's reason, filled in.
LOG_RETRY = LogLine(
    logging.INFO, "Mattermost alert for {summary}: {reason}; try {n} of {tries} in {delay} s."
)
#: After the last retry of a ``RETRY`` row (or a Retry-After too long to wait for here).
LOG_RETRIES_OVER = LogLine(
    logging.WARNING,
    "Mattermost alert for {summary} kept in the spool {spool}: {reason} (after {tries} "
    "tries); it is sent again later.",
)
LOG_KEEP = LogLine(
    logging.ERROR,
    "Mattermost alert for {summary} kept in the spool {spool}: {reason}; it is sent again later.",
)
LOG_WITHOUT_REPORT = LogLine(
    logging.WARNING,
    "Mattermost alert for {summary}: {reason}; posting it without the report ({report}).",
)
LOG_SHORTER = LogLine(
    logging.WARNING,
    "Mattermost alert for {summary}: {reason}; posting a shorter message ({report}).",
)
LOG_DROP = LogLine(logging.ERROR, "Mattermost alert for {summary} dropped: {reason}.")
#: A replay that stops (no answer, a 429, a settings problem); at ERROR for a ``KEEP``.
LOG_REPLAY_STOPS = LogLine(
    logging.WARNING, "Mattermost alerts wait in the spool {spool}: {reason}."
)


@dataclass(frozen=True)
class Rule:
    """One row: which answers it covers, what happens, and what is logged."""

    #: The answers, in the words of the docs ("502, 503, 504 and other 5xx").
    answer: str
    #: The statuses it covers; ``None``: no HTTP answer at all.
    statuses: range | frozenset[int] | None
    action: Action
    #: The reason logged and shown, with ``{what}``, ``{where}``, ``{status}``,
    #: ``{said}`` (the server's words) and ``{channel}`` filled in.
    reason: str
    #: The log line (one of the ``LOG_*`` above).
    log: LogLine
    #: Only for these calls; ``None``: any call.
    calls: frozenset[Call] | None = None
    #: Only when the answer is Mattermost's own error (JSON with an ``id``) whose
    #: id starts so; ``("",)``: any of Mattermost's errors, no proxy's page.
    error_ids: tuple[str, ...] | None = None
    #: The setting the reason asks to check (a ``KEEP`` an admin fixes).
    setting: str | None = None
    #: Whether a 429's Retry-After (or X-Ratelimit-Reset) sets the wait.
    honours_retry_after: bool = False

    def covers(self, status: int | None, call: Call, error_id: str | None) -> bool:
        if self.statuses is None or status is None:
            if self.statuses is not None or status is not None:
                return False
        elif status not in self.statuses:
            return False
        if self.calls is not None and call not in self.calls:
            return False
        if self.error_ids is not None:
            return error_id is not None and error_id.startswith(self.error_ids)
        return True


_5XX = range(500, 600)

#: The policy, first matching row first. ``UNKNOWN`` catches the rest.
POLICY: tuple[Rule, ...] = (
    Rule(
        "No answer: connection refused or reset, timeout, an answer that is not Mattermost's JSON",
        None,
        Action.RETRY,
        "could not {what}: {said}",
        LOG_RETRY,
    ),
    Rule(
        "408 Request Timeout",
        frozenset({408}),
        Action.RETRY,
        "could not {what}: {where} gave up waiting for the request (408){said}",
        LOG_RETRY,
    ),
    Rule(
        "425 Too Early",
        frozenset({425}),
        Action.RETRY,
        "could not {what}: {where} answered too early (425){said}",
        LOG_RETRY,
    ),
    Rule(
        "429 Too Many Requests",
        frozenset({429}),
        Action.RETRY,
        "could not {what}: Mattermost asks to slow down (429)",
        LOG_RETRY,
        honours_retry_after=True,
    ),
    Rule(
        "401 Unauthorized",
        frozenset({401}),
        Action.KEEP,
        "Mattermost rejected the token (401); check PERFALERT_MATTERMOST_TOKEN{said}",
        LOG_KEEP,
        setting="PERFALERT_MATTERMOST_TOKEN",
    ),
    Rule(
        "403 Forbidden",
        frozenset({403}),
        Action.KEEP,
        "channel not found or bot not a member (403): could not {what} in channel "
        "{channel}; check PERFALERT_MATTERMOST_CHANNEL_ID and add the bot to the "
        "channel{said}",
        LOG_KEEP,
        setting="PERFALERT_MATTERMOST_CHANNEL_ID",
    ),
    Rule(
        "404 Not Found, 405 Method Not Allowed",
        frozenset({404, 405}),
        Action.KEEP,
        "could not {what}: not found ({status}) on {where}; is PERFALERT_MATTERMOST_URL "
        "the Mattermost server?{said}",
        LOG_KEEP,
        setting="PERFALERT_MATTERMOST_URL",
    ),
    Rule(
        "413 Content Too Large on the upload",
        frozenset({413}),
        Action.SMALLER,
        "report too large (413){said}",
        LOG_WITHOUT_REPORT,
        calls=frozenset({"upload"}),
    ),
    Rule(
        "413 Content Too Large on the post",
        frozenset({413}),
        Action.SMALLER,
        "post too large (413){said}",
        LOG_SHORTER,
        calls=frozenset({"post"}),
    ),
    Rule(
        "400 or 501 from Mattermost on the upload (a file it refuses, file uploads disabled)",
        frozenset({400, 501}),
        Action.SMALLER,
        "Mattermost refused the report ({status}){said}",
        LOG_WITHOUT_REPORT,
        calls=frozenset({"upload"}),
        error_ids=("",),
    ),
    Rule(
        "400 on the post with a Mattermost error id saying the post is invalid "
        "(``model.post.is_valid.*``, ``api.post.*``)",
        frozenset({400}),
        Action.DROP,
        "Mattermost refused the message itself (400){said}",
        LOG_DROP,
        calls=frozenset({"post"}),
        error_ids=("model.post.is_valid.", "api.post."),
    ),
    Rule(
        "500, 502, 503, 504 and every other 5xx",
        _5XX,
        Action.RETRY,
        "could not {what}: {where} answered {status}{said}",
        LOG_RETRY,
    ),
)

#: Any other answer: another 4xx, a 400 that is not about the message (a
#: proxy's page, a channel id Mattermost cannot parse), a status nobody expects.
UNKNOWN = Rule(
    "Anything else (another 4xx, a 400 not about the message, an unexpected status)",
    range(0, 1000),
    Action.KEEP,
    "could not {what}: {where} refused the request ({status}){said}; check the server "
    "and any proxy in front of it",
    LOG_KEEP,
)

#: A post still refused as too large (413) once cut to its heading: a body size
#: limit someone must raise. Kept in the spool, like a settings problem.
SHORTEST_REFUSED = Rule(
    "413 on the post, even cut to its heading",
    frozenset({413}),
    Action.KEEP,
    "{said}",
    LOG_KEEP,
    calls=frozenset({"post"}),
    setting="the body size limit of the server or its proxy",
)

#: The answer that stands for "no HTTP answer": the client's own findings.
NO_ANSWER = POLICY[0]


def rule_for(status: int | None, call: Call, error_id: str | None = None) -> Rule:
    """The row of :data:`POLICY` for an answer; :data:`UNKNOWN` if none covers it."""
    for rule in POLICY:
        if rule.covers(status, call, error_id):
            return rule
    return UNKNOWN
