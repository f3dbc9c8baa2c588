"""The ``flask perfalert`` command group."""

from __future__ import annotations

import json
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext


def _extension() -> Any:
    ext = current_app.extensions.get("perfalert")
    if ext is None:
        raise click.ClickException("Flask-PerfAlert is not set up on this app (PerfAlert(app)).")
    return ext


@click.group("perfalert")
def perfalert_cli() -> None:
    """Flask-PerfAlert: settings, reports, statistics and a delivery check."""


@perfalert_cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@with_appcontext
def config_command(as_json: bool) -> None:
    """Print the effective settings (secrets masked) and where each came from."""
    monitor = _extension()._monitor()
    values = monitor.settings.masked()
    sources = {f"PERFALERT_{name.upper()}": src for name, src in monitor.sources.items()}
    if as_json:
        click.echo(
            json.dumps({k: {"value": v, "source": sources[k]} for k, v in values.items()}, indent=2)
        )
        return
    width = max(len(k) for k in values)
    for key, value in values.items():
        click.echo(f"{key:<{width}}  {json.dumps(value, default=str):<40}  ({sources[key]})")
