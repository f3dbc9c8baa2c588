"""Where each app's reports, spool and alert window live when the settings do not say.

``PERFALERT_DATA_DIR`` is a folder under which each app keeps its data in a
subfolder of its own, named after the app (``app.name``): two apps given the
same ``DATA_DIR`` (one environment file for a host) never mix their reports
or their alert windows. Inside an app's folder: ``reports/`` (the default
``FILE_DIR``), ``spool/`` (the default ``SPOOL_DIR``) and ``perfalert.db``
(the default ``STORAGE_URI``).

When the app is testing (``app.testing`` when it is set up), the default
``DATA_DIR`` is a new folder of that app object alone in the system temporary
directory (see :func:`testing_folder`): a test sees what production does
(the same store, spool and reports), but nothing of another test's or another
run's.

Otherwise the default ``DATA_DIR`` is ``perfalert`` in the app's instance folder
(``app.instance_path``, Flask's place for files an app writes at run time):
every worker of the app on one host finds it, and it survives restarts. When
the instance folder cannot be written (an app installed read-only, a
read-only container image), it is ``flask-perfalert-<uid>/<hash of the
instance path>`` in the system temporary directory: still one per user and
app, but emptied when the machine cleans its temporary files.

Asking where a folder is creates nothing. :func:`prepare_folders` creates the
app's folder (mode 0700) at start-up and reports every folder that cannot be
written; the report and spool folders are made by their writers when first used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .storage.sqlite import sqlite_path

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_perfalert")

#: The default DATA_DIR's name inside the instance folder.
INSTANCE_SUBFOLDER = "perfalert"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def app_folder_name(name: str | None) -> str:
    """``name`` reduced to a safe folder name: never empty, never hidden, never a path."""
    text = _UNSAFE.sub("_", name or "").lstrip(".")[:80]
    return text or "app"


def app_folder(data_dir: Path, app_name: str | None) -> Path:
    """The folder of one app's own data under ``DATA_DIR``."""
    return Path(data_dir) / app_folder_name(app_name)


def in_app_folder(folder: Path) -> dict[str, Any]:
    """The defaults of the settings that live in an app's folder."""
    return {
        "file_dir": folder / "reports",
        "spool_dir": folder / "spool",
        "storage_uri": f"sqlite://{folder / 'perfalert.db'}",
    }


def temp_root() -> Path:
    """This user's folder in the system temporary directory."""
    return Path(tempfile.gettempdir()) / f"flask-perfalert-{os.geteuid()}"


@dataclass
class FolderDefaults:
    """The default ``DATA_DIR`` of one app (or of none), decided once, when first asked."""

    app_name: str | None = None
    instance_path: str | None = None
    #: The app was testing when set up: its data lives in a folder of its own.
    testing: bool = False
    _decided: tuple[Path, str | None] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, app: Flask) -> FolderDefaults:
        return cls(app_name=app.name, instance_path=app.instance_path, testing=app.testing)

    @property
    def data_dir(self) -> Path:
        return self._decide()[0]

    @property
    def fallback_reason(self) -> str | None:
        """Why the instance folder is not used, or None when it is."""
        return self._decide()[1]

    def _decide(self) -> tuple[Path, str | None]:
        if self._decided is None:
            self._decided = self._choose()
        return self._decided

    def _choose(self) -> tuple[Path, str | None]:
        if self.testing:
            return testing_folder(), None
        if self.instance_path is None:
            return temp_root(), None
        preferred = Path(self.instance_path) / INSTANCE_SUBFOLDER
        problem = write_problem(app_folder(preferred, self.app_name))
        if problem is None:
            return preferred, None
        # One folder per instance folder: apps of the same name in two projects stay apart.
        digest = hashlib.sha256(self.instance_path.encode("utf-8", "replace")).hexdigest()[:8]
        root, trouble = private_temp_root()
        if trouble is not None:
            problem += f", and {trouble}"
        return root / digest, problem


#: Under the temporary root: one folder per app object set up while testing.
TESTING_SUBFOLDER = "testing"
_testing_swept = False


def testing_folder() -> Path:
    """A new, empty ``DATA_DIR`` for one app object set up with ``app.testing``.

    Each app made by a test (the app-factory pattern) gets its own window,
    spool and reports: nothing carries over from one test, or one run of the
    suite, to the next. Named after this process, so the first one of a
    process removes those of processes that have ended.
    """
    global _testing_swept
    root, _ = private_temp_root()
    parent = root / TESTING_SUBFOLDER
    if not _testing_swept:
        _testing_swept = True
        _sweep_testing_folders(parent)
    create_private_folder(parent, parent)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent))


