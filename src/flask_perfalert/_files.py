"""Files the extension writes: whole or not at all, private, and cleaned up after a crash.

* :func:`write_atomic` writes to a hidden temporary file in the target's
  folder (mode 0600 whatever the umask), flushes it to disk, then renames it
  into place: a reader sees the whole file or none. Optionally the file is
  locked (``flock``) before the rename and handed back open, so that it is
  never visible unlocked while its writer still works on it.
* :func:`remove_stale_temps` removes the temporary files a process that died
  while writing left behind, once they are old enough that no writer can
  still be busy with them; only regular files whose names this module makes
  are touched.
* :func:`folder_lock` holds an exclusive lock on a folder (``flock`` on the
  folder itself, no lock file), so that processes sharing it take turns at
  work that lists the folder and then writes what it found.
* :func:`not_private` tells whether a file could have been made by someone
  else; :func:`secret_key` reads a random key kept in a private file, made
  by the first process that needs it.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Temporary files end with this (and start with the caller's hidden prefix).
TEMP_SUFFIX = ".tmp"
#: A temporary file this old was left by a crashed process.
STALE_TEMP_SECONDS = 3600.0
#: How long :func:`folder_lock` waits for another process to let go of a folder.
FOLDER_LOCK_SECONDS = 5.0


def temp_name_pattern(prefix: str) -> re.Pattern[str]:
    """The names :func:`write_atomic` gives temporary files made with ``prefix``."""
    return re.compile(rf"^{re.escape(prefix)}[A-Za-z0-9_]{{6,}}{re.escape(TEMP_SUFFIX)}$")


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) if missing; the folder itself with mode 0700."""
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)


def write_atomic(path: Path, data: bytes, *, temp_prefix: str, lock: bool = False) -> int | None:
    """Write ``data`` to ``path`` atomically, mode 0600; raises OSError when the disk says no.

    With ``lock``, the new file is locked (exclusive ``flock``) before it appears
    and its open descriptor is returned; closing it releases the lock.
    """
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix, suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        if lock:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if lock:
        return fd
    os.close(fd)
    return None


def remove_stale_temps(
    folder: Path, pattern: re.Pattern[str], max_age: float = STALE_TEMP_SECONDS
) -> None:
    """Remove regular files in ``folder`` named by ``pattern`` and older than ``max_age``."""
    try:
        names = [name for name in os.listdir(folder) if pattern.match(name)]
    except (OSError, ValueError):  # ValueError: a NUL byte in the folder's name
        return
    now = time.time()
    for name in names:
        path = folder / name
        try:
            info = path.lstat()
            if stat.S_ISREG(info.st_mode) and now - info.st_mtime > max_age:
                path.unlink()
        except OSError:
            continue


@contextmanager
def folder_lock(folder: Path, timeout: float = FOLDER_LOCK_SECONDS) -> Iterator[bool]:
    """Hold an exclusive lock on ``folder`` for the ``with`` block; yields whether it got it.

    Waits at most ``timeout`` seconds: a process stopped while it holds the
    lock must not stop everyone else, so the caller then goes on without it
    (and so it does on a file system without ``flock``). Two threads of one
    process exclude each other too: each call opens the folder anew.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except (OSError, ValueError):
        yield False
        return
    try:
        yield _flock(fd, time.monotonic() + timeout)
    finally:
        os.close(fd)  # releases the lock


def _flock(fd: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        except OSError:  # no flock here (some network file systems)
            return False


def not_private(info: os.stat_result) -> str | None:
    """Why a file with this status may not be one this user wrote alone, or None."""
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if info.st_uid != os.geteuid():
        return f"it belongs to another user (uid {info.st_uid})"
    if stat.S_IMODE(info.st_mode) != 0o600:
        return f"its mode is {stat.S_IMODE(info.st_mode):04o}, not 0600"
    if info.st_nlink != 1:
        return "it has other links"
    return None


def secret_key(path: Path, size: int) -> bytes:
    """The random key of ``size`` bytes in ``path``; made (mode 0600) if missing.

    Of processes racing to make it, the first one's key wins (a link never
    replaces a file). Raises OSError if the file is not a private one of this user.
    """
    try:
        return _read_key(path, size)
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(size)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return _read_key(path, size)
    finally:
        os.unlink(tmp)
    return key


def _read_key(path: Path, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        # Not not_private(): a key being made has two links for a moment.
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or mode != 0o600:
            raise PermissionError(f"the key {path} is not a private file of this user")
        key = os.read(fd, size + 1)
    finally:
        os.close(fd)
    if len(key) != size:
        raise PermissionError(f"the key {path} is damaged")
    return key
