"""``flask perfalert config | reports | stats`` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_perfalert import PerfAlert, SlowRequestEvent
from flask_perfalert.cli import perfalert_cli


def invoke(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["perfalert", *args])


def slow_app(app: Flask) -> PerfAlert:
    """``app`` with a fast page and two slow ones (threshold 0.05 s)."""

    def crunch(seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            pass

    @app.get("/fast")
    def fast() -> str:
        return "fast"

    @app.get("/slow")
    def slow() -> str:
        crunch(0.08)
        return "slow"

    @app.get("/slower")
    def slower() -> str:
        crunch(0.12)
        return "slower"

    return PerfAlert(app, threshold_seconds=0.05)


# -- config ---------------------------------------------------------------------------


def test_config_says_where_each_value_came_from(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERFALERT_ALERT_WINDOW_DAYS", "2")
    monkeypatch.setenv("PERFALERT_THRESHOLD_SECONDS", "9")  # beaten by the option
    monkeypatch.setenv("PERFALERT_MATTERMOST_TOKEN", "tok-s3cret-value")
    monkeypatch.setenv("PERFALERT_STORAGE_URI", "redis://admin:redis-pw-123@127.0.0.1:1/0")
    app.config["PERFALERT_EXCLUDE"] = ["static", "/health*"]
    PerfAlert(app, threshold_seconds=0.3)

    result = invoke(app, "config")

    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "option: PerfAlert(threshold_seconds=...)" in lines["PERFALERT_THRESHOLD_SECONDS"]
    assert " 0.3 " in lines["PERFALERT_THRESHOLD_SECONDS"]
    assert "app.config['PERFALERT_EXCLUDE']" in lines["PERFALERT_EXCLUDE"]
    assert '["static", "/health*"]' in lines["PERFALERT_EXCLUDE"]
    assert "environment: $PERFALERT_ALERT_WINDOW_DAYS" in lines["PERFALERT_ALERT_WINDOW_DAYS"]
    assert lines["PERFALERT_PROFILER"].rstrip().endswith("default")
    # Secrets are masked, including a password inside a URL.
    assert "s3cret" not in result.output
    assert "redis-pw-123" not in result.output
    assert "redis://admin:**********@127.0.0.1:1/0" in lines["PERFALERT_STORAGE_URI"]
    assert "**********" in lines["PERFALERT_MATTERMOST_TOKEN"]


def test_config_json_and_changed_only(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERFALERT_PROFILER", "none")
    PerfAlert(app)

    everything = json.loads(invoke(app, "config", "--json").output)
    changed = json.loads(invoke(app, "config", "--json", "--changed").output)

    assert set(everything) == set(app.extensions["perfalert"].effective_settings(app))
    assert everything["PERFALERT_PROFILER"] == {"value": "none", "source": "environment"}
    assert everything["PERFALERT_ENABLED"] == {"value": True, "source": "default"}
    # PERFALERT_FILE_DIR comes from the app fixture's config, DATA_DIR from conftest.py.
    assert changed == {
        "PERFALERT_PROFILER": {"value": "none", "source": "environment"},
        "PERFALERT_FILE_DIR": {"value": app.config["PERFALERT_FILE_DIR"], "source": "app.config"},
        "PERFALERT_DATA_DIR": {"value": os.environ["PERFALERT_DATA_DIR"], "source": "environment"},
    }


def test_commands_fail_when_the_extension_is_not_set_up(app: Flask) -> None:
    runner = app.test_cli_runner()
    for command in ("config", "reports", "stats"):
        result = runner.invoke(perfalert_cli, [command])
        assert result.exit_code == 1
        assert "Flask-PerfAlert is not set up on this app" in result.output


# -- reports --------------------------------------------------------------------------


def test_reports_lists_newest_first_with_duration(
    app: Flask,
    events: list[SlowRequestEvent],
    report_dir: Path,
    wait_delivery: Any,
) -> None:
    slow_app(app)
    client = app.test_client()
    empty = invoke(app, "reports")
    assert empty.exit_code == 0
    assert f"No reports in {report_dir} (the folder does not exist yet)." in empty.output

    client.get("/fast")
    client.get("/slow")
    client.get("/slower")
    wait_delivery()

    result = invoke(app, "reports")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Reports in {report_dir}, newest first (2 of 2):"
    assert lines[1].split() == ["TIME", "(UTC)", "ENDPOINT", "DURATION", "PATH"]
    slow, slower = events
    newest, older = lines[2], lines[3]
    assert "GET slower" in newest and f"{slower.duration:.3f} s" in newest
    assert "GET slow " in older and f"{slow.duration:.3f} s" in older
    assert newest.split()[-1].endswith(f"-{slower.id}.html")
    assert slower.timestamp.strftime("%Y-%m-%d %H:%M:%S") in newest

    listed = json.loads(invoke(app, "reports", "--json").output)
    assert [item["duration"] for item in listed] == [slower.duration, slow.duration]
    assert [item["endpoint"] for item in listed] == ["GET slower", "GET slow"]
    assert all(Path(item["path"]).is_file() for item in listed)

    limited = invoke(app, "reports", "--limit", "1")
    assert "(1 of 2)" in limited.output
    assert "GET slow " not in limited.output


def test_reports_of_a_watched_function(
    app: Flask, report_dir: Path, wait_delivery: Any, events: list[SlowRequestEvent]
) -> None:
    perf = PerfAlert(app)

    @perf.watch(threshold=0.02)
    def nightly_job() -> None:
        deadline = time.perf_counter() + 0.04
        while time.perf_counter() < deadline:
            pass

    with app.app_context():
        nightly_job()
    wait_delivery()

    [item] = json.loads(invoke(app, "reports", "--json").output)
    assert item["endpoint"] == f"{nightly_job.__module__}.{nightly_job.__qualname__}()"
    assert item["duration"] == events[0].duration


def test_reports_open_without_a_report_fails(app: Flask) -> None:
    PerfAlert(app)
    result = invoke(app, "reports", "--open")
    assert result.exit_code == 1
    assert "There is no report to open." in result.output


def test_reports_when_file_reports_are_off(app: Flask) -> None:
    PerfAlert(app, file_enabled=False)
    result = invoke(app, "reports")
    assert result.exit_code == 1
    assert "File reports are off" in result.output


class FlaskProject:
    """A project folder with an app that wrote two reports, and a ``flask`` to run there.

    The browser is whatever $BROWSER names: here a script that records the
    address it was asked to open.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.report_dir = folder / "reports"
        (folder / "app.py").write_text(
            "import time\n"
            "from flask import Flask\n"
            "from flask_perfalert import PerfAlert\n"
            "app = Flask(__name__)\n"
            "perf = PerfAlert(app, threshold_seconds=0.02)\n"
            "@app.get('/a')\n"
            "def a():\n"
            "    time.sleep(0.03)\n"
            "    return 'a'\n"
            "@app.get('/b')\n"
            "def b():\n"
            "    time.sleep(0.03)\n"
            "    return 'b'\n"
        )
        self.opened = folder / "opened.txt"
        browser = folder / "browser.py"
        browser.write_text(f"import sys\nopen({str(self.opened)!r}, 'w').write(sys.argv[1])\n")
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")
        } | {
            "PERFALERT_FILE_DIR": str(self.report_dir),
            "BROWSER": f"{sys.executable} {browser} %s",
        }
        make = (
            "import app, time\n"
            "from flask_perfalert.events_thread import EVENTS\n"
            "c = app.app.test_client()\n"
            "for path in ('/a', '/b'):\n"
            "    c.get(path, buffered=True).close()\n"
            "assert EVENTS.wait_idle(20)\n"
        )
        subprocess.run(
            [sys.executable, "-c", make], cwd=folder, env=self.env, check=True, timeout=60
        )
        self.older, self.newest = sorted(self.report_dir.glob("perfalert-*.html"))
        assert "-b-" in self.newest.name and "-a-" in self.older.name

    def reports(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.opened.unlink(missing_ok=True)
        flask = [sys.executable, "-m", "flask", "--app", "app", "perfalert", "reports", *args]
        return subprocess.run(
            flask, cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=60
        )


@pytest.fixture
def project(tmp_path: Path) -> FlaskProject:
    return FlaskProject(tmp_path)


def test_reports_open_starts_the_browser_on_the_index(project: FlaskProject) -> None:
    index = project.report_dir / "index.html"
    index.unlink()  # reports from before the index existed: --open writes it

    result = project.reports("--open")

    assert result.returncode == 0, result.stderr
    assert project.opened.read_text() == index.resolve().as_uri()
    assert f"Opened {index}" in result.stdout
    page = index.read_text()
    assert page.index(project.newest.name) < page.index(project.older.name)


def test_reports_open_a_report_named_by_file_name_or_path(project: FlaskProject) -> None:
    by_name = project.reports("--open", project.older.name)
    assert by_name.returncode == 0, by_name.stderr
    assert project.opened.read_text() == project.older.resolve().as_uri()
    assert f"Opened {project.older.resolve()}" in by_name.stdout

    relative = Path("reports") / project.newest.name  # from the project's folder
    by_path = project.reports("--open", str(relative))
    assert by_path.returncode == 0, by_path.stderr
    assert project.opened.read_text() == project.newest.resolve().as_uri()

    by_absolute_path = project.reports("--open", str(project.older))
    assert by_absolute_path.returncode == 0, by_absolute_path.stderr
    assert project.opened.read_text() == project.older.resolve().as_uri()


def test_reports_open_refuses_anything_outside_the_folder(project: FlaskProject) -> None:
    outside = project.folder / project.newest.name  # a report's name, in another folder
    outside.write_text("<p>not a report of this app</p>")
    link = project.report_dir / ("perfalert-20200101T000000.000000Z-x-" + "0" * 32 + ".html")
    link.symlink_to(outside)
    for name, said in [
        (str(outside), "is not in the report folder"),
        (f"../{outside.name}", "is not in the report folder"),
        (str(project.report_dir / ".." / outside.name), "is not in the report folder"),
        (link.name, "is not in the report folder"),  # a link pointing out
        ("/etc/passwd", "is not in the report folder"),
        ("app.py", "is not a report"),
        ("perfalert-20200101T000000.000000Z-x-" + "1" * 32 + ".html", "There is no report"),
    ]:
        result = project.reports("--open", name)
        assert result.returncode == 1, (name, result.stdout)
        assert said in result.stderr, (name, result.stderr)
        assert str(project.report_dir.resolve()) in result.stderr or said == "is not a report"
        assert not project.opened.exists(), name

    without_open = project.reports(project.newest.name)
    assert without_open.returncode == 2
    assert "use it with --open" in without_open.stderr


# -- stats ----------------------------------------------------------------------------


def stats_rows(output: str) -> dict[str, str]:
    """The counters' table: after the heading, up to the next blank line (By endpoint)."""
    table = output.split("\n\n")[1]
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in table.splitlines() if line)


