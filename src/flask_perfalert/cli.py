"""The ``flask perfalert`` command group.

Each command is a separate function; they share only the helpers at the top.
A command that cannot do what it was asked exits with a non-zero status
(``click.ClickException``: status 1, the message on stderr).
"""

from __future__ import annotations

import html
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from . import _counters
from .settings import PREFIX
from .storage.base import WORKERS_RECENT


def _extension() -> Any:
    ext = current_app.extensions.get("perfalert")
    if ext is None:
        raise click.ClickException("Flask-PerfAlert is not set up on this app (PerfAlert(app)).")
    return ext


def _app_name() -> str:
    return str(current_app.name)


@click.group("perfalert")
def perfalert_cli() -> None:
    """Flask-PerfAlert: settings, reports, statistics and a delivery check."""


# -- config ---------------------------------------------------------------------------

#: How each source of a value is shown, with the place the value was read from.
_SOURCE_LABELS = {
    "option": "option: PerfAlert({name}=...)",
    "app.config": "app.config['{key}']",
    "environment": "environment: ${key}",
    "default": "default",
}


def _config_rows() -> list[dict[str, Any]]:
    monitor = _extension()._monitor()
    values = monitor.settings.masked()
    rows = []
    for name, source in monitor.sources.items():
        key = PREFIX + name.upper()
        rows.append(
            {
                "key": key,
                "value": values[key],
                "source": source,
                "from": _SOURCE_LABELS[source].format(name=name, key=key),
            }
        )
    return rows


@perfalert_cli.command("config", short_help="Effective settings and where each came from.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: key -> value, source.")
@click.option(
    "--changed", is_flag=True, help="Only the settings that do not have their default value."
)
@with_appcontext
def config_command(as_json: bool, changed: bool) -> None:
    """Print the effective settings, secrets masked, and where each value came from.

    A value comes from the first of: an option given to PerfAlert(...), the
    app's config (app.config['PERFALERT_...']), an environment variable
    (PERFALERT_...), the default. Environment variables are those of the
    process running this command: a server started elsewhere may see others.
    """
    rows = _config_rows()
    if changed:
        rows = [row for row in rows if row["source"] != "default"]
    if as_json:
        data = {r["key"]: {"value": r["value"], "source": r["source"]} for r in rows}
        click.echo(json.dumps(data, indent=2, default=str))
        return
    _echo_settings(rows)


def _echo_settings(rows: list[dict[str, Any]]) -> None:
    click.echo(f"Flask-PerfAlert settings of app {_app_name()!r} (secrets masked)")
    click.echo("Precedence: option > app.config > environment > default")
    click.echo()
    if not rows:
        click.echo("Every setting has its default value.")
        return
    shown = [(r["key"], json.dumps(r["value"], default=str), r["from"]) for r in rows]
    width_key = max(len("KEY"), *(len(k) for k, _, _ in shown))
    width_value = min(48, max(len("VALUE"), *(len(v) for _, v, _ in shown)))
    click.echo(f"{'KEY':<{width_key}}  {'VALUE':<{width_value}}  FROM")
    for key, value, origin in shown:
        click.echo(f"{key:<{width_key}}  {value:<{width_value}}  {origin}")


# -- reports ---------------------------------------------------------------------------

_META = re.compile(r'<meta name="perfalert-([a-z]+)" content="([^"]*)">')
_NAME_TIME = re.compile(r"^perfalert-(\d{8}T\d{6}\.\d{6})Z-")
#: A report's <meta> tags are in its first bytes (see report.render_meta).
_HEAD_BYTES = 8192


def read_report_info(path: Path) -> dict[str, Any]:
    """Time, endpoint and duration of one report, from its head (or its file name)."""
    info: dict[str, Any] = {"path": str(path), "time": None, "endpoint": None, "duration": None}
    match = _NAME_TIME.match(path.name)
    if match:
        stamp = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%f")
        info["time"] = stamp.replace(tzinfo=timezone.utc).isoformat(timespec="milliseconds")
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD_BYTES).decode("utf-8", "replace")
    except OSError:
        return info
    meta = {name: html.unescape(value) for name, value in _META.findall(head)}
    if meta.get("time"):
        info["time"] = meta["time"]
    what = meta.get("endpoint") or None
    if meta.get("kind") == "function" and what:
        what += "()"
    elif meta.get("method"):
        what = f"{meta['method']} {what or '(no endpoint)'}"
    info["endpoint"] = what
    try:
        info["duration"] = float(meta["duration"])
    except (KeyError, ValueError):
        pass
    return info


def _short_time(iso: str | None) -> str:
    if not iso:
        return "?"
    try:
        stamp = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return stamp.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _file_alerts() -> Any:
    monitor = _extension()._monitor()
    alerts = monitor.file_alerts
    if alerts is None:
        raise click.ClickException(
            "File reports are off (PERFALERT_FILE_ENABLED is false): there are no reports."
        )
    return alerts


