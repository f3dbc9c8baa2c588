"""The benchmark runs: ``python bench/run.py --quick`` yields a result of every kind.

Speed is not judged here (that is what the benchmark itself is for); this only
checks that the one documented command still works from end to end, with real
gunicorn workers on 127.0.0.1, and reports every endpoint kind in every mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not part of the installed package
    sys.path.insert(0, str(ROOT))

from bench.apps import FAST_KINDS, MODES, PARTS, PROFILER_MODES, SLOW_KINDS  # noqa: E402


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("bench")
    rst = out / "tables.rst"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--out",
            str(out),
            "--rst",
            str(rst),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(out.glob("results-*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text()), proc.stdout, rst.read_text()


@pytest.mark.server
def test_in_process_results_for_every_kind_and_mode(quick_run: tuple[dict, str, str]) -> None:
    results, _, _ = quick_run
    (first_round,) = results["inprocess"]
    assert set(first_round) == set(MODES)
    for mode in MODES:
        for kind in FAST_KINDS:
            run = first_round[mode][kind]
            assert run["n"] > 0 and run["median"] > 0 and run["p99"] >= run["median"]
    for kind in FAST_KINDS:
        for mode in PROFILER_MODES:
            assert "median_ratio" in results["summary"]["fast"]["inprocess"][kind][mode]


@pytest.mark.server
@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_gunicorn_results_for_every_kind_and_mode(
    quick_run: tuple[dict, str, str], worker: str
) -> None:
    results, _, _ = quick_run
    (first_round,) = results["gunicorn"][worker]
    assert set(first_round) == set(MODES)
    for mode in MODES:
        for kind in FAST_KINDS:
            run = first_round[mode][kind]
            assert run["n"] > 0 and run["errors"] == 0 and run["throughput"] > 0
        for kind in SLOW_KINDS:
            assert first_round[mode][kind]["status"] == 200
    summary = results["summary"]["fast"][worker]
    assert set(summary) == set(FAST_KINDS)


@pytest.mark.server
def test_slow_requests_are_profiled_and_compared_with_the_truth(
    quick_run: tuple[dict, str, str],
) -> None:
    results, _, _ = quick_run
    for context in ("inprocess", "sync", "gthread"):
        slow = results["summary"]["slow"][context]
        for kind, names in PARTS.items():
            for mode in ("sampling", "pyinstrument"):
                entry = slow[kind][mode]
                assert entry["profiles"] == 1, (context, kind, mode)
                assert set(entry["shares"]) == set(names)
                assert sum(s["profile"] for s in entry["shares"].values()) > 0.5
                assert entry["hot_frames"]
            # No profiler, no profile: the event still arrives, without a call tree.
            assert slow[kind]["none"]["profiles"] == 0


@pytest.mark.server
def test_memory_threads_timer_and_tables(quick_run: tuple[dict, str, str]) -> None:
    results, stdout, rst = quick_run
    for scenario in results["memory"].values():
        assert [c["requests"] for c in scenario["checkpoints"]] == [200, 600]
        statuses = scenario["statuses"]
        assert sum(statuses.values()) == 600 and statuses["200"] > 0 and statuses["404"] > 0
    monitored = results["memory"]["sampling, every request slow"]["checkpoints"][-1]
    assert monitored["state"]["stats"]["slow"] == 600
    assert set(results["summary"]["threads"]) == {"sqlite", "json"}
    assert set(results["wrapper"]) == set(PROFILER_MODES)
    for title in ("In-process", "gunicorn sync", "gunicorn gthread", "The slow request", "Memory"):
        assert title in stdout
        assert title in rst
    assert ".. list-table::" in rst
    assert results["machine"]["python"] and results["machine"]["cpu"]
