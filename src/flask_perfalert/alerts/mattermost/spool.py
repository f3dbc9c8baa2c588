"""The spool: Mattermost alerts on disk until they are delivered.

An alert is written here when it is made (by the subscriber, before any try to
send it) and removed once Mattermost has it, so a process that dies, even by
``SIGKILL``, loses nothing. One file per alert, holding only what the post
needs (the message and the HTML report, both made from the already redacted
event) and never the token.

The spool is ours or ignored. Its entries are posted with the bot's token, so
a file someone else put there must never be sent:

* The folder is used only when it is a real folder (not a link) owned by this
  process's user that nobody else may write to. The extension creates it with
  mode 0700 when it is missing; it never changes the mode of a folder.
* Every entry is signed: its first line holds an HMAC-SHA256 of the rest,
  under a random key kept in the folder (``.perfalert-spool-key``, mode 0600,
  made once, shared by every process using the folder). An entry is read only
  if it is a regular file of this user with mode 0600, a single link, and its
  signature holds. Anything else is logged once and left alone.
* Writes are atomic (a temporary file renamed into place), mode 0600.
* Several processes may share the folder (gunicorn workers, the CLI). Whoever
  sends an entry holds an exclusive ``flock`` on it; the lock is taken on the
  temporary file before it is renamed into place, so an entry is never visible
  unlocked while its writer still works on it, and the kernel releases it when
  a process dies. Others skip locked entries.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..._files import (
    make_folder,
    not_private,
    remove_stale_temps,
    secret_key,
    temp_name_pattern,
    write_atomic,
)
from ..._logging import logger

_NAME = re.compile(r"^mm-\d{13}-[0-9a-f]{8,32}\.json$")
_TEMP_PREFIX = ".mm-"
_OWN_TEMP = temp_name_pattern(_TEMP_PREFIX)
KEY_NAME = ".perfalert-spool-key"
#: The first word of an entry: the format, then the signature of the rest.
MAGIC = b"PERFALERT-SPOOL-1"
#: Most alerts kept; beyond, the oldest are dropped (with a warning).
MAX_ENTRIES = 500
#: An entry larger than this is no entry of ours (reports are far smaller).
MAX_ENTRY_BYTES = 64 * 1024 * 1024
_KEY_BYTES = 32
#: What an entry must hold, and of which type, to be sent.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "event_id": str,
    "created": (int, float),
    "app": str,
    "summary": str,
    "message": str,
    "report_name": str,
    "report_html": (str, type(None)),
    "post_sent_at": (int, float, type(None)),
}


class SpoolUnavailable(OSError):
    """The folder cannot be the spool: other users could write to it, or it is no folder."""


class SpoolEntry:
    """One alert, locked by this process while the object is open."""

    def __init__(self, path: Path | None, data: dict[str, Any], fd: int | None) -> None:
        #: Where it is on disk; ``None`` when it could not be written.
        self.path = path
        self.data = data
        self.fd = fd
        #: The report's file id once uploaded by this process (not persisted:
        #: uploading again later is harmless, an unattached file).
        self.file_id: str | None = None
        #: Why the report is left off the post (the server refused it).
        self.report_problem: str | None = None

    @property
    def on_disk(self) -> bool:
        return self.path is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock
            self.fd = None


class Spool:
    def __init__(
        self,
        folder: Path,
        max_entries: int = MAX_ENTRIES,
        on_drop: Callable[[dict[str, Any], str], None] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.max_entries = max_entries
        self._on_drop = on_drop
        self._key: bytes | None = None
        #: Files already logged as ignored: (name, inode, mtime, size).
        self._ignored: set[tuple[str, int, int, int]] = set()
        #: Entries read and verified before: (name, inode, mtime, size) -> their data.
        self._verified: dict[tuple[str, int, int, int], dict[str, Any]] = {}

    # -- the folder and its key ----------------------------------------------------------
    def check_folder(self, create: bool = False) -> Path:
        """The folder, if it can be the spool; raises OSError if not.

        With ``create``, a missing folder is made (mode 0700) first. A folder
        others may write to raises SpoolUnavailable, logged here once.
        """
        folder = self.folder
        if create:
            make_folder(folder)
        info = os.lstat(folder)
        problem = None
        if not stat.S_ISDIR(info.st_mode):
            problem = "it is not a folder (a link, or a file)"
        elif info.st_uid != os.geteuid() or info.st_mode & 0o022:
            problem = (
                f"other users may write to it (owner uid {info.st_uid}, mode "
                f"{stat.S_IMODE(info.st_mode):04o}), so they could make the bot post"
            )
        if problem is not None:
            self._ignore(
                ("", info.st_ino, info.st_uid, info.st_mode),
                f"The Mattermost spool {folder} is not used: {problem}. Alerts are sent "
                "without a copy on disk and nothing in it is sent; set PERFALERT_SPOOL_DIR "
                "to a folder of the app's own (a missing one is created, mode 0700)",
            )
            raise SpoolUnavailable(f"{folder} is not a private folder of this user")
        return folder

    def _signing_key(self, folder: Path) -> bytes:
        if self._key is None:
            self._key = secret_key(folder / KEY_NAME, _KEY_BYTES)
        return self._key

    # -- writing ------------------------------------------------------------------------
    def add(self, data: dict[str, Any]) -> SpoolEntry:
        """Write a new entry and keep it locked; raises OSError when it cannot be written."""
        folder = self.check_folder(create=True)
        self._make_room()
        name = f"mm-{int(time.time() * 1000):013d}-{data['event_id']}.json"
        path = folder / name
        fd = self._write_locked(path, data)
        return SpoolEntry(path, data, fd)

    def update(self, entry: SpoolEntry, **changes: Any) -> None:
        """Change fields of a locked entry, atomically; the lock moves to the new file."""
        entry.data.update(changes)
        if entry.path is None:
            return
        fd = self._write_locked(entry.path, entry.data)
        entry.close()
        entry.fd = fd

    def remove(self, entry: SpoolEntry) -> None:
        """Delete a locked entry (it was delivered or is dropped)."""
        if entry.path is not None:
            try:
                entry.path.unlink()
            except FileNotFoundError:
                pass
        entry.close()

    def release(self, entry: SpoolEntry) -> None:
        """Leave the entry in the spool for a later try."""
        entry.close()

    def _write_locked(self, path: Path, data: dict[str, Any]) -> int:
        payload = json.dumps(data, ensure_ascii=False).encode("utf-8")
        mac = hmac.new(self._signing_key(path.parent), payload, hashlib.sha256).hexdigest()
        content = MAGIC + b" " + mac.encode("ascii") + b"\n" + payload
        fd = write_atomic(path, content, temp_prefix=_TEMP_PREFIX, lock=True)
        assert fd is not None
        return fd

    def _make_room(self) -> None:
        excess = len(self.waiting()) - self.max_entries + 1
        if excess <= 0:
            return
        for entry in self.claim(lambda data: True):
            if excess <= 0:
                entry.close()
                break
            self.remove(entry)
            excess -= 1
            reason = f"the spool holds {self.max_entries} alerts already; the oldest goes"
            if self._on_drop is not None:
                self._on_drop(entry.data, reason)

    # -- reading -------------------------------------------------------------------------
    def waiting(
        self, accept: Callable[[dict[str, Any]], bool] = lambda data: True
    ) -> list[dict[str, Any]]:
        """What the entries ``accept`` wants hold, oldest first (not locked: a snapshot)."""
        found = []
        for path in self._entry_paths():
            data = self._read(path)
            if data is not None and accept(data):
                found.append(data)
        return found

    def count(self, accept: Callable[[dict[str, Any]], bool] = lambda data: True) -> int:
        return len(self.waiting(accept))

    def backlog(self, accept: Callable[[dict[str, Any]], bool]) -> tuple[int, float | None]:
        """How many entries ``accept`` wants wait, and when the oldest was made (or None)."""
        waiting = self.waiting(accept)
        return len(waiting), min((d["created"] for d in waiting), default=None)

    def describe_backlog(self, accept: Callable[[dict[str, Any]], bool]) -> str:
        """The backlog in one line, for the CLI."""
        waiting, oldest = self.backlog(accept)
        if oldest is None:
            return f"Mattermost: no alert waits in the spool {self.folder}."
        since = datetime.fromtimestamp(oldest, tz=timezone.utc)
        return (
            f"Mattermost: {waiting} alert(s) wait in the spool {self.folder}, "
            f"the oldest since {since:%Y-%m-%d %H:%M:%S} UTC."
        )

    def claim(self, accept: Callable[[dict[str, Any]], bool]) -> Iterator[SpoolEntry]:
        """Lock and yield the entries ``accept`` wants, oldest first; skip locked ones.

        The caller removes or releases each entry it gets.
        """
        paths = self._entry_paths()
        if paths:
            remove_stale_temps(self.folder, _OWN_TEMP)
        for path in paths:
            entry = self._open(path)
            if entry is None:
                continue
            if not accept(entry.data):
                entry.close()
                continue
            yield entry

    def _entry_paths(self) -> list[Path]:
        try:
            folder = self.check_folder()
            names = sorted(n for n in os.listdir(folder) if _NAME.match(n))
        except OSError:  # missing, or not usable: a new alert says why (SpoolUnavailable: logged)
            return []
        return [folder / name for name in names]

    def _open(self, path: Path) -> SpoolEntry | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None  # delivered and removed meanwhile, or a link (logged by _read)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Removed or replaced between open() and flock(): not ours to take.
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise BlockingIOError
            data = self._read_fd(path, fd)
        except OSError:
            data = None
        if data is None:
            os.close(fd)
            return None
        return SpoolEntry(path, data, fd)

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._ignore((path.name, 0, 0, 0), f"{path} is ignored: {exc}")
            return None
        try:
            return self._read_fd(path, fd)
        except OSError:
            return None
        finally:
            os.close(fd)

    def _read_fd(self, path: Path, fd: int) -> dict[str, Any] | None:
        """The entry's data if it is ours and intact; else None (logged once)."""
        info = os.fstat(fd)
        ident = (path.name, info.st_ino, info.st_mtime_ns, info.st_size)
        known = self._verified.get(ident)
        if known is not None:
            return dict(known)
        if ident in self._ignored:
            return None
        problem = not_private(info)
        data = None
        if problem is None:
            with os.fdopen(os.dup(fd), "rb") as handle:
                content = handle.read(MAX_ENTRY_BYTES + 1)
            data, problem = self._verify(path.parent, content)
        if data is None:
            self._ignore(
                ident,
                f"Mattermost spool entry {path} is ignored and left as it is: {problem} "
                "(an entry this app did not write is never sent)",
            )
            return None
        if len(self._verified) > 4 * self.max_entries:
            self._verified.clear()
        self._verified[ident] = data
        return dict(data)

    def _verify(self, folder: Path, content: bytes) -> tuple[dict[str, Any] | None, str]:
        if len(content) > MAX_ENTRY_BYTES:
            return None, "it is too large"
        header, _, payload = content.partition(b"\n")
        magic, _, mac = header.partition(b" ")
        if magic != MAGIC:
            return None, "it is not signed"
        try:
            key = self._signing_key(folder)
        except OSError as exc:
            return None, f"the signing key cannot be read ({exc})"
        expected = hmac.new(key, payload, hashlib.sha256).hexdigest().encode("ascii")
        if not hmac.compare_digest(mac, expected):
            return None, "its signature does not match this spool's key"
        try:
            data = json.loads(payload.decode("utf-8"))
        except ValueError:
            return None, "it is not valid JSON"
        if not isinstance(data, dict) or any(
            not isinstance(data.get(name), kind) for name, kind in _FIELDS.items()
        ):
            return None, "it lacks fields of an alert"
        return data, ""

    def _ignore(self, ident: tuple[str, int, int, int], message: str) -> None:
        if ident in self._ignored:
            return
        if len(self._ignored) > 4 * self.max_entries:
            self._ignored.clear()
        self._ignored.add(ident)
        logger.warning("%s.", message)
