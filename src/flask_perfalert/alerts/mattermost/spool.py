"""The spool: Mattermost alerts on disk until they are delivered.

An alert is written here *before* it is first sent and removed once Mattermost
has it, so a process that dies mid-delivery loses nothing. One JSON file per
alert, holding only what the post needs (the message and the HTML report, both
made from the already redacted event) and never the token.

* The folder is created with mode 0700, files have mode 0600.
* Writes are atomic (a temporary file renamed into place).
* Several processes may share the folder (gunicorn workers, the CLI). Whoever
  sends an entry holds an exclusive ``flock`` on it; the lock is taken on the
  temporary file before it is renamed into place, so an entry is never visible
  unlocked while its writer still works on it, and the kernel releases it when
  a process dies. Others skip locked entries.
* Only files whose names this module makes are read or removed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..._files import make_folder, remove_stale_temps, temp_name_pattern, write_atomic

logger = logging.getLogger("flask_perfalert")

_NAME = re.compile(r"^mm-\d{13}-[0-9a-f]{8,32}\.json$")
_TEMP_PREFIX = ".mm-"
_OWN_TEMP = temp_name_pattern(_TEMP_PREFIX)
#: Most alerts kept; beyond, the oldest are dropped (with a warning).
MAX_ENTRIES = 500


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

    # -- writing ----------------------------------------------------------------
    def add(self, data: dict[str, Any]) -> SpoolEntry:
        """Write a new entry and keep it locked; raises OSError when the disk says no."""
        folder = self._ensure_folder()
        self._make_room()
        name = f"mm-{int(time.time() * 1000):013d}-{data['event_id']}.json"
        path = folder / name
        fd = self._write_locked(folder, path, data)
        return SpoolEntry(path, data, fd)

    def update(self, entry: SpoolEntry, **changes: Any) -> None:
        """Change fields of a locked entry, atomically; the lock moves to the new file."""
        entry.data.update(changes)
        if entry.path is None:
            return
        fd = self._write_locked(entry.path.parent, entry.path, entry.data)
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

    def _write_locked(self, folder: Path, path: Path, data: dict[str, Any]) -> int:
        payload = json.dumps(data, ensure_ascii=False).encode("utf-8")
        fd = write_atomic(folder / path.name, payload, temp_prefix=_TEMP_PREFIX, lock=True)
        assert fd is not None
        return fd

    def _ensure_folder(self) -> Path:
        folder = self.folder
        make_folder(folder)
        info = folder.stat()
        if info.st_mode & 0o077 and info.st_uid == os.getuid():
            folder.chmod(0o700)
        return folder

    def _make_room(self) -> None:
        names = self.names()
        excess = len(names) - self.max_entries + 1
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

    # -- reading ------------------------------------------------------------------
    def names(self) -> list[str]:
        """Entry file names, oldest first."""
        try:
            return sorted(n for n in os.listdir(self.folder) if _NAME.match(n))
        except OSError:
            return []

    def count(self) -> int:
        return len(self.names())

    def claim(self, accept: Callable[[dict[str, Any]], bool]) -> Iterator[SpoolEntry]:
        """Lock and yield the entries ``accept`` wants, oldest first; skip locked ones.

        The caller removes or releases each entry it gets.
        """
        remove_stale_temps(self.folder, _OWN_TEMP)
        for name in self.names():
            entry = self._open(self.folder / name)
            if entry is None:
                continue
            if not accept(entry.data):
                entry.close()
                continue
            yield entry

    def _open(self, path: Path) -> SpoolEntry | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None  # delivered and removed meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Removed or replaced between open() and flock(): not ours to take.
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise BlockingIOError
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = json.loads(handle.read().decode("utf-8"))
            if not isinstance(data, dict) or "event_id" not in data:
                raise ValueError("not a spool entry")
        except OSError:
            os.close(fd)
            return None
        except ValueError as exc:
            os.close(fd)
            self._quarantine(path, exc)
            return None
        return SpoolEntry(path, data, fd)

    def _quarantine(self, path: Path, exc: Exception) -> None:
        try:
            os.replace(path, path.with_name(path.name + ".unreadable"))
        except OSError:
            return
        logger.warning(
            "Unreadable Mattermost spool entry %s (%s); renamed to *.unreadable and skipped.",
            path,
            exc,
        )
