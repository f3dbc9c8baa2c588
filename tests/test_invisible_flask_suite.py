"""Invisible to the app, proven on tests no one here wrote.

Flask's own test suite and the tests of the Flask tutorial app (flaskr), both
from the sdist of the installed Flask (see ``flask_sdist.py``), each run in its
own pytest process twice: without Flask-PerfAlert, and with ``PerfAlert(app)``
added to every app their app fixtures make, every request slow (threshold
1e-6 s), reports in a temporary folder. The plugin that does this
(``their_tests/perfalert_plugin.py``) is loaded with ``-p``; their files are
not touched. Each pair runs with responses closed (the test client reads and
closes every response, as a WSGI server does) and not closed (a plain
``client.get()``, as most suites are written).

The verdicts: no test fails with the extension that passes without it; every
Flask signal (the app context ones, whose ``appcontext_tearing_down`` marks
each run of the app's ``teardown_appcontext`` functions) is sent exactly as
often in every test; the extension logged no error and did measure the
requests (an event for slow requests), so the proof is not an empty one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask_sdist import extract, flask_sdist

PLUGIN_DIR = Path(__file__).resolve().parent / "their_tests"
RESPONSES = {"closed": "closed", "not-closed": "open"}


@dataclass(frozen=True)
class Suite:
    name: str
    #: Where their pytest runs, inside the unpacked sdist.
    folder: str
    #: App fixtures that must have been given the extension (name: at least so many).
    fixtures: dict[str, int]


FLASK = Suite("flask", ".", {"app": 100, "async_app": 1})
FLASKR = Suite("flaskr", "examples/tutorial", {"app": 10})


@dataclass
class Run:
    results: dict[str, Any]
    output: str
    report_dir: Path

    @property
    def outcomes(self) -> dict[str, str]:
        outcomes: dict[str, str] = self.results["outcomes"]
        return outcomes


@pytest.fixture(scope="session")
def flask_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract(flask_sdist(), tmp_path_factory.mktemp("flask-sdist"))


@pytest.fixture(scope="session")
def suite_runs(
    flask_source: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Suite, str, bool], Run]:
    """Runs a suite once per (suite, responses, with extension) in the session."""
    runs: dict[tuple[str, str, bool], Run] = {}

    def run(suite: Suite, responses: str, perfalert: bool) -> Run:
        key = (suite.name, responses, perfalert)
        if key not in runs:
            name = f"{suite.name}-{responses}-{'with' if perfalert else 'without'}"
            runs[key] = _run_suite(
                flask_source / suite.folder, tmp_path_factory.mktemp(name), responses, perfalert
            )
        return runs[key]

    return run


def _run_suite(folder: Path, tmp: Path, responses: str, perfalert: bool) -> Run:
    results = tmp / "results.json"
    report_dir = tmp / "reports"
    # Neither our PERFALERT_* settings nor our pytest options reach their run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERFALERT_", "PYTEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGIN_DIR), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "perfalert_plugin",
        f"--perfalert={'on' if perfalert else 'off'}",
        f"--perfalert-responses={RESPONSES[responses]}",
        f"--perfalert-report-dir={report_dir}",
        f"--perfalert-results={results}",
        f"--basetemp={tmp / 'basetemp'}",
        "tests",
    ]
    proc = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = proc.stdout + proc.stderr
    if not results.exists():
        # A crash prints which thread died first (faulthandler, on stderr): keep that part.
        pytest.fail(
            f"their pytest run wrote no results ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[:6000]}"
        )
    return Run(json.loads(results.read_text()), output, report_dir)


def _listing(lines: list[str], limit: int = 40) -> str:
    shown = lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])
    return "\n  " + "\n  ".join(shown)


def _excerpt(failure: str, lines: int = 6) -> str:
    """The lines of a pytest failure that say what went wrong (``E ...``), shortened."""
    text = failure.splitlines()
    errors = [line for line in text if line.startswith("E ")] or text[-lines:]
    return "\n      ".join(line[:200] for line in errors[:lines])


def newly_failing(without: Run, with_: Run) -> list[str]:
    """Each test that passed without the extension and does not pass with it."""
    found = []
    for test, outcome in sorted(without.outcomes.items()):
        if outcome != "passed":
            continue
        now = with_.outcomes.get(test, "not run")
        if now != "passed":
            failure = with_.results["failures"].get(test, "")
            found.append(f"{test}: {now}\n      {_excerpt(failure)}")
    return found


def signal_count_changes(without: Run, with_: Run) -> list[str]:
    """Each test, passed in both runs, in which a Flask signal was sent more or less often."""
    found = []
    for test, outcome in sorted(without.outcomes.items()):
        if outcome != "passed" or with_.outcomes.get(test) != "passed":
            continue
        before = without.results["signals"].get(test, {})
        after = with_.results["signals"].get(test, {})
        changed = [
            f"{name} {before.get(name, 0)} -> {after.get(name, 0)}"
            for name in sorted(set(before) | set(after))
            if before.get(name, 0) != after.get(name, 0)
        ]
        if changed:
            found.append(f"{test}: {', '.join(changed)}")
    return found


@dataclass
class Comparison:
    """One suite run without and with the extension, responses closed or not."""

    suite: Suite
    responses: str
    without: Run
    with_: Run


@pytest.fixture(
    params=[(suite, responses) for suite in (FLASK, FLASKR) for responses in RESPONSES],
    ids=lambda param: f"{param[0].name}-{param[1]}",
)
def comparison(
    request: pytest.FixtureRequest, suite_runs: Callable[[Suite, str, bool], Run]
) -> Comparison:
    suite, responses = request.param
    return Comparison(
        suite, responses, suite_runs(suite, responses, False), suite_runs(suite, responses, True)
    )


def test_their_tests_pass_with_perfalert(comparison: Comparison) -> None:
    suite, without, with_ = comparison.suite, comparison.without, comparison.with_
    assert len(without.outcomes) > 2 * suite.fixtures["app"], without.output[-3000:]
    for fixture, least in suite.fixtures.items():
        got = with_.results["apps_by_fixture"].get(fixture, 0)
        assert got >= least, f"PerfAlert was added to {got} apps of the {fixture!r} fixture"
    failing = newly_failing(without, with_)
    assert not failing, (
        f"{len(failing)} test(s) of {suite.name} {with_.results['flask_version']} fail with "
        f"PerfAlert(app) and pass without it (responses {comparison.responses}):"
        + _listing(failing, len(failing))
    )


def test_their_teardowns_and_signals_run_as_often(comparison: Comparison) -> None:
    without, with_ = comparison.without, comparison.with_
    assert sum(sum(c.values()) for c in without.results["signals"].values()) > 0
    changes = signal_count_changes(without, with_)
    assert not changes, (
        f"Flask signals sent a different number of times with PerfAlert(app) in {len(changes)} "
        f"test(s) of {comparison.suite.name} (responses {comparison.responses}):"
        + _listing(changes)
    )


def test_their_requests_are_measured_without_internal_errors(comparison: Comparison) -> None:
    with_ = comparison.with_
    errors = [
        f"{test}: {messages[0].splitlines()[0]}"
        for test, messages in sorted(with_.results["internal_errors"].items())
    ]
    assert not errors, "Flask-PerfAlert logged errors:" + _listing(errors)
    # Not every request Flask sends request_started for goes through the WSGI app
    # (some of their tests dispatch inside a test_request_context), but most do.
    started = sum(c.get("request_started", 0) for c in with_.results["signals"].values())
    assert with_.results["events"] >= started / 4, (
        f"{with_.results['events']} perf_slow_request events in {comparison.suite.name}'s run "
        f"(responses {comparison.responses}) for {started} requests, though every request was slow"
    )
    assert list(with_.report_dir.glob("perfalert-*.html")), "no report written"
