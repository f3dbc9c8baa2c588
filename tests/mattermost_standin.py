"""A Mattermost stand-in: a real HTTP server on 127.0.0.1 for the tests and the benchmark.

It implements the three operations Flask-PerfAlert uses, as Mattermost's
published API v4 describes them (OpenAPI source: users.yaml GetUser,
files.yaml UploadFile, posts.yaml CreatePost and GetPostsForChannel,
definitions.yaml AppError/Post/FileInfo/PostList, introduction.yaml errors and
rate limiting), and what the server does around them:

* ``Authorization: Bearer <token>`` on every call, else 401 with an AppError;
* ``GET /api/v4/users/me``: the bot's User;
* ``POST /api/v4/files``: multipart/form-data with ``channel_id`` and
  ``files``; 201 with ``{"file_infos": [...], "client_ids": [...]}``; 403 for
  a channel the bot is not a member of (or that does not exist); 413 over the
  size limit;
* ``POST /api/v4/posts``: JSON with ``channel_id`` and ``message`` (and
  ``file_ids``, ``props``, ``pending_post_id``); 201 with the Post. File ids
  are attached only if they were uploaded by this user to this channel and are
  not attached yet (the server drops the others silently). A
  ``pending_post_id`` seen in the last ``dedup_ttl`` seconds returns the post
  already made (or a 500 while that one is still being made), as the server's
  ``deduplicateCreatePost`` does;
  A message longer than ``max_post_size`` characters is refused with a 400
  ``model.post.is_valid.msg.app_error``, as ``Post.IsValid`` does;
* ``GET /api/v4/channels/{channel_id}/posts?since=<ms>``: a PostList;
* every error is an AppError JSON body ``{"id", "message", "detailed_error",
  "request_id", "status_code", "is_oauth"}``; a 429 is the rate limiter's
  plain-text answer with ``X-Ratelimit-*`` and ``Retry-After`` headers.

Faults are injected per call: a status (500, 503, 429 with Retry-After, 401,
403, 413), a hang (before the request is processed, or after: the post exists
but the answer never comes), and "down" (nothing listens: connection refused).
A fault can hit only the calls whose body holds a given text (one alert's post).

It can also answer as an nginx reverse proxy in front of Mattermost does, for
the next N requests (:meth:`MattermostStandIn.proxy`, :meth:`~MattermostStandIn.script`):
400, 408, 413, 429 with ``Retry-After``, 502, 503 and 504, each with nginx's HTML
page and ``Server: nginx`` (no JSON), or a connection reset (the socket closed
with an RST after the request was read). ``proxy_body_limit`` is nginx's
``client_max_body_size``: a larger request body gets nginx's 413 page and never
reaches Mattermost.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def new_id() -> str:
    """A Mattermost-style id: 26 lowercase base32 characters."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"[:32]
    return "".join(secrets.choice(alphabet) for _ in range(26))


def millis() -> int:
    return int(time.time() * 1000)


@dataclass
class Fault:
    #: "status", "hang" (before processing), "hang_after" (after processing),
    #: "delay" (answer normally after ``seconds``), "echo_auth" (a 400 whose
    #: message repeats the Authorization header, as a careless proxy might)
    kind: str
    method: str | None
    path: str | None
    #: How many calls it hits; None: until cleared.
    times: int | None
    status: int = 500
    #: A 429's Retry-After: seconds, or the header's text as sent (an HTTP date).
    retry_after: float | str | None = None
    seconds: float = 30.0
    #: Only calls whose body contains this (one alert's post among others).
    body_contains: bytes | None = None
    #: Several paths (the post and the upload); used instead of ``path`` when set.
    paths: tuple[str, ...] | None = None

    def hits(self, method: str, path: str, body: bytes) -> bool:
        if self.body_contains is not None and self.body_contains not in body:
            return False
        if self.method not in (None, method):
            return False
        if self.paths is not None:
            return path in self.paths
        return self.path in (None, path)


#: The answers :meth:`MattermostStandIn.proxy` can give, as nginx words them.
PROXY_ANSWERS = {
    "400": "Bad Request",
    "408": "Request Time-out",
    "413": "Request Entity Too Large",
    "429": "Too Many Requests",
    "502": "Bad Gateway",
    "503": "Service Temporarily Unavailable",
    "504": "Gateway Time-out",
    "reset": "",
}
POSTS = "/api/v4/posts"
FILES = "/api/v4/files"


