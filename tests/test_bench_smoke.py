"""The benchmark runs: ``python bench/run.py --quick`` yields a result of every kind.

Speed is not judged here (that is what the benchmark itself is for); this only
checks that the one documented command still works from end to end, with real
gunicorn workers on 127.0.0.1, for every endpoint kind and every variant,
including a second copy of the package measured side by side (``--candidate``),
and that it writes the docs page's tables.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/ is not part of the installed package
    sys.path.insert(0, str(ROOT))

from bench.apps import FAST_KINDS, PARTS, PROFILER_MODES, SLOW_KINDS  # noqa: E402

#: The candidate of the smoke run: this tree's own src/, under another name.
TWIN = "twin:sampling"
LABELS = ["bare", *PROFILER_MODES, TWIN]
PAGE = """Performance
===========

.. bench-table-begin fast
old
.. bench-table-end fast

.. bench-table-begin verdict
.. bench-table-end verdict
"""


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("bench")
    page = out / "page.rst"
    page.write_text(PAGE)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--quick",
            "--candidate",
            f"twin={ROOT}",
            "--out",
            str(out),
            "--rst",
            str(page),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = sorted(out.glob("results-*.json"))
    assert len(files) == 1
    return json.loads(files[0].read_text()), proc.stdout, page.read_text()


@pytest.mark.server
def test_in_process_results_for_every_kind_and_variant(quick_run: tuple[dict, str, str]) -> None:
    results, _, _ = quick_run
    assert [v["label"] for v in results["variants"]] == LABELS
    (first_round,) = results["inprocess"]
    assert set(first_round) == set(LABELS)
    for label in LABELS:
        for kind in FAST_KINDS:
            run = first_round[label][kind]
            assert run["n"] > 0 and run["median"] > 0 and run["p99"] >= run["median"]
    for kind in FAST_KINDS:
        for label in LABELS[1:]:
            assert "median_ratio" in results["summary"]["fast"]["inprocess"][kind][label]


@pytest.mark.server
@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_gunicorn_results_for_every_kind_and_variant(
    quick_run: tuple[dict, str, str], worker: str
) -> None:
    results, _, _ = quick_run
    (first_round,) = results["gunicorn"][worker]
    assert set(first_round) == set(LABELS)
    for label in LABELS:
        for kind in FAST_KINDS:
            run = first_round[label][kind]
            assert run["n"] > 0 and run["errors"] == 0 and run["throughput"] > 0
        for kind in SLOW_KINDS:
            assert first_round[label][kind]["status"] == 200
    summary = results["summary"]["fast"][worker]
    assert set(summary) == set(FAST_KINDS)


@pytest.mark.server
def test_slow_requests_are_profiled_and_compared_with_the_truth(
    quick_run: tuple[dict, str, str],
) -> None:
    results, _, _ = quick_run
    rounds = {"inprocess": results["slow"], **results["gunicorn"]}
    for context, runs in rounds.items():
        for per in runs:
            for label, by_kind in per.items():
                for kind in SLOW_KINDS.keys() & by_kind.keys():
                    if label != "bare":  # every slow request made its event
                        analysis = by_kind[kind]["analysis"]
                        assert analysis, f"no event: {context}, {label}, {kind}"
                        assert analysis["profile_note"], (context, label, kind)
        slow = results["summary"]["slow"][context]
        for kind, names in PARTS.items():
            assert slow[kind]["pyinstrument"]["profiles"] == 1, (context, kind)
            for label in ("sampling", "pyinstrument", TWIN):
                entry = slow[kind][label]
                if entry["profiles"]:
                    assert set(entry["shares"]) == set(names)
                    assert sum(s["profile"] for s in entry["shares"].values()) > 0.5
                    assert entry["hot_frames"]
            # No profiler, no profile: the event still arrives, without a call tree.
            assert slow[kind]["none"]["profiles"] == 0
        # The sampler's profiles are there. Not necessarily for every request: a
        # CPU-bound request holds the GIL, so the sampler's samples can come late and
        # a short request of a quick run may end with fewer than two; it then alerts
        # without a call tree, saying so.
        for label in ("sampling", TWIN):
            assert sum(slow[kind][label]["profiles"] for kind in PARTS) >= 1, (context, label)


@pytest.mark.server
def test_instructions_memory_stores_and_the_rest(quick_run: tuple[dict, str, str]) -> None:
    results, stdout, _ = quick_run
    if shutil.which("valgrind"):
        counts = results["instructions"]["per_request"]
        assert set(counts) == {"bare", "sampling", TWIN}
        assert all(c["timer"] > 0 for c in counts.values())
        # The timer around an app does more than that app alone.
        assert counts["sampling"]["timer"] > counts["bare"]["timer"]
    else:
        assert results["instructions"] == {"skipped": "valgrind is not installed"}
    for scenario in results["memory"].values():
        assert [c["requests"] for c in scenario["checkpoints"]] == [200, 600]
        statuses = scenario["statuses"]
        assert sum(statuses.values()) == 600 and statuses["200"] > 0 and statuses["404"] > 0
    monitored = results["memory"]["sampling, every request slow"]["checkpoints"][-1]
    assert monitored["state"]["stats"]["slow"] == 600
    stores = results["stores"]
    for name in ("memory", "sqlite"):
        assert stores[name]["claims"] > 0 and stores[name]["new_median"] > 0
    assert "claims" in stores["redis"] or "skipped" in stores["redis"]
    assert set(results["summary"]["threads"]) == {"sqlite", "json"}
    assert set(results["wrapper"]) == set(LABELS[1:])
    assert set(results["summary"]["sampler"]["main"]) == {"sampling", TWIN}
    for title in ("Fast requests", "The slow request", "Profile accuracy", "Memory", "Verdict"):
        assert f"### {title}" in stdout
    assert results["machine"]["python"] and results["machine"]["cpu"]
    assert results["candidates"]["twin"]["source"] == str(ROOT)


@pytest.mark.server
def test_the_page_gets_each_table_between_its_comments(quick_run: tuple[dict, str, str]) -> None:
    _, _, page = quick_run
    assert page.startswith("Performance\n===========\n")
    assert "\nold\n" not in page
    fast = page.split(".. bench-table-begin fast\n", 1)[1].split(".. bench-table-end fast")[0]
    assert fast.lstrip().startswith(".. list-table::")
    assert "twin (sampling) median" in fast
    for kind in ("trivial JSON", "gunicorn gthread"):
        assert kind in fast
    verdict = page.split(".. bench-table-begin verdict\n", 1)[1]
    assert "median ≤ 1 % slower" in verdict.split(".. bench-table-end verdict")[0]