def _sweep_testing_folders(parent: Path) -> None:
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for entry in entries:
        pid_text = entry.name.partition("-")[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # that process still runs
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:  # another user's process: not ours to judge
            continue


def write_problem(folder: Path) -> str | None:
    """Why this process could not create or write ``folder``; None when it can.

    Asks the operating system (``access``), creates nothing.
    """
    try:
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                return f"{folder} is not a folder"
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"{folder} is not writable by this user"
            return None
        parent = folder.parent
        while not (parent.exists() or parent.is_symlink()) and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            return f"{folder} cannot be created: {parent} is not a folder"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"{folder} cannot be created: {parent} is not writable by this user"
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        return f"{folder!s} cannot be used: {exc}"
    return None


def create_private_folder(folder: Path, private_from: Path) -> None:
    """Create ``folder`` and its missing parents: mode 0700 for those at or below
    ``private_from``, the usual mode above it. Raises OSError.

    Never changes the mode of a folder that exists.
    """
    missing: list[Path] = []
    current = folder
    while not current.is_dir() and current.parent != current:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        private = path == private_from or private_from in path.parents
        try:
            path.mkdir(mode=0o700 if private else 0o777)
        except FileExistsError:
            if not path.is_dir():
                raise


def private_temp_root() -> tuple[Path, str | None]:
    """This user's folder in the temporary directory, created 0700 if missing.

    In a temporary directory every user can write to, another user may have
    made it first, to read or plant what we write: then a new private folder
    of this process is used, and the reason returned.
    """
    root = temp_root()
    try:
        create_private_folder(root, root)
        info = root.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077:
            return root, None
        problem = (
            f"{root} is not a private folder of this user (owner uid {info.st_uid}, "
            f"mode {stat.S_IMODE(info.st_mode):o})"
        )
    except OSError as exc:
        problem = f"{root} cannot be used: {exc}"
    return Path(tempfile.mkdtemp(prefix="flask-perfalert-")), problem


def folder_problems(settings: Any, *, store: bool = True) -> list[str]:
    """What keeps the extension from writing where the settings say, each naming its key.

    Only the folders in use count: the report folder with file reports on, the
    spool with Mattermost on, and (``store``) the SQLite file's folder with an
    ``sqlite://`` store.
    """
    checks = []
    if settings.file_enabled:
        checks.append(("PERFALERT_FILE_DIR", settings.file_dir, "no HTML report can be written"))
    if settings.mattermost_enabled:
        checks.append(
            ("PERFALERT_SPOOL_DIR", settings.spool_dir, "no Mattermost alert can wait for a retry")
        )
    problems = [
        f"{key}: {problem}; {consequence} until this is fixed."
        for key, folder, consequence in checks
        if (problem := write_problem(Path(folder))) is not None
    ]
    uri = str(settings.storage_uri)
    if store and uri.partition("://")[0].lower() == "sqlite":
        try:
            problem = write_problem(sqlite_path(uri).parent)
        except ValueError as exc:
            problem = str(exc)
        if problem is not None:
            problems.append(
                f"PERFALERT_STORAGE_URI: {problem}; the alert window is kept in each "
                "process's memory until this is fixed."
            )
    return problems


def prepare_folders(
    settings: Any, sources: Mapping[str, str], defaults: FolderDefaults | None
) -> list[str]:
    """At start-up: create the app's data folder if it is used, and log what cannot be written.

    Returns the problems logged, each naming its key.
    """
    if not settings.enabled:
        return []
    problems: list[str] = []
    data_dir = Path(settings.data_dir)
    fallback = defaults.fallback_reason if defaults is not None else None
    if sources.get("data_dir") == "default" and fallback is not None:
        logger.warning(
            "The instance folder of app %r cannot be used (%s); Flask-PerfAlert keeps its "
            "data under %s instead, which the system may empty. Set PERFALERT_DATA_DIR to "
            "choose a folder.",
            defaults.app_name if defaults is not None else None,
            fallback,
            data_dir,
        )
    used = {
        "file_dir": settings.file_enabled,
        "spool_dir": settings.mattermost_enabled,
        "storage_uri": True,
    }
    if any(used[name] and sources.get(name) == "default" for name in used):
        folder = app_folder(data_dir, defaults.app_name if defaults is not None else None)
        try:
            # DATA_DIR itself and the app's folder are ours; the instance folder keeps
            # the usual mode (Flask's convention).
            create_private_folder(folder, data_dir)
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            problems.append(f"PERFALERT_DATA_DIR: {folder} cannot be created: {exc}.")
    # The store reports its own trouble when it is opened, next.
    problems += folder_problems(settings, store=False)
    for problem in problems:
        logger.warning("%s", problem)
    return problems
