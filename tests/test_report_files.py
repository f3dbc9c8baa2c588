"""Report files: escaped, private, safely named, atomic, pruned; harmless when the disk fails."""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request
from flask_perfalert._logging import WARN_INTERVAL
from flask_perfalert.alerts import file as file_module
from flask_perfalert.alerts.file import FileAlerts, report_name

T0 = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


def make_event(endpoint: str | None = "index", timestamp: datetime = T0) -> SlowRequestEvent:
    return SlowRequestEvent(
        kind="request",
        endpoint=endpoint,
        url="http://localhost/",
        method="GET",
        params={},
        headers={},
        status_code=200,
        duration=2.0,
        threshold=1.0,
        timestamp=timestamp,
        duplicate=False,
        profile=None,
        profile_note="",
        host="host",
        pid=1,
    )


def file_alerts(app: Flask, **options: Any) -> FileAlerts:
    perf = PerfAlert(app, threshold_seconds=1e-6, profiler="none", **options)
    alerts = perf._monitor(app).file_alerts
    assert alerts is not None
    return alerts


def own_reports(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if file_module._OWN_NAME.match(p.name))


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- escaping -------------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.append(tag)


def tags_of(page: str) -> list[str]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def busy_report(app: Flask, path: str, wait_delivery: Any, **kwargs: Any) -> str:
    @app.route("/<path:anything>")
    def anything(anything: str) -> str:
        start = time.perf_counter()
        while time.perf_counter() - start < 0.05:  # enough samples for a call tree
            sum(range(500))
        return "ok"

    PerfAlert(app, threshold_seconds=1e-3, sample_after=0, sample_interval=0.001)
    app.test_client().get(path, **kwargs)
    wait_delivery()
    (report,) = Path(app.config["PERFALERT_FILE_DIR"]).glob("perfalert-*.html")
    return report.read_text()


def test_markup_in_the_request_cannot_run_in_the_report(
    app: Flask, report_dir: Path, wait_delivery: Any
) -> None:
    page = busy_report(
        app,
        '/x</script><script>alert("path")</script>?q=<img src=x onerror=alert("q")>',
        wait_delivery,
        headers={"X-Note": "<b onmouseover=alert('h')>bold</b>"},
    )
    assert "alert(" in page  # shown as text...
    assert "<img" not in page and "<b " not in page and "<script>alert" not in page
    assert "</script><script>" not in page
    benign = Flask("benign")
    benign.config.update(PERFALERT_FILE_DIR=str(report_dir / "benign"))
    benign.test_client_class = app.test_client_class
    expected = tags_of(busy_report(benign, "/x?q=1", wait_delivery))
    tags = tags_of(page)  # ...and made no element
    assert set(tags) == set(expected) and tags.count("script") == expected.count("script")


# -- modes, names, paths ----------------------------------------------------------------------


def test_reports_are_private_in_a_private_new_folder(
    app: Flask, tmp_path: Path, wait_delivery: Any
) -> None:
    folder = tmp_path / "deep" / "reports"
    app.config["PERFALERT_FILE_DIR"] = str(folder)
    app.add_url_rule("/", "index", lambda: "ok")
    old_umask = os.umask(0)  # the most permissive umask: modes must not depend on it
    try:
        PerfAlert(app, threshold_seconds=1e-6, profiler="none")
        app.test_client().get("/")
        wait_delivery()
    finally:
        os.umask(old_umask)
    (report,) = folder.glob("perfalert-*.html")
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", report.name]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "index.html").stat().st_mode) == 0o600


