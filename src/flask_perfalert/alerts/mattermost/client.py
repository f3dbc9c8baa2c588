"""Talking to Mattermost through ``mattermostdriver``, and naming what went wrong.

* :class:`MattermostClient` makes the three calls an alert needs (upload the
  report, create the post, look a post up) and turns every failure into a
  :class:`MattermostError` whose message is safe to log and to show: it never
  contains the token, and it says what to do ("Mattermost rejected the token
  (401)"). The error carries its row of the policy (:mod:`.policy`): what the
  delivery code does with the alert. A proxy's HTML page is named by its
  title, so the reason says who answered.
* HTTP calls are bounded by the driver's ``request_timeout`` option, which it
  passes to ``requests`` as ``timeout``; its ``timeout`` option only concerns
  the websocket and does not bound HTTP calls.
* The driver logs every error response on its own loggers; those records are
  dropped and any token is masked in the rest (:func:`quiet_driver_logging`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from mattermostdriver import Driver

from ...settings import MASK
from .address import ServerAddress
from .policy import NO_ANSWER, WHAT, Action, Call, Rule, rule_for

_DRIVER_LOGGERS = ("mattermostdriver", "mattermostdriver.api", "mattermostdriver.websocket")

#: The longest wait a 429's Retry-After is honoured for (seconds); a longer one is cut.
MAX_RETRY_AFTER = 600.0


class MattermostError(Exception):
    """A failed call; ``str()`` is a message safe to log and show."""

    def __init__(
        self,
        message: str,
        rule: Rule = NO_ANSWER,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: The row of :data:`~.policy.POLICY` the answer fell under.
        self.rule = rule
        self.status = status
        #: Seconds the server asked us to wait (429 Retry-After).
        self.retry_after = retry_after

    @property
    def action(self) -> Action:
        return self.rule.action


class _Scrubber(logging.Filter):
    """Drops the driver's error records and masks tokens in the others."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            # The driver logs the server's answer to every failed call; ours is
            # logged once, in words, by the caller.
            return False
        try:
            text = record.getMessage()
        except Exception:
            return False
        masked = scrub(text, self.secrets)
        if masked != text:
            record.msg, record.args = masked, None
        return True


_SCRUBBER = _Scrubber()


def quiet_driver_logging(token: str) -> None:
    """Keep ``token`` and the driver's error records out of every log."""
    if token:
        _SCRUBBER.secrets.add(token)
    for name in _DRIVER_LOGGERS:
        logger = logging.getLogger(name)
        if _SCRUBBER not in logger.filters:
            logger.addFilter(_SCRUBBER)
    # Child loggers the driver may create (mattermostdriver.api.channels, ...).
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("mattermostdriver."):
            logger = logging.getLogger(name)
            if _SCRUBBER not in logger.filters:
                logger.addFilter(_SCRUBBER)


def scrub(text: str, secrets: set[str] | frozenset[str] = frozenset()) -> str:
    """``text`` with every known token replaced by the mask."""
    for secret in secrets or _SCRUBBER.secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return re.sub(r"(?i)(bearer\s+)\S+", r"\1" + MASK, text)


