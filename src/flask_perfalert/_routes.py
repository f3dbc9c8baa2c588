"""Settings that name endpoints, checked against the app's routes once they are known.

``PERFALERT_ENDPOINT_THRESHOLDS`` takes endpoint names, URL rules (``"/sleepy"``,
``"/user/<int:id>"``) and watched functions' names. Routes are often added
after ``init_app`` (an app factory registering blueprints), so the rules are
resolved to endpoints when the routes are complete: at start-up with what is
known then, and again once the app serves (see :func:`resolve_thresholds`).
A key that matches nothing would silently never apply: it is reported.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_perfalert")

#: ``<int:id>`` and ``<id>`` name the same part of a rule.
_CONVERTER = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")
#: Flask's own endpoint for static files, there only when the app has a static
#: folder: excluding it is harmless either way.
_STATIC = "static"


def _plain_rule(rule: str) -> str:
    return _CONVERTER.sub(r"<\1>", rule)


@dataclass(frozen=True)
class ResolvedThresholds:
    """Per-endpoint thresholds with URL rules resolved to endpoints."""

    #: Endpoint names and watched functions' names -> seconds.
    by_name: dict[str, float]
    #: Keys that match no endpoint, URL rule or watched function.
    unmatched: list[str]


def resolve_thresholds(
    app: Flask, thresholds: Mapping[str, float], watched: Collection[str] = ()
) -> ResolvedThresholds:
    """Thresholds by endpoint and function name, from keys that may be URL rules.

    A rule applies to every endpoint registered under it (one per method, say);
    a key naming an endpoint beats a rule key for that endpoint.
    """
    rules: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        rules.setdefault(rule.rule, set()).add(rule.endpoint)
        rules.setdefault(_plain_rule(rule.rule), set()).add(rule.endpoint)
    endpoints = set(app.view_functions)
    by_name: dict[str, float] = {}
    unmatched: list[str] = []
    for key, seconds in thresholds.items():
        if key.startswith("/"):
            matched = rules.get(key) or rules.get(_plain_rule(key))
            if not matched:
                unmatched.append(key)
            for endpoint in sorted(matched or ()):
                by_name[endpoint] = seconds
    for key, seconds in thresholds.items():
        if not key.startswith("/"):
            by_name[key] = seconds
            if key not in endpoints and key not in watched:
                unmatched.append(key)
    return ResolvedThresholds(by_name, unmatched)


def unmatched_settings(app: Flask, settings: Any, watched: Collection[str] = ()) -> list[str]:
    """One message per ``PERFALERT_*`` entry that names an endpoint the app does not have.

    Call it once the routes are complete (not at ``init_app`` in an app
    factory that registers blueprints afterwards). ``watched`` are the names
    of the functions watched so far.
    """
    names = sorted(app.view_functions)
    rules = sorted({rule.rule for rule in app.url_map.iter_rules()})
    resolved = resolve_thresholds(app, settings.endpoint_thresholds, watched)
    messages = []
    for key in resolved.unmatched:
        candidates = rules if key.startswith("/") else [*names, *watched]
        messages.append(
            f"PERFALERT_ENDPOINT_THRESHOLDS[{key!r}] matches no endpoint, URL rule or "
            f"watched function of app {app.name!r}, so it never applies{_hint(key, candidates)}"
        )
    for entry in settings.exclude:
        if not entry.startswith("/") and entry != _STATIC and entry not in app.view_functions:
            messages.append(
                f"PERFALERT_EXCLUDE entry {entry!r} matches no endpoint of app {app.name!r} "
                f"(a URL path pattern starts with /){_hint(entry, names)}"
            )
    return messages


def warn_unmatched_settings(app: Flask, settings: Any, watched: Collection[str] = ()) -> None:
    """Log :func:`unmatched_settings` as warnings (once the routes are complete)."""
    for message in unmatched_settings(app, settings, watched):
        logger.warning("%s", message)


def _hint(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else "."
