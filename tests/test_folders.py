"""Each app's own folders by default: reports, spool and alert window, never mixed with another's.

These tests use the defaults themselves, so they unset the ``PERFALERT_DATA_DIR``
that every other test points at its own folder; the system temporary directory
is the test's own too (``tempfile.tempdir``).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_perfalert import PerfAlert, SlowRequestEvent, perf_slow_request


@pytest.fixture(autouse=True)
def _defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("PERFALERT_DATA_DIR", raising=False)
    temp = tmp_path / "system-tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


def make_app(name: str, instance: Path, **options: Any) -> tuple[Flask, PerfAlert]:
    """An app whose every request is slow, with a page ``/page``."""
    app = Flask(name, instance_path=str(instance))
    app.add_url_rule("/page", "page", lambda: "page")
    perf = PerfAlert(app, threshold_seconds=1e-6, profiler="none", **options)
    return app, perf


def hit(app: Flask, path: str = "/page") -> None:
    app.test_client().get(path, buffered=True).close()


def reports_listed(app: Flask) -> list[str]:
    result = app.test_cli_runner().invoke(args=["perfalert", "reports", "--json"])
    assert result.exit_code == 0, result.output
    return [item["path"] for item in json.loads(result.output)]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_perfalert" and r.levelno == logging.WARNING
    ]


def test_an_app_keeps_its_data_in_its_instance_folder(tmp_path: Path, wait_delivery: Any) -> None:
    instance = tmp_path / "project" / "instance"
    app, perf = make_app("shop", instance)
    own = instance / "perfalert" / "shop"
    settings = perf.settings(app)
    assert settings.data_dir == instance / "perfalert"
    assert settings.file_dir == own / "reports"
    assert settings.spool_dir == own / "spool"
    assert settings.storage_uri == f"sqlite://{own}/perfalert.db"

    hit(app)
    wait_delivery()
    [report] = (own / "reports").glob("perfalert-*.html")
    assert reports_listed(app) == [str(report)]
    assert (own / "perfalert.db").is_file()
    # Ours: private. The instance folder is the app's, with the usual mode.
    assert mode(instance / "perfalert") == mode(own) == mode(own / "reports") == 0o700
    assert mode(instance) == 0o777 & ~_umask()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_two_apps_on_one_host_never_mix_reports(tmp_path: Path, wait_delivery: Any) -> None:
    # Two apps of one project (one instance folder), and a third elsewhere.
    shop, _ = make_app("shop", tmp_path / "project" / "instance")
    admin, _ = make_app("admin", tmp_path / "project" / "instance")
    blog, _ = make_app("blog", tmp_path / "other" / "instance")
    for app in (shop, admin, blog):
        hit(app)
    wait_delivery()
    listed = [reports_listed(app) for app in (shop, admin, blog)]
    assert [len(paths) for paths in listed] == [1, 1, 1]
    assert len({paths[0] for paths in listed}) == 3
    assert "/shop/reports/" in listed[0][0] and "/admin/reports/" in listed[1][0]


def test_two_apps_given_one_data_dir_still_keep_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wait_delivery: Any
) -> None:
    # One environment file for a host: each app gets its own folder under it.
    monkeypatch.setenv("PERFALERT_DATA_DIR", str(tmp_path / "var"))
    events: list[SlowRequestEvent] = []
    shop, _ = make_app("shop", tmp_path / "a")
    blog, _ = make_app("blog", tmp_path / "b")
    with perf_slow_request.connected_to(lambda s, event, **e: events.append(event)):
        hit(shop)
        hit(blog)  # the same endpoint name: its own alert window
        wait_delivery()  # not testing apps: sent from the events thread
    assert [e.duplicate for e in events] == [False, False]
    assert reports_listed(shop)[0].startswith(str(tmp_path / "var" / "shop" / "reports"))
    assert reports_listed(blog)[0].startswith(str(tmp_path / "var" / "blog" / "reports"))


def test_workers_of_one_app_share_the_window_and_it_outlives_them(
    tmp_path: Path, wait_delivery: Any
) -> None:
    # Two workers of one app (the same app, loaded twice), then a restart.
    instance = tmp_path / "instance"
    events: list[SlowRequestEvent] = []
    with perf_slow_request.connected_to(lambda s, event, **e: events.append(event)):
        for _ in range(3):
            app, perf = make_app("shop", instance)
            hit(app)
            wait_delivery()  # not testing apps: sent from the events thread
            perf._monitor(app).close()
    assert [e.duplicate for e in events] == [False, True, True]


def test_an_unwritable_instance_folder_falls_back_to_a_private_temporary_folder(
    tmp_path: Path, _defaults: Path, caplog: pytest.LogCaptureFixture, wait_delivery: Any
) -> None:
    blocker = tmp_path / "read-only"
    blocker.write_text("")  # a file where the instance folder's parent would be
    instance = blocker / "instance"
    app, perf = make_app("shop", instance)
    data_dir = perf.settings(app).data_dir
    root = _defaults / f"flask-perfalert-{os.geteuid()}"
    assert data_dir.parent == root
    [warning] = warnings_of(caplog)
    assert "The instance folder of app 'shop' cannot be used" in warning
    assert f"{instance / 'perfalert' / 'shop'} cannot be created" in warning
    assert f"keeps its data under {data_dir} instead" in warning
    assert "Set PERFALERT_DATA_DIR" in warning

    hit(app)
    wait_delivery()
    assert len(reports_listed(app)) == 1
    assert mode(root) == mode(data_dir) == mode(data_dir / "shop") == 0o700

    # Another project's app of the same name gets another folder.
    other = tmp_path / "other-read-only"
    other.write_text("")
    twin, twin_perf = make_app("shop", other / "instance")
    assert twin_perf.settings(twin).data_dir not in (data_dir, data_dir / "shop")
    assert twin_perf.settings(twin).data_dir.parent == root


def test_a_temporary_folder_someone_else_made_is_not_used(
    tmp_path: Path, _defaults: Path, caplog: pytest.LogCaptureFixture
) -> None:
    planted = _defaults / f"flask-perfalert-{os.geteuid()}"
    planted.mkdir()
    planted.chmod(0o777)  # as another user would leave it, for us to write into
    blocker = tmp_path / "read-only"
    blocker.write_text("")
    app, perf = make_app("shop", blocker / "instance")
    data_dir = perf.settings(app).data_dir
    assert planted not in data_dir.parents
    assert mode(data_dir.parent) == 0o700  # a folder of this process's own
    assert list(planted.iterdir()) == []
    [warning] = warnings_of(caplog)
    assert f"{planted} is not a private folder of this user" in warning


def test_a_report_folder_that_cannot_be_written_is_reported_at_start_up(
    app: Flask, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    app.config["PERFALERT_FILE_DIR"] = str(blocker / "reports")
    PerfAlert(app)  # before any request
    [warning] = warnings_of(caplog)
    assert warning == (
        f"PERFALERT_FILE_DIR: {blocker / 'reports'} cannot be created: {blocker} is not a "
        "folder; no HTML report can be written until this is fixed."
    )


def test_config_and_check_say_which_folder_cannot_be_written(app: Flask, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    app.config["PERFALERT_FILE_DIR"] = str(blocker)
    PerfAlert(app)
    runner = app.test_cli_runner()
    config = runner.invoke(args=["perfalert", "config"])
    assert config.exit_code == 0
    assert (
        f"Problems:\n  - PERFALERT_FILE_DIR: {blocker} is not a folder; no HTML report "
        "can be written until this is fixed." in config.output
    )
    check = runner.invoke(args=["perfalert", "check"])
    assert check.exit_code == 1
    assert f"PERFALERT_FILE_DIR: {blocker} is not a folder" in check.output
    assert f"File reports: FAILED: could not write a report to {blocker}" in check.output


def test_config_says_where_the_apps_folder_is_and_why(tmp_path: Path) -> None:
    app, perf = make_app("shop", tmp_path / "instance")
    output = app.test_cli_runner().invoke(args=["perfalert", "config"]).output
    folder = tmp_path / "instance" / "perfalert" / "shop"
    assert f"This app's folder: {folder} (in the app's instance folder)" in output

    blocker = tmp_path / "file"
    blocker.write_text("")
    app, perf = make_app("shop", blocker / "instance")
    output = app.test_cli_runner().invoke(args=["perfalert", "config"]).output
    assert "(in the temporary directory, because " in output
    assert "set PERFALERT_DATA_DIR to keep it elsewhere" in output


def test_nothing_is_created_when_monitoring_is_off(tmp_path: Path) -> None:
    make_app("shop", tmp_path / "instance", enabled=False)
    assert not (tmp_path / "instance").exists()


def test_nothing_is_created_when_nothing_is_kept_there(tmp_path: Path) -> None:
    make_app("shop", tmp_path / "instance", storage_uri="memory://", file_enabled=False)
    assert not (tmp_path / "instance").exists()


def test_a_folder_that_exists_keeps_its_mode(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    make_app("shop", tmp_path / "instance", data_dir=data)
    assert mode(data) == 0o755  # the user's: never changed
    assert mode(data / "shop") == 0o700  # ours
