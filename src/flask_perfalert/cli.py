"""The ``flask perfalert`` command group: config, reports, stats and check.

Each command is a separate function; they share only the helpers at the top.
A command that cannot do what it was asked exits with a non-zero status
(``click.ClickException``: status 1, the message on stderr).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
import webbrowser
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from . import stats as _counters
from ._folders import app_folder, folder_problems
from ._redaction import printable
from ._routes import unmatched_settings
from .alerts.index import NotOurIndex
from .events import SlowRequestEvent
from .profiling.policy import ProfileResult
from .report_meta import ReportInfo, read_report_info
from .settings import PREFIX
from .storage.base import WORKERS_RECENT


def _extension() -> Any:
    ext = current_app.extensions.get("perfalert")
    if ext is None:
        raise click.ClickException("Flask-PerfAlert is not set up on this app (PerfAlert(app)).")
    return ext


def _app_name() -> str:
    return str(current_app.name)


def _problems(ext: Any) -> list[str]:
    """What in the settings does not match this app and machine (folders, endpoints)."""
    monitor = ext._monitor()
    settings = monitor.settings
    if not settings.enabled:
        return []
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    # The app is fully loaded here: its routes and watched functions are known.
    return folder_problems(settings) + unmatched_settings(app, settings, ext._watched)


def _echo_problems(problems: list[str]) -> None:
    if problems:
        click.echo()
        click.echo("Problems:")
        for problem in problems:
            click.echo(f"  - {problem}")


def _data_folder_note(monitor: Any) -> str:
    """Where the app's own folder is, and why there."""
    folder = app_folder(monitor.settings.data_dir, _app_name())
    reason = monitor.folders.fallback_reason if monitor.folders is not None else None
    if monitor.sources.get("data_dir") != "default":
        return f"This app's folder: {folder}"
    if reason is None:
        return f"This app's folder: {folder} (in the app's instance folder)"
    return (
        f"This app's folder: {folder} (in the temporary directory, because {reason}; "
        "set PERFALERT_DATA_DIR to keep it elsewhere)"
    )


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
    Then: where the app's own folder is, and the problems found (folders
    that cannot be written, endpoint names that match nothing).
    """
    rows = _config_rows()
    if changed:
        rows = [row for row in rows if row["source"] != "default"]
    if as_json:
        data = {r["key"]: {"value": r["value"], "source": r["source"]} for r in rows}
        click.echo(json.dumps(data, indent=2, default=str))
        return
    _echo_settings(rows)
    _echo_problems(_problems(_extension()))


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
    click.echo()
    click.echo(_data_folder_note(_extension()._monitor()))


# -- reports ---------------------------------------------------------------------------


def _file_alerts() -> Any:
    monitor = _extension()._monitor()
    alerts = monitor.file_alerts
    if alerts is None:
        raise click.ClickException(
            "File reports are off (PERFALERT_FILE_ENABLED is false): there are no reports."
        )
    return alerts


@perfalert_cli.command("reports", short_help="List the HTML reports, newest first.")
@click.argument("report", required=False)
@click.option(
    "-n",
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Show at most this many reports.",
)
@click.option(
    "--open",
    "open_it",
    is_flag=True,
    help="Open the index of the reports (or the REPORT named) in a browser.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list, newest first.")
@with_appcontext
def reports_command(report: str | None, limit: int, open_it: bool, as_json: bool) -> None:
    """List the HTML reports in PERFALERT_FILE_DIR, newest first, and where their index is.

    Shows each report's time (UTC), what was slow, how long it took and its
    path. The index (index.html in the same folder) lists every report and
    charts the slow requests per endpoint over the alert window.

    With --open, the index is brought up to date and opened in the default
    browser (the BROWSER environment variable chooses another); with a
    REPORT (its file name, or its path inside the folder), that report is
    opened instead. The command fails if there is no report, REPORT is not
    one of the folder's reports, or no browser could be started.
    """
    if report is not None and not open_it:
        raise click.UsageError("REPORT names the report to open: use it with --open.")
    alerts = _file_alerts()
    paths = alerts.reports()
    infos = [read_report_info(path) for path in paths[:limit]]
    if as_json:
        click.echo(json.dumps([info.as_json() for info in infos], indent=2))
    elif not infos:
        where = alerts.folder
        state = "" if where.is_dir() else " (the folder does not exist yet)"
        click.echo(f"No reports in {where}{state}.")
    else:
        _echo_reports(infos, alerts.folder, len(paths))
        index = alerts.index.path
        state = "" if index.is_file() else " (not written yet: --open writes it)"
        click.echo(f"Index of every report, with a chart: {index}{state}")
    if open_it:
        target = _report_to_open(alerts, report) if report else _index_to_open(alerts, paths)
        if not webbrowser.open(target.resolve().as_uri()):
            raise click.ClickException(f"No browser could be started; open it yourself: {target}")
        if not as_json:
            click.echo(f"Opened {target}")


def _echo_reports(infos: list[ReportInfo], folder: Path, total: int) -> None:
    click.echo(f"Reports in {folder}, newest first ({len(infos)} of {total}):")
    # Endpoint names are the app's, and may hold anything: one line each.
    cells = [
        (
            i.short_time(),
            printable(i.what() or "?"),
            "?" if i.duration is None else f"{i.duration:.3f} s",
            printable(str(i.path)),
        )
        for i in infos
    ]
    width_what = max(len("ENDPOINT"), *(len(c[1]) for c in cells))
    click.echo(f"{'TIME (UTC)':<19}  {'ENDPOINT':<{width_what}}  {'DURATION':>9}  PATH")
    for when, what, took, where in cells:
        click.echo(f"{when:<19}  {what:<{width_what}}  {took:>9}  {where}")


def _report_to_open(alerts: Any, name: str) -> Path:
    try:
        path: Path = alerts.named(name)
    except ValueError as exc:
        raise click.ClickException(printable(str(exc))) from exc
    return path


def _index_to_open(alerts: Any, reports: list[Path]) -> Path:
    """The index, rewritten now (its chart's window ends now)."""
    if not reports:
        raise click.ClickException("There is no report to open.")
    try:
        path: Path = alerts.write_index()
    except (OSError, ValueError) as exc:
        index = alerts.index.path
        if isinstance(exc, NotOurIndex) or not index.is_file():
            raise click.ClickException(
                f"The index could not be written: {exc}. Name a report to open it instead."
            ) from exc
        click.echo(f"Note: the index could not be brought up to date ({exc}).", err=True)
        return Path(index)
    return path


# -- stats -----------------------------------------------------------------------------

#: The counters shown, in order, with their labels: the requests, then each channel.
_STAT_LABELS = [
    ("requests", "requests seen"),
    ("functions", "watched calls seen"),
    ("slow", "slow"),
    ("alerted", "alerted"),
    ("suppressed", "suppressed (duplicates in the window)"),
    ("escalated", "alerted again, getting worse"),
    ("reports_written", "file reports written"),
    ("report_failures", "file reports not written"),
    ("delivered", "Mattermost posts made"),
    ("spooled", "Mattermost alerts queued for a retry"),
    ("delivery_failures", "Mattermost tries failed"),
    ("dropped", "alerts dropped"),
]


def collect_stats(ext: Any) -> tuple[str, dict[str, Any]]:
    """The counters to show and their scope.

    A store that sums every worker's counters (``counters(app_key)``, see
    docs/deployment.rst) is preferred; otherwise these are this process's own.
    """
    monitor = ext._monitor()
    if monitor.store.shared:
        try:
            values = dict(monitor.store.counters(monitor.app_key))
        except Exception as exc:
            raise click.ClickException(
                f"Could not read the counters from {monitor.store.description}: {exc}"
            ) from exc
        # This process's own counts not sent yet (when it served requests itself).
        flusher = monitor.counters
        for name, value in (flusher.pending() if flusher is not None else {}).items():
            values[name] = values.get(name, 0.0) + value
        data = _counters.summed_snapshot(values)
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

    With a shared store (the default SQLite file in the app's folder, another
    sqlite:// file, or redis://) they cover every worker: each adds its counts
    to the store at most every few seconds while it serves requests, and when
    it exits. With memory:// they are this process's own, and this command
    runs in a process of its own, which has served no requests.
    """
    ext = _extension()
    scope, data = collect_stats(ext)
    own_process = scope == "this process"
    mattermost = ext._monitor().mattermost_alerts
    keys = ext._monitor().store.key_states()
    if as_json:
        out = {**data, "scope": scope, "pid": os.getpid() if own_process else None}
        out["keys"] = {key: state._asdict() for key, state in keys.items()}
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
                "  counters of your server's workers live in those processes. With a shared\n"
                "  store (PERFALERT_STORAGE_URI unset: the default SQLite file, or redis://),\n"
                "  this shows every worker's."
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
    if keys:
        click.echo()
        _echo_keys(keys)
    if mattermost is not None:
        click.echo()
        click.echo(mattermost.backlog())


#: Endpoints listed at most by ``stats``, the most suppressed first.
STATS_KEYS = 20


def _echo_keys(keys: dict[str, Any]) -> None:
    """Each endpoint's alerts and the slow requests the window suppressed, every worker's."""
    ranked = sorted(keys.items(), key=lambda item: (-item[1].suppressed, -item[1].alerts))
    rows = [
        (printable(key), str(s.alerts), str(s.suppressed), str(s.since), f"{s.worst:.3f} s")
        for key, s in ranked[:STATS_KEYS]
    ]
    heads = ("ENDPOINT", "ALERTS", "SUPPRESSED", "SINCE LAST ALERT", "WORST ALERTED")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    shown = f" ({STATS_KEYS} of {len(keys)})" if len(keys) > STATS_KEYS else ""
    click.echo(f"By endpoint, within the alert window{shown}:")
    click.echo("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# -- check -----------------------------------------------------------------------------


@perfalert_cli.command("check")
@with_appcontext
def check_command() -> None:
    """Print the effective settings, then send a test alert through every enabled channel.

    Run it after deploying: it says what works and, for what does not, the exact
    problem (bad URL, connection refused, 401, unknown channel, timeout). Exits
    with status 1 if any enabled channel fails. Mattermost alerts waiting in the
    spool are sent once the test alert got through.
    """
    ext = _extension()
    monitor = ext._monitor()
    settings = monitor.settings
    _echo_settings(_config_rows())
    _echo_problems(_problems(ext))
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
    event: SlowRequestEvent = monitor.make_event(
        "request",
        endpoint="perfalert_check",
        started=time.perf_counter(),
        duration=threshold * 1.5,
        threshold=threshold,
        result=ProfileResult(None, "a test alert has no profile"),
        status_code=200,
    )
    return dataclasses.replace(event, url="(test alert from flask perfalert check)", method="GET")


def _check_file(monitor: Any) -> bool:
    """Render a test report and write it where reports go, then remove it.

    Written the way a report is (created 0700, a hidden temporary file), so
    ``reports`` never lists it, it never counts against ``FILE_MAX_FILES``,
    and if this process dies before removing it, pruning removes it later.
    """
    folder = Path(monitor.settings.file_dir)
    try:
        page = _check_event(monitor).html
        if page is None:
            raise OSError("the report could not be made (see the log)")
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".perfalert-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(page.encode("utf-8", "replace"))
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            os.unlink(name)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        click.echo(f"File reports: FAILED: could not write a report to {folder}: {exc}")
        return False
    click.echo(
        f"File reports: OK, {folder} takes reports (a test report was written there and removed)."
    )
    return True


def _check_mattermost(monitor: Any) -> bool:
    # Imported here, not at the top: every app imports this module, and only
    # those with Mattermost on should load its client (mattermostdriver).
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
