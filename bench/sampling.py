"""The sampler's cost and accuracy, side by side in one run: ``python bench/sampling.py``.

Three measurements, each against its baseline in the same run:

* **one sample**: the GIL the sampler holds to take one sample of a thread
  30 frames deep, parked or busy, with each stack reader (compiled and pure
  Python, each in a process of its own), in service (after a sleep of the
  sampling interval) and warm (back to back), next to the cheapest walk of the
  same stack Python offers (``bench/_sample_cost.py``);
* **the slow request**, CPU-bound and I/O-bound (``bench/apps.py``: three part
  functions each, calibrated to about 1.1 s split 50/29/21 %), monitored on the
  defaults and bare in interleaved pairs within one process, the request on the
  main thread (a sync worker) and on another thread (a gthread worker): wall
  time to the response and the process's CPU time;
* **shares against the truth**: each monitored request's profile share of the
  three parts against the share the view measured itself.

``--pairs`` (default 11) sets the pairs per (kind, thread); ``--quick`` is a smoke
run. Prints the tables and writes ``bench-results/sampling-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from bench._runner import Runner  # noqa: E402
from bench.apps import PARTS, SLOW_KINDS, TARGET_SECONDS  # noqa: E402
from bench.candidates import THIS_TREE, this_tree  # noqa: E402

READERS = {"compiled": "0", "pure Python": "1"}
WHERE = ("main", "thread")


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, v, v
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def sample_cost(runner: Runner, samples: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    saved = dict(runner.env)
    try:
        for name, pure in READERS.items():
            runner.env["FLASK_PERFALERT_PURE_PYTHON"] = pure
            runner.say(f"one sample: {name} reader")
            out[name] = runner.child({"task": "sample_cost", "samples": samples, "depth": 30})
    finally:
        runner.env = saved
    return out


def slow_pairs(runner: Runner, pairs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for where in WHERE:
        for kind in SLOW_KINDS:
            runner.say(f"slow requests: {kind} on the {where} thread, {pairs} pairs")
            out[f"{kind}/{where}"] = runner.child(
                {"task": "slow", "mode": "sampling", "kind": kind, "pairs": pairs, "where": where},
                timeout=60 + pairs * 2 * TARGET_SECONDS * 4,
            )
    return out


def summarise(cost: dict[str, Any], slow: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"sample": {}, "slow": {}, "shares": {}}
    for reader, result in cost.items():
        for scenario in ("parked", "busy"):
            r = result[scenario]
            summary["sample"][f"{reader}, {scenario}"] = {
                "in service (us)": r["tick_us_median"],
                "in service p90 (us)": r["tick_us_p90"],
                "bare f_back walk (us)": r["walk_us_median"],
                "warm (us)": r["warm_tick_us_median"],
                "frames": r["frames_in_stack"],
            }
    for key, result in slow.items():
        kind = key.split("/")[0]
        pairs = list(zip(result["monitored"], result["bare"], strict=True))
        wall = [m["response_seconds"] / b["response_seconds"] - 1 for m, b in pairs]
        cpu = [m["cpu_seconds"] / b["cpu_seconds"] - 1 for m, b in pairs]
        summary["slow"][key] = {
            "pairs": len(pairs),
            "bare wall (s)": statistics.median(b["response_seconds"] for _, b in pairs),
            "wall added %": [100 * q for q in quartiles(wall)],
            "CPU added %": [100 * q for q in quartiles(cpu)],
        }
        errors: list[float] = []
        per_part: dict[str, list[tuple[float, float]]] = {name: [] for name in PARTS[kind]}
        with_tree = 0
        for monitored, _ in pairs:
            analysis = monitored.get("analysis") or {}
            if analysis.get("sample_count"):
                with_tree += 1
            parts = analysis.get("parts") or {}
            if len(parts) != 3:
                continue
            errors.append(
                max(abs(p["profile_share"] - p["true_share"]) * 100 for p in parts.values())
            )
            for name, p in parts.items():
                per_part[name].append((p["true_share"], p["profile_share"]))
        summary["shares"][key] = {
            "with a call tree": f"{with_tree}/{len(pairs)}",
            "worst of the top 3, points (median)": statistics.median(errors) if errors else None,
            "worst of the top 3, points (max)": max(errors) if errors else None,
            "parts (true %, profile %)": {
                name: (
                    100 * statistics.median(t for t, _ in values),
                    100 * statistics.median(p for _, p in values),
                )
                for name, values in per_part.items()
                if values
            },
        }
    return summary


def show(summary: dict[str, Any]) -> None:
    print("\nOne sample of a 30-frame stack (GIL held, median microseconds)")
    print(f"  {'reader, thread':<24} {'in service':>10} {'p90':>7} {'bare walk':>10} {'warm':>7}")
    for name, r in summary["sample"].items():
        print(
            f"  {name:<24} {r['in service (us)']:>10.1f} {r['in service p90 (us)']:>7.1f} "
            f"{r['bare f_back walk (us)']:>10.1f} {r['warm (us)']:>7.1f}"
        )
    print("\nThe slow request, monitored (defaults) against bare: added %, [Q1, median, Q3]")
    for key, r in summary["slow"].items():
        w, c = r["wall added %"], r["CPU added %"]
        print(
            f"  {key:<18} {r['pairs']:>3} pairs, bare {r['bare wall (s)']:.2f} s: "
            f"wall [{w[0]:+.2f}, {w[1]:+.2f}, {w[2]:+.2f}]  "
            f"CPU [{c[0]:+.2f}, {c[1]:+.2f}, {c[2]:+.2f}]"
        )
    print("\nProfile shares of the three parts against the truth")
    for key, r in summary["shares"].items():
        median = r["worst of the top 3, points (median)"]
        worst = r["worst of the top 3, points (max)"]
        parts = ", ".join(
            f"{n} {t:.1f}/{p:.1f}" for n, (t, p) in r["parts (true %, profile %)"].items()
        )
        print(
            f"  {key:<18} trees {r['with a call tree']}, worst part off by "
            f"{median if median is not None else float('nan'):.2f} points (median), "
            f"{worst if worst is not None else float('nan'):.2f} (max); true/profile %: {parts}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pairs", type=int, default=11)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="a smoke run (numbers mean little)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.samples = 1, 50
    # Quick: short slow views, so a threshold below them; otherwise the defaults.
    config = SimpleNamespace(
        quick=args.quick,
        slow_target=0.15 if args.quick else TARGET_SECONDS,
        threshold=0.05 if args.quick else None,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="perfalert-bench-sampling-"))
    with open(args.out / "sampling.log", "w") as log:
        runner = Runner(config, workdir, log, {THIS_TREE: this_tree()}, [])
        try:
            calibration = runner.calibrate()
            cost = sample_cost(runner, args.samples)
            slow = slow_pairs(runner, args.pairs)
        finally:
            runner.delay_server.stop()
    summary = summarise(cost, slow)
    show(summary)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    results = {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load": runner.loads,
        "calibration": calibration,
        "sample_cost": cost,
        "slow": slow,
        "summary": summary,
    }
    path = args.out / f"sampling-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"\n{path}")


if __name__ == "__main__":
    main()
