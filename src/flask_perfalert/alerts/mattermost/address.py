"""The Mattermost server's address, from what people copy out of their browser.

:func:`parse_server_url` turns ``https://chat.example.com``,
``http://127.0.0.1:8065/mattermost`` or even
``https://chat.example.com/myteam/channels/town-square`` into the driver's
``scheme``, ``url`` (host), ``port`` and ``basepath`` options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ...settings import PerfAlertSettings

#: Route segments of Mattermost's web app: what follows the team name in an
#: address copied from the browser ("/myteam/channels/town-square").
_TEAM_ROUTES = {"channels", "messages", "pl", "threads", "drafts", "integrations", "emoji"}
#: Web-app routes at the root of the server ("/login", "/admin_console").
_ROOT_ROUTES = {"login", "select_team", "admin_console", "landing", "signup_user_complete"}


@dataclass(frozen=True)
class ServerAddress:
    """Where the Mattermost API is, as the driver wants it."""

    scheme: str
    host: str
    port: int
    #: The server's own base path ("" or "/mattermost"), without "/api/v4".
    base_path: str

    @property
    def display(self) -> str:
        """The server's address, e.g. ``https://chat.example.com``."""
        default = (self.scheme == "https" and self.port == 443) or (
            self.scheme == "http" and self.port == 80
        )
        port = "" if default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.base_path}"

    def driver_options(self, token: str, timeout: float) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "url": self.host,
            "port": self.port,
            "basepath": self.base_path + "/api/v4",
            "verify": True,
            "token": token,
            # Bounds each HTTP call (connect, and each read of the answer).
            "request_timeout": timeout,
            "debug": False,
        }


def parse_server_url(url: str) -> tuple[ServerAddress, str | None]:
    """The server address in ``url``, and a note when part of it was ignored.

    Raises :class:`ValueError` with a message fit for an operator.
    """
    text = url.strip()
    if not text:
        raise ValueError("it is empty")
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"the scheme must be http or https, not {parts.scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "it must not contain a user name or password (use PERFALERT_MATTERMOST_TOKEN)"
        )
    host = parts.hostname
    if not host:
        raise ValueError("it has no host name")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError("its port is not a number between 1 and 65535") from None
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address, as the driver puts it into a URL
    segments = [s for s in parts.path.split("/") if s]
    kept = _server_segments(segments)
    note = None
    if len(kept) < len(segments) or parts.query or parts.fragment:
        note = "the part after the server's address was ignored"
    base = "".join(f"/{s}" for s in kept)
    return ServerAddress(scheme, host, port, base), note


def _server_segments(segments: list[str]) -> list[str]:
    """Drop an API path or a web-app route (team, channel) from the path."""
    for i, segment in enumerate(segments):
        if segment == "api" and segments[i + 1 : i + 2] == ["v4"]:
            return segments[:i]
        if segment in _ROOT_ROUTES:
            return segments[:i]
        if segment in _TEAM_ROUTES and i >= 1:
            return segments[: i - 1]
    return segments


_REQUIRED = {
    "mattermost_url": "PERFALERT_MATTERMOST_URL",
    "mattermost_token": "PERFALERT_MATTERMOST_TOKEN",
    "mattermost_channel_id": "PERFALERT_MATTERMOST_CHANNEL_ID",
}


def configuration_problems(settings: PerfAlertSettings) -> list[str]:
    """What keeps Mattermost alerts from working with ``settings``, in words."""
    problems = []
    missing = []
    for name, key in _REQUIRED.items():
        value = getattr(settings, name)
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if not (text or "").strip():
            missing.append(key)
    if missing:
        problems.append(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    if settings.mattermost_url and settings.mattermost_url.strip():
        try:
            parse_server_url(settings.mattermost_url)
        except ValueError as exc:
            problems.append(f"PERFALERT_MATTERMOST_URL is not usable: {exc}")
    return problems