def test_stats_count_each_channel(app: Flask, wait_delivery: Any, report_dir: Path) -> None:
    slow_app(app)
    client = app.test_client()
    for path in ("/fast", "/fast", "/slow", "/slow", "/slower"):
        client.get(path)
    wait_delivery()

    result = invoke(app, "stats")

    assert result.exit_code == 0, result.output
    # The default store (SQLite in the app's folder) sums every worker's counts;
    # this process's own, not sent yet, are added.
    assert "Scope: every worker sharing sqlite://" in result.output
    rows = stats_rows(result.output)
    assert rows["requests seen"] == "5"
    assert rows["slow"] == "3"
    assert rows["alerted"] == "2"
    assert rows["suppressed (duplicates in the window)"] == "1"
    reports = list(report_dir.glob("perfalert-*.html"))
    assert rows["file reports written"] == "2" == str(len(reports))
    assert rows["file reports not written"] == "0"
    assert rows["Mattermost posts made"] == "0"
    assert rows["Mattermost alerts queued for a retry"] == "0"
    assert rows["Mattermost tries failed"] == "0"
    assert rows["alerts dropped"] == "0"
    assert re.fullmatch(
        r"\d+\.\d\d% of the monitored time \(\d+\.\d{3} s of \d+\.\d{3} s\)",
        rows["estimated overhead"],
    )

    data = json.loads(invoke(app, "stats", "--json").output)
    assert data["pid"] is None
    assert (data["requests"], data["slow"], data["alerted"], data["suppressed"]) == (5, 3, 2, 1)
    assert (data["reports_written"], data["report_failures"], data["delivered"]) == (2, 0, 0)


