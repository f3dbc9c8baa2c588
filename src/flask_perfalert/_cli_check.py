"""``flask perfalert check``: what an operator runs after deploying."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timezone
from typing import Any

import click
from flask.cli import with_appcontext

from .cli import _config_rows, _echo_settings, _extension, perfalert_cli
from .events import SlowRequestEvent


@perfalert_cli.command("check")
@with_appcontext
def check_command() -> None:
    """Print the effective settings, then send a test alert through every enabled channel.

    Run it after deploying: it says what works and, for what does not, the exact
    problem (bad URL, connection refused, 401, unknown channel, timeout). Exits
    with status 1 if any enabled channel fails. Mattermost alerts waiting in the
    spool are sent once the test alert got through.
    """
    monitor = _extension()._monitor()
    settings = monitor.settings
    _echo_settings(_config_rows())
    click.echo("")
    if not settings.enabled:
        click.echo("Note: PERFALERT_ENABLED is false: requests are not monitored.")
    results: list[bool] = []
    if settings.file_enabled:
        results.append(_check_file(monitor))
    if settings.mattermost_enabled:
        results.append(_check_mattermost(monitor))
    if not results:
        click.echo(
            "FAILED: no alert channel is enabled (PERFALERT_FILE_ENABLED and "
            "PERFALERT_MATTERMOST_ENABLED are both false)."
        )
        results.append(False)
    if not all(results):
        raise SystemExit(1)


def _check_event(monitor: Any) -> SlowRequestEvent:
    """A made-up slow event: what a test alert shows."""
    threshold = monitor.threshold
    return SlowRequestEvent(
        kind="request",
        endpoint="perfalert_check",
        url="(test alert from flask perfalert check)",
        method="GET",
        params={},
        headers={},
        status_code=200,
        duration=threshold * 1.5,
        threshold=threshold,
        timestamp=datetime.now(timezone.utc),
        duplicate=False,
        profile=None,
        profile_note="a test alert has no profile",
        host=monitor.host,
        pid=os.getpid(),
    )


def _check_file(monitor: Any) -> bool:
    alerts = monitor.file_alerts
    path = alerts.write(_check_event(monitor)) if alerts is not None else None
    if path is not None:
        click.echo(f"File reports: OK, wrote a test report: {path}")
        return True
    folder = monitor.settings.file_dir
    reason = "see the warning above"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = str(exc)
    click.echo(f"File reports: FAILED: could not write a report to {folder}: {reason}")
    return False


def _check_mattermost(monitor: Any) -> bool:
    from .alerts.mattermost.address import configuration_problems
    from .alerts.mattermost.client import MattermostError

    problems = configuration_problems(monitor.settings)
    alerts = monitor.mattermost_alerts
    if problems or alerts is None:
        click.echo(f"Mattermost: FAILED: {'; '.join(problems) or 'not set up'}")
        return False
    client = alerts.client
    where = f"channel {client.channel_id} on {client.address.display}"
    waiting = alerts.backlog_figures()["mattermost_waiting"]
    if waiting:
        click.echo(alerts.backlog())
    try:
        user = client.me()
        post = alerts.send_test(_check_event(monitor))
    except MattermostError as exc:
        click.echo(f"Mattermost: FAILED: {exc}")
        return False
    name = user.get("username") or user.get("id") or "?"
    attached = "with" if post.get("file_ids") else "WITHOUT"
    click.echo(
        f"Mattermost: OK, posted a test alert {attached} its report to {where} as @{name} "
        f"(post {post.get('id')})"
    )
    if waiting:
        delivered, left = alerts.replay()
        click.echo(
            f"Mattermost spool {alerts.spool.folder}: {waiting} alert(s) were waiting; "
            f"{delivered} sent, {left} left."
        )
    return True
