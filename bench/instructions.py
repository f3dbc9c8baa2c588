"""What every request pays, in instructions: ``python bench/instructions.py``.

Each kind of endpoint is requested bare and with the extension on its defaults,
each in a process of its own under ``valgrind --tool=callgrind
--separate-threads=yes``: the request thread is counted alone, from a dump
after the warm-up (start-up, imports and the first requests left out, the
app's heap collected) to a dump after the measured requests; the threshold is
far away, as for any fast request. Instructions do not depend on the
machine's load: two runs of the same code give the same counts to a few
instructions per request, so a 1 % effect is plain. What does move them is
the heap's layout (see :func:`measure`): each figure is the median over
several layouts.

The work on the extension's own threads (the sampler's idle polls, the
counters' flushes, the usual-latency book) follows the wall clock, which
callgrind slows fifty-fold, so it is measured natively instead
(``--threads``): the CPU time of those threads per second of wall time while
the app serves about 1,000 requests a second.

``--max-added 1.5`` exits with status 1 when any kind's added instructions
exceed 1.5 % (the CI test uses it). Prints a table; ``--json FILE`` writes it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from bench import _instructions  # noqa: E402
from bench.apps import FAST_DESCRIPTIONS  # noqa: E402
from bench.candidates import env_for, this_tree  # noqa: E402

#: The kinds measured, and what each stands for.
KINDS = ("json", "json300", "template300", "sqlite", "streamed")
DESCRIPTIONS = {**FAST_DESCRIPTIONS, _instructions.TIMER_KIND: "the request timer alone"}


def environment() -> dict[str, str]:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PERFALERT_")}
    folder = tempfile.mkdtemp(prefix="perfalert-bench-instructions-")
    env.update(
        PERFALERT_DATA_DIR=f"{folder}/data",
        PERFALERT_FILE_DIR=f"{folder}/reports",
        PYTHONHASHSEED="0",
    )
    return env_for(env, this_tree())


def measure(
    kinds: tuple[str, ...], requests: int, warmup: int, layouts: int
) -> dict[str, dict[str, list[float]]]:
    """Instructions per request of the request thread, ``{kind: {mode: [per layout]}}``.

    One child per mode and memory layout: ``PYTHONHASHSEED`` 0, 1, ... gives each
    child another heap layout, the same one to the bare and the monitored child.
    The layout alone moves a kind by up to two per cent (a large list resized
    in place, or copied, as what lies after it in the heap decides), in either
    direction; the median over layouts is the cost the extension adds.
    """
    specs = {}
    for seed in range(layouts):
        env = environment()
        env["PYTHONHASHSEED"] = str(seed)
        for mode in ("bare", "sampling"):
            specs[f"{mode}-{seed}"] = (
                {
                    "task": "instructions",
                    "mode": mode,
                    "kinds": list(kinds),
                    "requests": requests,
                    "warmup": warmup,
                },
                env,
            )
    folder = Path(tempfile.mkdtemp(prefix="perfalert-callgrind-"))
    counts = _instructions.run_all(specs, folder, parallel=2)
    return {
        kind: {
            mode: [counts[f"{mode}-{seed}"][kind] for seed in range(layouts)]
            for mode in ("bare", "sampling")
        }
        for kind in kinds
    }


def threads_cost(seconds: float, rate: float) -> dict[str, float]:
    """The extension's own threads, natively: CPU seconds per wall second at ``rate`` req/s."""
    spec = {"task": "thread_cost", "seconds": seconds, "rate": rate}
    proc = subprocess.run(
        [sys.executable, "-m", "bench._child", json.dumps(spec)],
        cwd=ROOT,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 60,
        check=True,
    )
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def table(rows: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    out = []
    for kind, counts in rows.items():
        pairs = list(zip(counts["bare"], counts["sampling"], strict=True))
        added = [100 * (m - b) / b for b, m in pairs]
        bare = statistics.median(counts["bare"])
        out.append(
            {
                "kind": kind,
                "description": DESCRIPTIONS.get(kind, kind),
                "bare": bare,
                "added": statistics.median(m - b for b, m in pairs),
                "added %": statistics.median(added),
                "added % by layout": added,
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--layouts", type=int, default=3, help="memory layouts (children) per mode")
    parser.add_argument("--max-added", type=float, default=None, metavar="PERCENT")
    parser.add_argument("--threads", action="store_true", help="also the extension's threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not _instructions.available():
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    kinds = tuple(k for k in args.kinds.split(",") if k)
    rows = table(measure(kinds, args.requests, args.warmup, args.layouts))
    print(
        f"Instructions per request, request thread ({args.requests} requests per kind, "
        f"median of {args.layouts} memory layouts)"
    )
    print(f"  {'kind':<36} {'bare':>12} {'added':>9} {'added %':>8}  by layout")
    for r in rows:
        spread = ", ".join(f"{a:+.2f}" for a in r["added % by layout"])
        print(
            f"  {r['description'][:36]:<36} {r['bare']:>12,.0f} {r['added']:>+9,.0f} "
            f"{r['added %']:>+7.2f}%  [{spread}]"
        )
    results: dict[str, Any] = {"requests": args.requests, "rows": rows}
    if args.threads:
        cost = threads_cost(10.0, 1000.0)
        results["threads"] = cost
        print(
            f"\nThe extension's threads at {cost['rate']:.0f} requests/s: "
            f"{100 * cost['share_of_core']:.3f} % of a core "
            f"({cost['cpu_seconds']:.4f} s CPU in {cost['wall_seconds']:.1f} s)"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    if args.max_added is not None:
        over = [r for r in rows if r["added %"] > args.max_added]
        for r in over:
            print(f"OVER {args.max_added} %: {r['kind']} {r['added %']:+.2f} %", file=sys.stderr)
        return 1 if over else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