def test_stats_count_reports_that_could_not_be_written(
    app: Flask, tmp_path: Path, wait_delivery: Any, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    app.config["PERFALERT_FILE_DIR"] = str(blocker)
    slow_app(app)
    app.test_client().get("/slow")
    wait_delivery()
    rows = stats_rows(invoke(app, "stats").output)
    assert (rows["file reports written"], rows["file reports not written"]) == ("0", "1")


def test_stats_of_this_process(app: Flask, wait_delivery: Any) -> None:
    app.config["PERFALERT_STORAGE_URI"] = "memory://"
    slow_app(app)
    client = app.test_client()
    for path in ("/fast", "/fast", "/slow", "/slow"):
        client.get(path)
    wait_delivery()

    result = invoke(app, "stats")

    assert result.exit_code == 0, result.output
    assert f"Scope: this process only (pid {os.getpid()})." in result.output
    rows = stats_rows(result.output)
    assert rows["requests seen"] == "4"
    assert rows["slow"] == "2"
    assert rows["alerted"] == "1"
    assert rows["file reports written"] == "1"

    data = json.loads(invoke(app, "stats", "--json").output)
    assert data["scope"] == "this process"
    assert data["pid"] == os.getpid()
    assert (data["requests"], data["slow"], data["alerted"], data["suppressed"]) == (4, 2, 1, 1)


def test_stats_in_a_fresh_process_says_why_it_is_empty(app: Flask) -> None:
    PerfAlert(app, storage_uri="memory://")
    result = invoke(app, "stats")
    assert result.exit_code == 0
    assert "This command runs in its own process, which has served no requests" in result.output
    assert "PERFALERT_STORAGE_URI" in result.output
    assert "n/a (nothing was measured)" in result.output


# -- check ----------------------------------------------------------------------------


def test_check_leaves_no_report_behind(app: Flask, report_dir: Path, wait_delivery: Any) -> None:
    slow_app(app)
    app.test_client().get("/slow")
    wait_delivery()
    [real] = report_dir.glob("perfalert-*.html")
    before = sorted(report_dir.iterdir())  # the report and its index

    result = invoke(app, "check")

    assert result.exit_code == 0, result.output
    assert (
        f"File reports: OK, {report_dir} takes reports (a test report was written there "
        "and removed)." in result.output
    )
    assert sorted(report_dir.iterdir()) == before  # nothing left, nothing pruned
    listed = json.loads(invoke(app, "reports", "--json").output)
    assert [item["path"] for item in listed] == [str(real)]


def test_help_texts(app: Flask) -> None:
    PerfAlert(app)
    assert "settings, reports, statistics" in invoke(app, "--help").output
    assert "where each value came from" in invoke(app, "config", "--help").output
    assert "newest first" in invoke(app, "reports", "--help").output
    assert "--open" in invoke(app, "reports", "--help").output
    assert "this process's own" in invoke(app, "stats", "--help").output
