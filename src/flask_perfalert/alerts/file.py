"""The file subscriber: one HTML report per new slow event, in ``PERFALERT_FILE_DIR``.

The subscriber writes the report itself, on the thread that sends the signal
(which runs after the response was sent, never in a request), atomically (a
temporary file renamed into place), with mode 0600. Their names carry the
time, a safe form of the endpoint and the event id, so they never collide and
never leave the folder. Old reports are removed by count and by age; only
regular files whose names this module made are ever touched. After each
report, and the pruning that follows it, ``index.html`` lists the reports
left (:mod:`.index`). A folder that cannot be written (missing and not
creatable, full, read-only) costs one warning per five minutes, never an
exception in the app.
"""

from __future__ import annotations

import os
import re
import stat
import time
import uuid
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from .._files import folder_lock, make_folder, remove_stale_temps, temp_name_pattern, write_atomic
from .._logging import LimitedWarning
from . import Counts
from .index import ReportIndex

if TYPE_CHECKING:
    from ..events import SlowRequestEvent
    from ..settings import PerfAlertSettings


REPORT_PREFIX = "perfalert-"
REPORT_SUFFIX = ".html"
_OWN_NAME = re.compile(r"^perfalert-\d{8}T\d{6}\.\d{6}Z-[A-Za-z0-9_-]{1,80}-[0-9a-f]{32}\.html$")
#: Temporary files of an unfinished write (hidden, never mistaken for a report).
TEMP_PREFIX = ".perfalert-"
_OWN_TEMP = temp_name_pattern(TEMP_PREFIX)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_EVENT_ID = re.compile(r"^[0-9a-f]{32}$")


def safe_name(endpoint: str | None) -> str:
    """``endpoint`` reduced to letters, digits, ``_`` and ``-``; never empty or a path."""
    text = _UNSAFE.sub("_", endpoint or "no-endpoint").strip("_")
    return text[:80] or "endpoint"


def report_name(event: SlowRequestEvent) -> str:
    """``perfalert-<UTC time>-<safe endpoint>-<event id>.html``: unique, sortable by time."""
    stamp = event.timestamp.strftime("%Y%m%dT%H%M%S.%fZ")
    ident = event.id if _EVENT_ID.match(event.id) else uuid.uuid4().hex
    return f"{REPORT_PREFIX}{stamp}-{safe_name(event.endpoint)}-{ident}{REPORT_SUFFIX}"


def is_report_name(name: str) -> bool:
    """Whether ``name`` is a name this module gives reports."""
    return bool(_OWN_NAME.match(name))