ENDPOINTS = [
    "api/orders",
    "<script>",
    "../../etc/passwd",
    "..",
    ".",
    "-",
    "ünïcødé.视图",
    "x" * 5000,
    "a\x00b",
    "",
    None,
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_names_are_safe_and_unique(app: Flask, report_dir: Path, endpoint: str | None) -> None:
    alerts = file_alerts(app)
    first, second = make_event(endpoint), make_event(endpoint)  # same time, same endpoint
    paths = [alerts.write(first), alerts.write(second)]
    assert all(p is not None for p in paths)
    names = own_reports(report_dir)
    assert len(names) == 2
    for path in paths:
        assert path is not None and path.parent == report_dir.resolve()
        assert path.name.isascii() and len(path.name) < 160


def test_a_real_route_with_an_odd_endpoint_name(
    app: Flask, report_dir: Path, wait_delivery: Any
) -> None:
    app.add_url_rule("/odd", "../<odd>/ä", lambda: "ok")
    PerfAlert(app, threshold_seconds=1e-6, profiler="none")
    app.test_client().get("/odd")
    wait_delivery()
    (name,) = own_reports(report_dir)
    assert "-odd-" in name


def test_a_link_planted_at_the_report_name_is_not_followed(
    app: Flask, report_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = file_alerts(app)
    event = make_event()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    report_dir.mkdir()
    (report_dir / report_name(event)).symlink_to(outside)
    assert alerts.write(event) is None
    assert outside.read_text() == "precious"
    assert "refusing to write outside" in caplog.text


def test_a_report_appears_whole_or_not_at_all(
    app: Flask, report_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts = file_alerts(app)
    seen: list[tuple[list[str], list[str]]] = []
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        # The moment before the report appears: its content is in a hidden temporary file.
        seen.append((sorted(os.listdir(report_dir)), [p.name for p in alerts.reports()]))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    path = alerts.write(make_event())
    assert path is not None
    # The report, then the index that lists it: each from a hidden temporary file.
    (listing, reports), (index_listing, index_reports) = seen
    assert reports == []
    assert len(listing) == 1 and listing[0].startswith(".perfalert-")
    assert index_reports == [path.name]
    assert len(index_listing) == 2 and index_listing[1] == path.name
    assert index_listing[0].startswith(".perfalert-")  # index.html is not there yet
    assert sorted(os.listdir(report_dir)) == ["index.html", path.name]
    assert path.read_text().endswith("</html>")


# -- retention ----------------------------------------------------------------------------------

FOREIGN = [
    "notes.txt",
    "perfalert-notes.html",
    "Perfalert-20200101T000000.000000Z-index-" + "0" * 32 + ".html",
    "perfalert-20200101T000000.000000Z-index-" + "0" * 32 + ".html.bak",
    "perfalert-20200101T000000.000000Z-index-" + "0" * 31 + ".html",
    "perfalert-20200101T000000.000000Z-" + "0" * 32 + ".html",
    ".perfalert-notes",
    "x.perfalert-abcdefgh.tmp",
]


def plant_foreign_files(folder: Path, tmp_path: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    old = time.time() - 400 * 86400
    for name in FOREIGN:
        (folder / name).write_text(name)
        os.utime(folder / name, (old, old))
    # Named exactly like reports, but not regular files: never removed.
    (folder / ("perfalert-20000101T000000.000000Z-dir-" + "1" * 32 + ".html")).mkdir()
    target = tmp_path / "target.html"
    target.write_text("target")
    link = folder / ("perfalert-20000101T000000.000000Z-link-" + "2" * 32 + ".html")
    link.symlink_to(target)
    os.utime(link, (old, old), follow_symlinks=False)
    return {name: name for name in FOREIGN}


def test_retention_keeps_the_newest_of_its_own_reports_only(
    app: Flask, report_dir: Path, tmp_path: Path
) -> None:
    foreign = plant_foreign_files(report_dir, tmp_path)
    alerts = file_alerts(app, file_max_files=3)
    written = [alerts.write(make_event("e", T0 + timedelta(seconds=i))) for i in range(6)]
    kept = {p.name for p in written[-3:] if p is not None}
    not_files = {n for n in os.listdir(report_dir) if n.startswith("perfalert-20000101")}
    assert len(kept) == 3 and len(not_files) == 2
    assert set(own_reports(report_dir)) == kept | not_files
    for name, content in foreign.items():
        assert (report_dir / name).read_text() == content
    assert (tmp_path / "target.html").read_text() == "target"


def test_retention_removes_reports_older_than_the_age_limit(app: Flask, report_dir: Path) -> None:
    alerts = file_alerts(app, file_max_age_days=30)
    old, recent = alerts.write(make_event("old")), alerts.write(make_event("recent"))
    assert old is not None and recent is not None
    when = time.time() - 31 * 86400
    os.utime(old, (when, when))
    when = time.time() - 29 * 86400
    os.utime(recent, (when, when))
    new = alerts.write(make_event("new"))
    assert not old.exists() and recent.exists() and new is not None and new.exists()


def test_retention_removes_temporary_files_a_crash_left_behind(
    app: Flask, report_dir: Path
) -> None:
    alerts = file_alerts(app)
    report_dir.mkdir()
    stale = report_dir / ".perfalert-k2j4h5g6.tmp"
    fresh = report_dir / ".perfalert-a1b2c3d4.tmp"
    for path in (stale, fresh):
        path.write_text("partial")
    when = time.time() - 2 * 3600
    os.utime(stale, (when, when))
    alerts.write(make_event())
    assert not stale.exists() and fresh.exists()


def test_retention_runs_after_each_report_where_it_is_written(
    app: Flask, report_dir: Path, wait_delivery: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    written_on: list[int] = []
    pruned_on: list[int] = []
    real_write, real_prune = FileAlerts.write, FileAlerts.prune

    def write(self: FileAlerts, event: SlowRequestEvent) -> Path | None:
        written_on.append(threading.get_ident())
        return real_write(self, event)

    def prune(self: FileAlerts) -> None:
        pruned_on.append(threading.get_ident())
        real_prune(self)

    monkeypatch.setattr(FileAlerts, "write", write)
    monkeypatch.setattr(FileAlerts, "prune", prune)
    app.testing = False  # as under a real server
    app.add_url_rule("/", "index", lambda: "ok")
    PerfAlert(app, threshold_seconds=1e-6, profiler="none")
    app.test_client().get("/")
    wait_delivery()
    assert pruned_on == written_on and len(pruned_on) == 1
    assert pruned_on != [threading.get_ident()]  # the events thread, not the request's


# -- disk trouble -----------------------------------------------------------------------------


def _parent_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "a-file").write_text("")
    return str(tmp_path / "a-file" / "reports")


def _under_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return "/proc/flask-perfalert-test/reports"


def _disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    return str(tmp_path / "reports")


def _read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    def mkstemp(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return str(tmp_path / "reports")


def _nul_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return str(tmp_path / "rep\x00orts")


@pytest.mark.parametrize(
    "trouble", [_parent_is_a_file, _under_proc, _disk_full, _read_only, _nul_byte]
)
def test_disk_trouble_costs_one_warning_per_interval_and_nothing_else(
    app: Flask,
    tmp_path: Path,
    clock: Any,
    events: list[SlowRequestEvent],
    wait_delivery: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    trouble: Any,
) -> None:
    folder = trouble(tmp_path, monkeypatch)
    app.config["PERFALERT_FILE_DIR"] = folder

    @app.route("/<int:n>", methods=["GET", "POST"])
    def view(n: int) -> str:
        return f"n={n} {request.method}"

    other: list[str] = []  # another subscriber, as the Mattermost one would be

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        other.append(event.id)

    perf_slow_request.connect(receiver, sender=app)
    try:
        perf = PerfAlert(app, threshold_seconds=1e-6, profiler="none", clock=clock)
        alerts = perf._monitor(app).file_alerts
        assert alerts is not None
        monotonic = FakeMonotonic()
        alerts.disk_warning.clock = monotonic
        client = app.test_client()
        caplog.set_level(logging.DEBUG, "flask_perfalert")
        bodies = []
        for n in range(6):
            clock.advance(11 * 86400)  # a new alert window: every request alerts
            if n == 4:
                monotonic.now += WARN_INTERVAL
            bodies.append(client.get(f"/{n}").get_data())
            wait_delivery()
    finally:
        perf_slow_request.disconnect(receiver, sender=app)
    assert bodies == [f"n={n} GET".encode() for n in range(6)]
    assert len(events) == 6 and other == [e.id for e in events]
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "Could not write" in r.message
    ]
    assert len(warnings) == 2  # the first, and the first after WARN_INTERVAL
    assert perf.stats(app)["dropped"] == 6
    if os.path.isdir(folder.replace("\x00", "")):
        assert os.listdir(folder) == []  # no temporary file left behind