@perfalert_cli.command("reports", short_help="List the HTML reports, newest first.")
@click.option(
    "-n",
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Show at most this many reports.",
)
@click.option("--open", "open_newest", is_flag=True, help="Open the newest report in a browser.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list, newest first.")
@with_appcontext
def reports_command(limit: int, open_newest: bool, as_json: bool) -> None:
    """List the HTML reports in PERFALERT_FILE_DIR, newest first.

    Shows each report's time (UTC), what was slow, how long it took and its
    path. With --open, the newest report is opened in the default browser
    (the BROWSER environment variable chooses another); the command fails if
    there is no report or no browser could be started.
    """
    alerts = _file_alerts()
    paths = alerts.reports()
    infos = [read_report_info(path) for path in paths[:limit]]
    if as_json:
        click.echo(json.dumps(infos, indent=2))
    elif not infos:
        where = alerts.folder
        state = "" if where.is_dir() else " (the folder does not exist yet)"
        click.echo(f"No reports in {where}{state}.")
    else:
        shown = len(infos)
        click.echo(f"Reports in {alerts.folder}, newest first ({shown} of {len(paths)}):")
        cells = [
            (
                _short_time(i["time"]),
                i["endpoint"] or "?",
                "?" if i["duration"] is None else f"{i['duration']:.3f} s",
                i["path"],
            )
            for i in infos
        ]
        width_what = max(len("ENDPOINT"), *(len(c[1]) for c in cells))
        click.echo(f"{'TIME (UTC)':<19}  {'ENDPOINT':<{width_what}}  {'DURATION':>9}  PATH")
        for when, what, took, where in cells:
            click.echo(f"{when:<19}  {what:<{width_what}}  {took:>9}  {where}")
    if open_newest:
        if not paths:
            raise click.ClickException("There is no report to open.")
        newest = paths[0]
        import webbrowser  # only here: every app that sets up the extension imports cli.py

        if not webbrowser.open(newest.resolve().as_uri()):
            raise click.ClickException(
                f"No browser could be started; open the report yourself: {newest}"
            )
        if not as_json:
            click.echo(f"Opened {newest}")


# -- stats -----------------------------------------------------------------------------

#: The counters shown, in order, with their labels.
_STAT_LABELS = [
    ("requests", "requests seen"),
    ("functions", "watched calls seen"),
    ("slow", "slow"),
    ("alerted", "alerted"),
    ("suppressed", "suppressed (duplicates in the window)"),
    ("delivered", "delivered"),
    ("delivery_failures", "delivery failures"),
    ("spooled", "spooled for a retry"),
    ("dropped", "dropped"),
]


def collect_stats(ext: Any) -> tuple[str, dict[str, Any]]:
    """The counters to show and their scope.

    A store that sums every worker's counters (``counters(app_key)``, see
    docs/deployment.rst) is preferred; otherwise these are this process's own.
    """
    monitor = ext._monitor()
    if monitor.store.shared:
        try:
            data = _counters.summed_snapshot(monitor.store.counters(monitor.app_key))
        except Exception as exc:
            raise click.ClickException(
                f"Could not read the counters from {monitor.store.description}: {exc}"
            ) from exc
        scope = (
            f"every worker sharing {monitor.store.description} (each sends its counts "
            f"at most every {_counters.FLUSH_INTERVAL:g} s while it serves requests, "
            "and when it exits)"
        )
        return scope, data
    return "this process", ext.stats()


def _reporting(data: dict[str, Any]) -> str:
    """Since when the shared counters count, and how many processes sent some lately."""
    if data.get("since") is None:
        return "  No worker has sent counts yet."
    since = datetime.fromtimestamp(data["since"], tz=timezone.utc)
    workers = data.get("workers_seen") or 0
    return (
        f"  Counting since {since:%Y-%m-%d %H:%M:%S} UTC; {workers} "
        f"process{'' if workers == 1 else 'es'} sent counts in the last "
        f"{WORKERS_RECENT / 60:g} minutes."
    )


def _overhead(data: dict[str, Any]) -> str:
    busy = float(data.get("monitored_seconds") or 0.0)
    if busy <= 0:
        return "n/a (nothing was measured)"
    own = float(data.get("own_seconds") or 0.0) + float(data.get("sampler_seconds") or 0.0)
    share = own / busy
    return f"{share:.2%} of the monitored time ({own:.3f} s of {busy:.3f} s)"


@perfalert_cli.command("stats", short_help="Requests seen, slow, alerted; the overhead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, with the scope.")
@with_appcontext
def stats_command(as_json: bool) -> None:
    """Print how many requests were seen, slow, alerted and suppressed, and the cost.

    Without a shared store the counts are this process's own, and this
    command runs in a process of its own, which has served no requests. With
    PERFALERT_STORAGE_URI naming a shared store (sqlite:// or redis://) they
    cover every worker: each adds its counts to the store at most every few
    seconds while it serves requests, and when it exits.
    """
    ext = _extension()
    scope, data = collect_stats(ext)
    own_process = scope == "this process"
    mattermost = ext._monitor().mattermost_alerts
    if as_json:
        out = {**data, "scope": scope, "pid": os.getpid() if own_process else None}
        if mattermost is not None:
            out.update(mattermost.backlog_figures())
        click.echo(json.dumps(out, indent=2, default=str))
        return
    click.echo(f"Flask-PerfAlert statistics of app {_app_name()!r}")
    if own_process:
        click.echo(f"Scope: this process only (pid {os.getpid()}).")
        if not data.get("requests") and not data.get("functions"):
            click.echo(
                "  This command runs in its own process, which has served no requests; the\n"
                "  counters of your server's workers live in those processes. Configure a\n"
                "  shared PERFALERT_STORAGE_URI (sqlite:// or redis://) to see every worker."
            )
    else:
        click.echo(f"Scope: {scope}.")
        click.echo(_reporting(data))
    click.echo()
    width = max(len(label) for _, label in _STAT_LABELS)
    for name, label in _STAT_LABELS:
        value = data.get(name)
        click.echo(f"{label:<{width}}  {'?' if value is None else value}")
    click.echo(f"{'estimated overhead':<{width}}  {_overhead(data)}")
    if mattermost is not None:
        click.echo()
        click.echo(mattermost.backlog())


# The check command lives in its own module; importing it registers it on the group.
from . import _cli_check  # noqa: E402,F401