class FileAlerts:
    """Writes reports for one app; connected to the signal by ``AppMonitor``."""

    def __init__(
        self, settings: PerfAlertSettings, stats: Counts, clock: Callable[[], float] = time.time
    ) -> None:
        self.stats = stats
        self.folder = Path(settings.file_dir)
        self.max_files = settings.file_max_files
        self.max_age = settings.file_max_age_days * 86400
        #: Disk problems: one warning per interval, the others at debug level.
        self.disk_warning = LimitedWarning()
        #: ``index.html``, over the alert window (``clock`` says when "now" is).
        self.index = ReportIndex(
            self.folder, settings.alert_window_days * 86400, TEMP_PREFIX, clock
        )
        self.index_warning = LimitedWarning()

    def on_slow_request(self, sender: object, event: SlowRequestEvent, **extra: object) -> None:
        if event.duplicate:
            return
        # The signal is sent off the request path: write now.
        event.report_path = self.write(event)

    def write(self, event: SlowRequestEvent) -> Path | None:
        """Write the report now; the path, or None after logging why not."""
        html = event.html
        if html is None:
            self.stats.add("dropped")
            return None
        try:
            # "replace": a file name with undecodable bytes in the call tree must not
            # cost the report.
            path = self._write_atomic(report_name(event), html.encode("utf-8", "replace"))
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in FILE_DIR
            self.stats.add("report_failures")
            self.stats.add("dropped")
            self.disk_warning.warn(
                "Could not write the report for %s to %s: %s", event.summary(), self.folder, exc
            )
            return None
        self.stats.add("reports_written")
        self.prune()
        return path

    def _write_atomic(self, name: str, data: bytes) -> Path:
        make_folder(self.folder)
        folder = self.folder.resolve()
        path = (folder / name).resolve()
        if path.parent != folder:  # cannot happen with safe names; checked all the same
            raise OSError(f"refusing to write outside {folder}: {name!r}")
        write_atomic(path, data, temp_prefix=TEMP_PREFIX)
        return path

    def reports(self) -> list[Path]:
        """This extension's reports in the folder, newest first."""
        return [self.folder / entry.name for entry in self._entries()]

    def _entries(self) -> list[os.DirEntry[str]]:
        # Names from one scandir, no Path per file: the folder may hold 100,000 reports.
        try:
            with os.scandir(self.folder) as found:
                entries = [entry for entry in found if is_report_name(entry.name)]
        except (OSError, ValueError):
            return []
        return sorted(entries, key=attrgetter("name"), reverse=True)

    def prune(self) -> None:
        """Remove old reports, then rewrite the index.

        Runs after each report is written. Reports beyond ``FILE_MAX_FILES`` and
        older than ``FILE_MAX_AGE_DAYS`` go. Only regular files named like this
        module's reports count (never links, folders or other files), and
        temporary files a crashed process left behind. Under the folder's lock:
        of processes sharing the folder, the last to write the index lists every
        report.
        """
        if not self.index.warm:
            # A new process reads every report's head once: not while it holds the
            # folder, which the other processes are waiting for.
            self.index.learn([entry.name for entry in self._entries()])
        with folder_lock(self.folder):
            kept = self._prune()
            try:
                if kept or os.path.lexists(self.index.path):
                    self.index.write(kept)
            except (OSError, ValueError) as exc:
                self.index_warning.warn(
                    "Could not write the report index in %s: %s", self.folder, exc
                )

    def write_index(self) -> Path:
        """Rewrite ``index.html`` from the reports in the folder, removing none.

        Raises OSError when it cannot be written.
        """
        with folder_lock(self.folder):
            kept = [entry.name for entry in self._entries() if _regular(entry)]
            return self.index.write(kept)

    def named(self, name: str) -> Path:
        """The report ``name`` names: a file name in the folder, or a path to one in it.

        ``index.html`` counts as a report here. Raises ValueError saying why
        ``name`` does not name one (outside the folder, missing, not a report).
        """
        given = Path(name)
        # A bare name is looked up in the folder; a path is taken as given.
        candidate = self.folder / given if len(given.parts) == 1 else given
        try:
            folder = self.folder.resolve()
            path = candidate.resolve()  # links followed: one pointing out is outside
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name!r} cannot be opened: {exc}") from exc
        if path.parent != folder:
            raise ValueError(
                f"{name} is not in the report folder {folder}; only the reports there are opened."
            )
        if not (is_report_name(path.name) or path.name == self.index.path.name):
            raise ValueError(f"{name} is not a report (its name is not a report's).")
        if not _regular(path):
            raise ValueError(f"There is no report {path.name} in {folder}.")
        return path

    def _prune(self) -> list[str]:
        """Remove what is too many or too old; the names of the reports kept, newest first."""
        now = time.time()
        kept: list[str] = []
        for entry in self._entries():
            try:
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode):
                    continue
                if len(kept) >= self.max_files or now - info.st_mtime > self.max_age:
                    os.unlink(entry.path)
                else:
                    kept.append(entry.name)
            except OSError:
                continue
        remove_stale_temps(self.folder, _OWN_TEMP)
        return kept


def _regular(entry: os.DirEntry[str] | Path) -> bool:
    try:
        return stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return False
