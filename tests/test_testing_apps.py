"""A user's own test suite: under ``app.testing`` nothing carries over between tests or runs.

Flask's docs teach an app factory called once per test: every such app has the
same import name and instance folder. On the defaults each one gets a data
folder of its own, so its window, spool and reports start empty.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import close_monitoring
from flask import Flask
from mattermost_setup import quick_retries, standin
from mattermost_standin import MattermostStandIn

from flask_perfalert import PerfAlert
from flask_perfalert.alerts.mattermost import WORKER

__all__ = ["quick_retries", "standin"]  # fixtures, imported for pytest


@pytest.fixture(autouse=True)
def _defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite's own isolation (a DATA_DIR per test) off: the defaults are tested here.
    monkeypatch.delenv("PERFALERT_DATA_DIR")


def create_app(instance: Path, **config: Any) -> Flask:
    """The factory of the user's app, as Flask's tutorial writes it."""
    app = Flask("shop", instance_path=str(instance))
    app.config.update(TESTING=True, **config)
    PerfAlert(app, threshold_seconds=0.05)

    @app.route("/slow")
    def slow() -> str:
        end = time.perf_counter() + 0.07
        while time.perf_counter() < end:
            pass
        return "done"

    return app


def test_each_test_s_app_alerts_on_its_first_slow_request(tmp_path: Path) -> None:
    perfs = []
    for _ in range(2):  # two tests, each with its own app from the factory
        app = create_app(tmp_path / "instance")
        app.test_client().get("/slow")
        perf = app.extensions["perfalert"]
        assert (perf.stats(app)["alerted"], perf.stats(app)["suppressed"]) == (1, 0)
        perfs.append(perf.settings(app))
        close_monitoring(app)
    first, second = perfs
    assert first.data_dir != second.data_dir
    assert first.storage_uri != second.storage_uri
    # Nothing is written into the project's instance folder.
    assert not (tmp_path / "instance").exists()
    for settings in perfs:
        assert len(list(Path(settings.file_dir).glob("perfalert-*.html"))) == 1


RUN = """
import sys, time
from flask import Flask
from flask_perfalert import PerfAlert
app = Flask("shop", instance_path=sys.argv[1])
app.config["TESTING"] = True
perf = PerfAlert(app, threshold_seconds=0.05, file_enabled=False)
app.add_url_rule("/slow", "slow", lambda: str(time.sleep(0.07)))
app.test_client().get("/slow")
print(perf.stats(app)["alerted"])
"""


def test_a_second_run_of_the_suite_alerts_again(tmp_path: Path) -> None:
    runs = [
        subprocess.run(
            [sys.executable, "-c", RUN, str(tmp_path / "instance")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()[-1]
        for _ in range(2)
    ]
    assert runs == ["1", "1"]


def test_nothing_spooled_by_one_test_is_posted_by_the_next(
    tmp_path: Path, standin: MattermostStandIn
) -> None:
    mattermost = dict(
        PERFALERT_MATTERMOST_ENABLED=True,
        PERFALERT_MATTERMOST_URL=standin.url,
        PERFALERT_MATTERMOST_TOKEN=standin.token,
        PERFALERT_MATTERMOST_CHANNEL_ID=standin.channel_id,
        PERFALERT_MATTERMOST_MAX_RETRIES=0,
    )
    standin.down()
    earlier = create_app(tmp_path / "instance", **mattermost)
    earlier.test_client().get("/slow")  # Mattermost is down: the post is spooled
    assert WORKER.wait_idle(30)
    close_monitoring(earlier)
    standin.start()
    later = create_app(tmp_path / "instance", **mattermost)
    result = later.test_cli_runner().invoke(args=["perfalert", "check"])
    assert result.exit_code == 0, result.output
    assert [("test alert" in post["message"]) for post in standin.posts] == [True]
    close_monitoring(later)


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "factory"


def test_the_documented_example_suite_passes_twice() -> None:
    # docs/testing.rst shows it: the shop's own tests, each with a fresh app.
    for _ in range(2):  # a second run of the suite alerts as the first did
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
            cwd=EXAMPLE,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "3 passed" in run.stdout
