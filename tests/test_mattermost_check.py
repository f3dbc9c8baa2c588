"""``flask perfalert check``: what an operator runs after deploying."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from mattermost_setup import mattermost_config, quick_retries, standin
from mattermost_standin import MattermostStandIn, new_id

from flask_perfalert import PerfAlert
from flask_perfalert.alerts.mattermost import WORKER

__all__ = ["quick_retries", "standin"]  # fixtures, imported for pytest


def configure(app: Flask, standin: MattermostStandIn, tmp_path: Path, **config: Any) -> None:
    config.setdefault("threshold_seconds", 1.0)
    app.config.update(mattermost_config(standin, tmp_path / "spool", **config))


def check(app: Flask, standin: MattermostStandIn, tmp_path: Path, **config: Any) -> Any:
    configure(app, standin, tmp_path, **config)
    PerfAlert(app)
    return app.test_cli_runner().invoke(args=["perfalert", "check"])


def test_check_prints_the_settings_and_sends_a_test_alert_everywhere(
    app: Flask, standin: MattermostStandIn, tmp_path: Path, report_dir: Path
) -> None:
    result = check(app, standin, tmp_path)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "PERFALERT_MATTERMOST_TOKEN" in out and "**********" in out
    assert standin.token not in out
    assert f'"{standin.url}"' in out, "the effective settings are printed"
    assert f"File reports: OK, {report_dir} takes reports" in out
    assert list(report_dir.iterdir()) == []  # the test report was removed
    assert "Mattermost: OK, posted a test alert with its report" in out
    assert f"as @{standin.user['username']}" in out
    [post] = standin.posts
    assert "test alert" in post["message"] and len(post["file_ids"]) == 1
    assert standin.calls("GET", "/api/v4/users/me"), "the token was checked"


def test_check_sends_the_alerts_waiting_in_the_spool(
    app: Flask, standin: MattermostStandIn, tmp_path: Path
) -> None:
    configure(app, standin, tmp_path, threshold_seconds=0.05, mattermost_max_retries=0)

    @app.route("/slow")
    def slow() -> str:
        end = time.perf_counter() + 0.08
        while time.perf_counter() < end:
            pass
        return "x"

    standin.down()
    PerfAlert(app)  # the app, running while Mattermost is down
    app.test_client().get("/slow")
    assert WORKER.wait_idle(30)
    assert len(list((tmp_path / "spool").glob("*.json"))) == 1
    standin.start()  # the operator fixed Mattermost, then checks
    result = app.test_cli_runner().invoke(args=["perfalert", "check"])
    assert result.exit_code == 0, result.output
    assert "1 alert(s) were waiting; 1 sent, 0 left." in result.output
    assert sorted("test alert" in p["message"] for p in standin.posts) == [False, True]
    assert list((tmp_path / "spool").glob("*.json")) == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("bad-url", "PERFALERT_MATTERMOST_URL is not usable: the scheme must be http or https"),
        ("not-mattermost", "is not Mattermost's JSON API; is PERFALERT_MATTERMOST_URL"),
        ("refused", "connection refused by http://127.0.0.1:"),
        ("401", "Mattermost rejected the token (401)"),
        ("unknown-channel", "channel not found or bot not a member (403)"),
        ("not-member", "channel not found or bot not a member (403)"),
        ("timeout", "did not answer within 0.5 s (timeout)"),
        ("missing", "PERFALERT_MATTERMOST_CHANNEL_ID is missing"),
    ],
)
def test_check_names_the_exact_failure_and_exits_non_zero(
    app: Flask, standin: MattermostStandIn, tmp_path: Path, case: str, expected: str
) -> None:
    config: dict[str, Any] = {"mattermost_timeout": 0.5}
    if case == "bad-url":
        config["mattermost_url"] = "ftp://" + standin.url.split("://")[1]
    elif case == "not-mattermost":
        config["mattermost_url"] = standin.url + "/somewhere-else"
    elif case == "refused":
        standin.down()
    elif case == "401":
        config["mattermost_token"] = "revoked-token"
    elif case == "unknown-channel":
        config["mattermost_channel_id"] = new_id()
    elif case == "not-member":
        config["mattermost_channel_id"] = standin.other_channel_id
    elif case == "timeout":
        standin.fault("hang", method="GET", path="/api/v4/users/me")
    elif case == "missing":
        config["mattermost_channel_id"] = ""
    result = check(app, standin, tmp_path, **config)
    assert result.exit_code == 1, result.output
    assert "Mattermost: FAILED: " in result.output
    assert expected in result.output
    assert "File reports: OK" in result.output, "the file channel is still checked"
    assert standin.posts == []
    assert "revoked-token" not in result.output and standin.token not in result.output


def test_check_fails_when_reports_cannot_be_written(
    app: Flask, standin: MattermostStandIn, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = check(app, standin, tmp_path, file_dir=str(blocker))
    assert result.exit_code == 1
    assert f"File reports: FAILED: could not write a report to {blocker}" in result.output
    assert "Mattermost: OK" in result.output


def test_check_fails_when_no_channel_is_enabled(
    app: Flask, standin: MattermostStandIn, tmp_path: Path
) -> None:
    result = check(app, standin, tmp_path, file_enabled=False, mattermost_enabled=False)
    assert result.exit_code == 1
    assert "no alert channel is enabled" in result.output
