"""The Flask-PerfAlert benchmark: ``python bench/run.py`` (``--quick`` for a smoke run).

Measures the same app (``bench/apps.py``) bare and monitored in each profiler
mode, and, with ``--candidate NAME=REV``, monitored by another revision of the
package in the same run (``bench/candidates.py``). Every variant runs in
processes of its own, with short bursts alternated between live processes
(the order rotates from burst to burst):

* fast requests in-process: through the WSGI callable, per-request latency;
* fast requests under gunicorn (sync and gthread, one worker) on 127.0.0.1
  under a closed-loop load generator (``wrk``, or a Python client where
  ``wrk`` is missing);
* the slow request: monitored and bare in turn within one process (the first
  slow request of the process a monitored one): its duration, and the
  profile's shares of three part functions against the true shares measured
  in the view itself; under gunicorn too;
* instructions per request under callgrind (where valgrind is installed);
* memory with 100k distinct URLs over thousands of endpoints;
* the cost of one claim in each alert store;
* the cost of a process having started one thread, the request timer alone
  around a trivial WSGI app, the sampler on a CPU-bound call.

Writes ``bench-results/results-<time>.json`` and prints the tables;
``--rst FILE`` writes the page's tables as reStructuredText
(``python bench/run.py --candidate signal=ec729d1 --rst docs/performance.rst``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from bench import _instructions, _load, candidates, report, report_detail, summary  # noqa: E402
from bench._runner import Runner  # noqa: E402
from bench.apps import PROFILER_MODES, TARGET_SECONDS  # noqa: E402

SECTIONS = (
    "inprocess",
    "gunicorn",
    "slow",
    "instructions",
    "threads",
    "wrapper",
    "sampler",
    "memory",
    "stores",
)


@dataclass
class Config:
    quick: bool = False
    #: In-process: sets of fresh processes (one per variant), and bursts per kind in each.
    rounds: int = 5
    inprocess_bursts: int = 4
    inprocess_seconds: float = 0.15
    warmup_seconds: float = 0.15
    #: gunicorn: sets of servers (one per variant, fresh processes), and rounds of one
    #: load burst per kind and variant on each set; the slow views once per set.
    gunicorn_sets: int = 3
    gunicorn_rounds: int = 3
    gunicorn_seconds: float = 1.0
    #: Processes per (slow view, variant), and slow requests of each kind (monitored,
    #: bare) in each.
    slow_rounds: int = 3
    slow_pairs: int = 3
    slow_target: float = TARGET_SECONDS
    threshold: float | None = None
    memory_requests: int = 100_000
    memory_checkpoints: tuple[int, ...] = (10_000, 50_000, 100_000)
    memory_endpoints: int = 12_000
    thread_rounds: int = 7
    wrapper_blocks: int = 20
    wrapper_block_size: int = 5_000
    sampler_rounds: int = 5
    #: Under callgrind: kinds ("timer": the request timer around a trivial app),
    #: requests counted per kind, after a warm-up of that many.
    instruction_kinds: tuple[str, ...] = (
        "timer",
        "json",
        "json300",
        "template300",
        "recursive",
        "sqlite",
        "io5ms",
    )
    instruction_requests: int = 300
    instruction_warmup: int = 50
    store_claims: int = 2_000
    store_warmup: int = 100
    client: str = "auto"
    #: Candidate name -> its profiler modes measured (``--candidate``).
    candidate_modes: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def quick_config(cls) -> Config:
        return cls(
            quick=True,
            rounds=1,
            inprocess_bursts=1,
            inprocess_seconds=0.03,
            warmup_seconds=0.01,
            gunicorn_sets=1,
            gunicorn_rounds=1,
            gunicorn_seconds=0.1,
            slow_rounds=1,
            slow_pairs=1,
            slow_target=0.15,
            # A third of the slow views' target: their work is calibrated on short
            # probes, and a view calibrated for 0.15 s ran in 0.09 s once, under a
            # threshold of 0.1 s (not slow, so no event to check).
            threshold=0.05,
            memory_requests=600,
            memory_checkpoints=(200, 600),
            memory_endpoints=50,
            thread_rounds=1,
            wrapper_blocks=2,
            wrapper_block_size=200,
            sampler_rounds=1,
            instruction_kinds=("timer",),
            instruction_requests=20,
            instruction_warmup=5,
            store_claims=50,
            store_warmup=5,
            client="python",
        )


# -- the machine -------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    from importlib.metadata import version

    def ver(name: str) -> str:
        try:
            return version(name)
        except Exception:
            return "not installed"

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk = "not installed"
    if _load.wrk_available():
        proc = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
        wrk = (proc.stdout + proc.stderr).split("Copyright")[0].strip()
    valgrind = "not installed"
    if _instructions.available():
        proc = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, timeout=10)
        valgrind = proc.stdout.strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "flask": ver("flask"),
        "werkzeug": ver("werkzeug"),
        "jinja2": ver("jinja2"),
        "pyinstrument": ver("pyinstrument"),
        "gunicorn": ver("gunicorn"),
        "flask_perfalert": ver("flask-perfalert"),
        "wrk": wrk,
        "valgrind": valgrind,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "commit": commit,
        "loadavg_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny run (smoke test)")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help="comma-separated sections to run"
    )
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=REV",
        help="also measure the package of git revision REV (or of folder REV) as NAME; repeatable",
    )
    parser.add_argument(
        "--candidate-modes",
        default="sampling",
        help="profiler modes measured for each candidate (comma-separated)",
    )
    parser.add_argument("--rounds", type=int, help="in-process rounds")
    parser.add_argument("--gunicorn-sets", type=int, help="sets of gunicorn servers")
    parser.add_argument("--gunicorn-rounds", type=int, help="rounds per set of servers")
    parser.add_argument("--slow-rounds", type=int)
    parser.add_argument("--client", choices=["auto", "wrk", "python"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results", help="results folder")
    parser.add_argument(
        "--rst",
        type=Path,
        help="also write the tables as reStructuredText; into a page that has the "
        "'.. bench-tables-begin' and '.. bench-tables-end' comments, between them "
        "(python bench/run.py --rst docs/performance.rst)",
    )
    parser.add_argument(
        "--from-json", type=Path, help="print (and --rst) the tables of an earlier results file"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        results["summary"] = summary.summarise(results)
        print(report.markdown(results, report_detail.detail_tables(results)))
        if args.rst:
            report.write_rst(args.rst, results)
        return 0

    config = Config.quick_config() if args.quick else Config()
    for name in ("rounds", "gunicorn_sets", "gunicorn_rounds", "slow_rounds", "client"):
        if getattr(args, name):
            setattr(config, name, getattr(args, name))
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    modes = [m.strip() for m in args.candidate_modes.split(",") if m.strip()]
    if not modes or set(modes) - set(PROFILER_MODES):
        parser.error(f"--candidate-modes: one or more of {', '.join(PROFILER_MODES)}")

    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="perfalert-bench-"))
    began = time.time()
    try:
        chosen = {candidates.THIS_TREE: candidates.this_tree()}
        for spec in args.candidate:
            candidate = candidates.prepare(spec, workdir / "candidates")
            if candidate.name in chosen:
                parser.error(f"--candidate {spec}: the name {candidate.name!r} is taken")
            chosen[candidate.name] = candidate
            config.candidate_modes[candidate.name] = modes
        variants = candidates.variants(PROFILER_MODES, config.candidate_modes)
        results: dict[str, Any] = {
            "machine": machine_info(),
            "config": asdict(config),
            "candidates": {
                name: {"source": c.source, "commit": c.commit} for name, c in chosen.items()
            },
            "variants": [asdict(v) for v in variants],
        }
        with open(args.out / "bench.log", "w") as log:
            runner = Runner(config, workdir, log, chosen, variants)
            results["config"]["client_used"] = runner.client if "gunicorn" in sections else None
            steps = {
                "inprocess": runner.run_inprocess,
                "gunicorn": runner.run_gunicorn,
                "slow": runner.run_slow,
                "instructions": runner.run_instructions,
                "threads": runner.run_threads,
                "wrapper": runner.run_wrapper,
                "sampler": runner.run_sampler,
                "memory": runner.run_memory,
                "stores": runner.run_stores,
            }
            results["timings"] = {}
            try:
                if {"gunicorn", "slow", "sampler"} & set(sections):
                    results["calibration"] = runner.calibrate()
                for name, step in steps.items():
                    if name in sections:
                        t0 = time.time()
                        results[name] = step()
                        results["timings"][name] = time.time() - t0
            finally:
                runner.delay_server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["load_during_run"] = runner.loads
    results["seconds"] = time.time() - began
    results["summary"] = summary.summarise(results)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = args.out / f"results-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    tables = report.markdown(results, report_detail.detail_tables(results))
    (args.out / f"tables-{stamp}.md").write_text(tables + "\n")
    print(tables)
    print(f"\nResults: {path} ({results['seconds']:.0f} s)")
    if args.rst:
        report.write_rst(args.rst, results)
        print(f"RST tables: {args.rst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