class MattermostClient:
    """The calls an alert needs, against one channel of one server."""

    def __init__(self, address: ServerAddress, token: str, channel_id: str, timeout: float) -> None:
        quiet_driver_logging(token)
        self.address = address
        self.channel_id = channel_id
        self.timeout = timeout
        self._token = token
        self._pid = -1
        self._driver: Any = None

    @property
    def driver(self) -> Any:
        """The driver of this process: a forked child never uses its parent's connections."""
        if self._pid != os.getpid():
            driver = Driver(self.address.driver_options(self._token, self.timeout))
            # A token needs no login call: set it as login() would.
            driver.client.token = self._token
            self._driver, self._pid = driver, os.getpid()
        return self._driver

    def __repr__(self) -> str:
        return f"<MattermostClient {self.address.display} channel={self.channel_id}>"

    def me(self) -> dict[str, Any]:
        """The account the token belongs to (checks the token)."""
        answer = self._call("token", lambda: self.driver.users.get_user("me"))
        return answer if isinstance(answer, dict) else {}

    def upload(self, name: str, data: bytes) -> str:
        """Upload a file to the channel; its file id."""
        answer = self._call(
            "upload",
            lambda: self.driver.files.upload_file(
                self.channel_id, {"files": (name, data, "text/html")}
            ),
        )
        try:
            return str(answer["file_infos"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise MattermostError(
                "the upload answer has no file id; is PERFALERT_MATTERMOST_URL a Mattermost server?"
            ) from None

    def create_post(
        self, message: str, file_ids: list[str], pending_post_id: str, props: dict[str, Any]
    ) -> dict[str, Any]:
        """Create the post; the server's Post."""
        options = {
            "channel_id": self.channel_id,
            "message": message,
            "file_ids": file_ids,
            # Mattermost's idempotency key: the same id again within its cache
            # window (30 s) returns the post already made instead of a new one.
            "pending_post_id": pending_post_id,
            "props": props,
        }
        post = self._call("post", lambda: self.driver.posts.create_post(options))
        if not isinstance(post, dict) or "id" not in post:
            raise MattermostError(
                "the post answer is not a post; is PERFALERT_MATTERMOST_URL a Mattermost server?"
            )
        return post

    def find_post(self, prop: str, value: str, since: float) -> dict[str, Any] | None:
        """A post of the channel changed after ``since`` (epoch seconds) with ``props[prop]``."""
        params = {"since": int(since * 1000)}
        answer = self._call(
            "lookup",
            lambda: self.driver.posts.get_posts_for_channel(self.channel_id, params),
        )
        posts = answer.get("posts") if isinstance(answer, dict) else None
        for post in (posts or {}).values():
            if isinstance(post, dict) and (post.get("props") or {}).get(prop) == value:
                return post
        return None

    # -- errors -----------------------------------------------------------------------
    def _call(self, call: Call, do: Any) -> Any:
        try:
            return _json(do())
        except ValueError:  # requests' JSONDecodeError too
            # The answer was not JSON (a proxy's HTML page, another web server).
            raise MattermostError(
                f"could not {WHAT[call]}: the answer is not Mattermost's JSON API; is "
                f"PERFALERT_MATTERMOST_URL ({self.address.display}) the Mattermost server?"
            ) from None
        except requests.RequestException as exc:
            raise self._explain(call, exc) from None

    def _explain(self, call: Call, exc: requests.RequestException) -> MattermostError:
        """The policy's row for this failure, and its reason in words."""
        what, where = WHAT[call], self.address.display
        if isinstance(exc, requests.ConnectTimeout):
            said = f"no connection to {where} within {self.timeout:g} s (timeout)"
        elif isinstance(exc, requests.Timeout):
            said = f"{where} did not answer within {self.timeout:g} s (timeout)"
        elif isinstance(exc, requests.ConnectionError):
            said = _connection_problem(exc, where)
        else:
            said = ""
        status = _status(exc)
        if status is None:
            said = said or f"{scrub(type(exc).__name__)} talking to {where}"
            return MattermostError(NO_ANSWER.reason.format(what=what, said=said))
        response = _response(exc)
        error_id, server_said = _server_error(exc, response)
        rule = rule_for(status, call, error_id)
        message = rule.reason.format(
            what=what, where=where, status=status, said=server_said, channel=self.channel_id
        )
        retry_after = _retry_after(response) if rule.honours_retry_after else None
        return MattermostError(message, rule, status, retry_after)


def _json(answer: Any) -> Any:
    # The driver hands back the raw response when the Content-Type is not
    # exactly "application/json" (e.g. with a charset).
    if isinstance(answer, requests.Response):
        return answer.json()
    return answer


_STATUS_OF = {
    "InvalidOrMissingParameters": 400,
    "NoAccessTokenProvided": 401,
    "NotEnoughPermissions": 403,
    "ResourceNotFound": 404,
    "MethodNotAllowed": 405,
    "ContentTooLarge": 413,
    "FeatureDisabled": 501,
}


def _status(exc: requests.RequestException) -> int | None:
    # The driver raises its own HTTPError subclasses for some statuses, without
    # the response; the others are requests' HTTPError with the response.
    for cls in type(exc).__mro__:
        if cls.__name__ in _STATUS_OF:
            return _STATUS_OF[cls.__name__]
    response = exc.response
    return response.status_code if response is not None else None


def _response(exc: requests.RequestException) -> requests.Response | None:
    """The answer behind ``exc``.

    The driver raises its own exceptions for some statuses ``from None``, without
    the response; Python still keeps the ``HTTPError`` they replace, which has it.
    """
    if exc.response is not None:
        return exc.response
    context = exc.__context__
    if isinstance(context, requests.HTTPError) and context.response is not None:
        return context.response
    return None


_TITLE = re.compile(r"(?is)<title[^>]*>(.*?)</title>|<h1[^>]*>(.*?)</h1>")
_TAGS = re.compile(r"(?s)<[^>]*>")


def _server_error(
    exc: requests.RequestException, response: requests.Response | None
) -> tuple[str | None, str]:
    """Mattermost's error id (None if the answer is not its error) and its words, for a reason.

    A proxy's HTML page is named by its title, so a reason says who answered.
    """
    error_id: str | None = None
    text = ""
    if response is not None:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("id"), str):
            error_id = body["id"]
            text = str(body.get("message", ""))
        else:
            page = response.text or ""
            found = _TITLE.search(page)
            if found:
                page = found.group(1) or found.group(2) or ""
            page = " ".join(_TAGS.sub(" ", page).split())
            if page:
                return None, _clip_said(f"the answer is not Mattermost's: {page}", quote=False)
            return None, ""
    elif exc.args and isinstance(exc.args[0], str):
        text = exc.args[0]  # the driver's exceptions carry the server's message
    return error_id, _clip_said(text)


def _clip_said(text: str, quote: bool = True) -> str:
    text = " ".join(scrub(text).split())
    if len(text) > 200:
        text = text[:199] + "…"
    if not text:
        return ""
    return f' (server said: "{text}")' if quote else f" ({text})"


def _retry_after(response: requests.Response | None) -> float | None:
    """Seconds the server asks us to wait, at most ``MAX_RETRY_AFTER``; None if it did not say."""
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    seconds: float | None = None
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
            except (TypeError, ValueError, OverflowError):
                seconds = None
    if seconds is None:
        # Mattermost's rate limiter also says how long until the window resets.
        try:
            seconds = float(response.headers.get("X-Ratelimit-Reset") or "nan")
        except ValueError:
            return None
    if math.isnan(seconds):
        return None
    # A date in year 9999 or 1e10 seconds: no wait that long is honoured (or even possible).
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _connection_problem(exc: requests.ConnectionError, where: str) -> str:
    text = str(exc)
    lower = text.lower()
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS error talking to {where} (certificate or protocol)"
    if "refused" in lower:
        return f"connection refused by {where}"
    if any(
        marker in lower
        for marker in ("name or service not known", "nodename nor servname", "getaddrinfo")
    ) or ("name resolution" in lower):
        return f"could not resolve the host name of {where} (bad URL?)"
    if "remotedisconnected" in lower or "connection aborted" in lower or "reset" in lower:
        return f"{where} closed the connection without an answer"
    return f"connection to {where} failed"