def nginx_page(
    status: int, retry_after: float | str | None = None
) -> tuple[int, dict[str, str], bytes]:
    """nginx's own error page for ``status``, as it sends it (HTML, never JSON)."""
    title = f"{status} {PROXY_ANSWERS[str(status)]}"
    body = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
    headers = {"Server": "nginx/1.24.0", "Content-Type": "text/html"}
    if status in (408, 413):
        headers["Connection"] = "close"  # nginx closes after these
    if retry_after is not None:
        headers["Retry-After"] = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
    return status, headers, body


@dataclass
class Recorded:
    method: str
    path: str
    status: int
    at: float
    authorized: bool
    headers: dict[str, str] = field(default_factory=dict)
    #: The query string and the body exactly as received.
    query: str = ""
    body: bytes = b""


class MattermostStandIn:
    def __init__(
        self,
        *,
        token: str | None = None,
        dedup_ttl: float = 30.0,
        max_file_size: int = 50 * 1024 * 1024,
        proxy_body_limit: int | None = None,
        max_post_size: int = 16383,
    ) -> None:
        self.token = token or "standin-" + secrets.token_hex(16)
        #: nginx's ``client_max_body_size`` in front of the server; None: no proxy limit.
        self.proxy_body_limit = proxy_body_limit
        #: Mattermost's post size limit in characters (``model.post.is_valid.msg``).
        self.max_post_size = max_post_size
        self.dedup_ttl = dedup_ttl
        self.max_file_size = max_file_size
        self.user = {"id": new_id(), "username": "perfalert-bot", "is_bot": True}
        self.channel_id = new_id()
        #: A channel that exists but the bot is not a member of.
        self.other_channel_id = new_id()
        self.channels = {self.channel_id: {self.user["id"]}, self.other_channel_id: set()}
        self.posts: list[dict[str, Any]] = []
        self.files: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self._faults: list[Fault] = []
        self._pending: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- life cycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MattermostStandIn:
        """Listen (again, on the same port if it listened before)."""
        standin = self

        class Handler(_Handler):
            server_standin = standin

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._release.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self._release.set()  # ends every hang
        self.down()

    def __enter__(self) -> MattermostStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ---------------------------------------------------------------------------
    def fault(
        self,
        kind: str = "status",
        *,
        path: str | None = "/api/v4/posts",
        method: str | None = "POST",
        times: int | None = 1,
        status: int = 500,
        retry_after: float | str | None = None,
        seconds: float = 30.0,
        body_contains: bytes | None = None,
    ) -> None:
        with self._lock:
            self._faults.append(
                Fault(kind, method, path, times, status, retry_after, seconds, body_contains)
            )

    def proxy(
        self,
        answer: str,
        *,
        times: int | None = 1,
        paths: tuple[str, ...] = (POSTS,),
        method: str | None = "POST",
        retry_after: float | str | None = None,
        body_contains: bytes | None = None,
    ) -> None:
        """Answer the next ``times`` calls to ``paths`` as nginx in front of Mattermost would.

        ``answer`` is a key of :data:`PROXY_ANSWERS`: a status with nginx's page,
        or ``"reset"`` (the connection reset once the request was read).
        """
        if answer not in PROXY_ANSWERS:
            raise ValueError(f"no such proxy answer: {answer!r}")
        with self._lock:
            self._faults.append(
                Fault(
                    "proxy_reset" if answer == "reset" else "proxy",
                    method,
                    None,
                    times,
                    int(answer) if answer != "reset" else 0,
                    retry_after,
                    body_contains=body_contains,
                    paths=paths,
                )
            )

    def script(self, *answers: str, paths: tuple[str, ...] = (POSTS,)) -> None:
        """The next calls to ``paths`` get these proxy answers, one each, in order."""
        for answer in answers:
            self.proxy(answer, paths=paths)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
        self._release.set()
        self._release = threading.Event()

    def _take_fault(self, method: str, path: str, body: bytes) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.hits(method, path, body):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # -- what happened ----------------------------------------------------------------------
    def calls(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def wait_posts(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until at least ``count`` posts exist; the posts."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.posts) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return list(self.posts)

    def file_of(self, file_id: str) -> dict[str, Any]:
        return self.files[file_id]

    def _record(self, recorded: Recorded) -> None:
        with self._changed:
            self.requests.append(recorded)
            self._changed.notify_all()

    # -- the API -----------------------------------------------------------------------------
    def error(self, status: int, error_id: str, message: str) -> tuple[int, dict[str, str], bytes]:
        body = {
            "id": error_id,
            "message": message,
            "detailed_error": "",
            "request_id": new_id(),
            "status_code": status,
            "is_oauth": False,
        }
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def ok(self, status: int, body: Any) -> tuple[int, dict[str, str], bytes]:
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if not path.startswith("/api/v4/"):
            # The web app answers every other path with its HTML page.
            return 200, {"Content-Type": "text/html"}, b"<!doctype html><title>Mattermost</title>"
        auth = headers.get("Authorization", "")
        if auth != f"Bearer {self.token}":
            return self.error(
                401,
                "api.context.session_expired.app_error",
                "Invalid or expired session, please login again.",
            )
        if method == "GET" and path == "/api/v4/users/me":
            return self.ok(200, dict(self.user, create_at=0, update_at=0, delete_at=0))
        if method == "POST" and path == "/api/v4/files":
            return self._upload(query, headers, body)
        if method == "POST" and path == "/api/v4/posts":
            return self._create_post(body)
        parts = path.split("/")
        if method == "GET" and len(parts) == 6 and parts[3] == "channels" and parts[5] == "posts":
            return self._channel_posts(parts[4], query)
        return self.error(404, "api.context.404.app_error", "Sorry, we could not find the page.")

    def _member(self, channel_id: str) -> bool:
        return self.user["id"] in self.channels.get(channel_id, set())

    def _forbidden(self) -> tuple[int, dict[str, str], bytes]:
        return self.error(
            403, "api.context.permissions.app_error", "You do not have the appropriate permissions."
        )

    def _upload(
        self, query: dict[str, list[str]], headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        ctype = headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            return self.error(
                400, "api.file.upload_file.bad_parse.app_error", "Unable to upload file."
            )
        message = BytesParser(policy=policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
        )
        fields: dict[str, str] = {}
        uploads: list[tuple[str, bytes]] = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if name == "files" and filename is not None:
                uploads.append((filename, payload))
            elif isinstance(name, str):
                fields[name] = payload.decode()
        channel_id = fields.get("channel_id") or (query.get("channel_id") or [""])[0]
        if not channel_id or not uploads:
            return self.error(
                400,
                "api.context.invalid_body_param.app_error",
                "Invalid or missing channel_id or files in request body.",
            )
        if not self._member(channel_id):
            return self._forbidden()
        infos = []
        for filename, data in uploads:
            if len(data) > self.max_file_size:
                return self.error(
                    413,
                    "api.file.upload_file.too_large_detailed.app_error",
                    f"Unable to upload file {filename}. {len(data)} bytes exceeds the maximum "
                    f"allowed {self.max_file_size} bytes.",
                )
            now = millis()
            info = {
                "id": new_id(),
                "user_id": self.user["id"],
                "post_id": "",
                "channel_id": channel_id,
                "create_at": now,
                "update_at": now,
                "delete_at": 0,
                "name": filename,
                "extension": filename.rsplit(".", 1)[-1] if "." in filename else "",
                "size": len(data),
                "mime_type": "text/html",
                "width": 0,
                "height": 0,
                "has_preview_image": False,
            }
            with self._lock:
                self.files[info["id"]] = dict(info, data=data)
            infos.append(info)
        client_ids = [v for v in fields.get("client_ids", "").split(",") if v]
        return self.ok(201, {"file_infos": infos, "client_ids": client_ids})

    def _create_post(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not data.get("channel_id"):
            return self.error(
                400,
                "api.context.invalid_body_param.app_error",
                "Invalid or missing channel_id in request body.",
            )
        channel_id = data["channel_id"]
        if not self._member(channel_id):
            return self._forbidden()
        file_ids = data.get("file_ids") or []
        if not data.get("message") and not file_ids:
            return self.error(
                400,
                "api.context.invalid_body_param.app_error",
                "Invalid or missing message in request body.",
            )
        if len(str(data.get("message", ""))) > self.max_post_size:
            # Post.IsValid refuses it for good: the same post is refused every time.
            return self.error(400, "model.post.is_valid.msg.app_error", "Invalid Message.")
        pending = str(data.get("pending_post_id") or "")
        now = time.monotonic()
        with self._changed:
            if pending and self.dedup_ttl > 0:
                seen = self._pending.get(pending)
                if seen is not None and seen[1] > now:
                    if not seen[0]:
                        return self.error(
                            500,
                            "api.post.deduplicate_create_post.pending",
                            "Rejected post since another request with the same pending post "
                            "ID is being processed.",
                        )
                    existing = next(p for p in self.posts if p["id"] == seen[0])
                    return self.ok(201, dict(existing, pending_post_id=""))
                self._pending[pending] = ("", now + self.dedup_ttl)
            post_id = new_id()
            attached = []
            for file_id in file_ids:
                info = self.files.get(file_id)
                if (
                    info is not None
                    and info["channel_id"] == channel_id
                    and info["user_id"] == self.user["id"]
                    and not info["post_id"]
                ):
                    info["post_id"] = post_id
                    attached.append(file_id)
            stamp = millis()
            post = {
                "id": post_id,
                "create_at": stamp,
                "update_at": stamp,
                "edit_at": 0,
                "delete_at": 0,
                "is_pinned": False,
                "user_id": self.user["id"],
                "channel_id": channel_id,
                "root_id": "",
                "original_id": "",
                "message": str(data.get("message", "")),
                "type": "",
                "props": dict(data.get("props") or {}, from_bot="true"),
                "hashtags": "",
                "file_ids": attached,
                "pending_post_id": pending,
                "metadata": {},
            }
            self.posts.append(post)
            if pending and self.dedup_ttl > 0:
                self._pending[pending] = (post_id, now + self.dedup_ttl)
            self._changed.notify_all()
        return self.ok(201, post)

    def _channel_posts(
        self, channel_id: str, query: dict[str, list[str]]
    ) -> tuple[int, dict[str, str], bytes]:
        if not self._member(channel_id):
            return self._forbidden()
        since = int((query.get("since") or ["0"])[0] or 0)
        with self._lock:
            posts = [
                dict(p, pending_post_id="")
                for p in self.posts
                if p["channel_id"] == channel_id and p["update_at"] > since
            ]
        posts.sort(key=lambda p: p["create_at"], reverse=True)
        return self.ok(
            200,
            {
                "order": [p["id"] for p in posts],
                "posts": {p["id"]: p for p in posts},
                "next_post_id": "",
                "prev_post_id": "",
                "has_next": False,
            },
        )


class _Handler(BaseHTTPRequestHandler):
    server_standin: MattermostStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        standin = self.server_standin
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        authorized = self.headers.get("Authorization", "") == f"Bearer {standin.token}"
        limit = standin.proxy_body_limit
        if limit is not None and length > limit:
            fault: Fault | None = Fault("proxy", method, parts.path, 1, 413)
        else:
            fault = standin._take_fault(method, parts.path, body)
        release = standin._release
        if fault is not None and fault.kind == "proxy_reset":
            standin._record(
                Recorded(
                    method, parts.path, 0, time.monotonic(), authorized, dict(self.headers),
                    parts.query, body,
                )
            )  # fmt: skip
            # SO_LINGER with a zero timeout: close() sends an RST, not a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if fault is not None and fault.kind == "hang":
            standin._record(
                Recorded(
                    method,
                    parts.path,
                    0,
                    time.monotonic(),
                    authorized,
                    dict(self.headers),
                    parts.query,
                    body,
                )
            )
            release.wait(fault.seconds)
            self.close_connection = True
            return  # the request was never processed; the client gave up
        if fault is not None and fault.kind == "delay":
            release.wait(fault.seconds)  # a slow answer, but an answer
        if fault is not None and fault.kind == "proxy":
            answer: tuple[int, dict[str, str], bytes] = nginx_page(
                fault.status,
                (fault.retry_after if fault.retry_after is not None else 1)
                if fault.status == 429
                else None,
            )
        elif fault is not None and fault.kind == "status" and fault.status == 429:
            retry = fault.retry_after if fault.retry_after is not None else 1
            headers = {
                "Content-Type": "text/plain",
                "X-Ratelimit-Limit": "10",
                "X-Ratelimit-Remaining": "0",
                "X-Ratelimit-Reset": str(int(retry)) if not isinstance(retry, str) else "1",
                "Retry-After": retry if isinstance(retry, str) else f"{retry:g}",
            }
            answer = (429, headers, b"limit exceeded\n")
        elif fault is not None and fault.kind == "status" and fault.status == 503:
            answer = (503, {"Content-Type": "text/html"}, b"<html>503 Service Unavailable</html>")
        elif fault is not None and fault.kind == "echo_auth":
            answer = standin.error(
                400, "app.standin.echo", f"Bad request with {self.headers.get('Authorization')}"
            )
        elif fault is not None and fault.kind == "status":
            answer = standin.error(
                fault.status, "app.standin.injected_fault", f"Injected fault {fault.status}."
            )
        else:
            answer = standin.handle(method, parts.path, parse_qs(parts.query), self.headers, body)
        status, headers, payload = answer
        standin._record(
            Recorded(
                method,
                parts.path,
                status,
                time.monotonic(),
                authorized,
                dict(self.headers),
                parts.query,
                body,
            )
        )
        if fault is not None and fault.kind == "hang_after":
            release.wait(fault.seconds)
            self.close_connection = True
            return  # processed, but the answer never comes
        if headers.get("Connection") == "close":
            self.close_connection = True
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
