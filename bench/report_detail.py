"""The detail tables: every variant's figures, printed after the page's tables.

They are written next to the raw results (``bench-results/tables-<time>.md``),
not onto the docs page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .apps import FAST_DESCRIPTIONS
from .report import Table, display, us
from .summary import CONTEXT_NAMES, labels, pct


def detail_tables(results: dict[str, Any]) -> list[Table]:
    summary = results["summary"]
    out: list[Table] = []
    for context, per_kind in summary["fast"].items():
        headers = [
            "endpoint",
            "variant",
            "median µs",
            "Δ median",
            "range",
            "Δ p99",
            "Δ throughput",
            "CPU added µs",
            "switches added",
        ]
        rows = []
        for kind, entry in per_kind.items():
            rows += _variant_rows(
                results,
                entry,
                [FAST_DESCRIPTIONS[kind], "bare", us(entry["bare_median"])],
                lambda m: [
                    us(m["median"]),
                    pct(m["median_ratio"]),
                    f"{pct(m['median_ratio_min'])} .. {pct(m['median_ratio_max'])}",
                    pct(m["p99_ratio"]),
                    pct(m["throughput_ratio"]),
                    f"{m['cpu_added_us']:+.1f}",
                    _switches(m["switches_added"]),
                ],
            )
        title = f"Fast requests: {CONTEXT_NAMES[context]}"
        out.append(Table(f"fast-{context}", title, headers, rows, page=False))
    for context, per_kind in summary["slow"].items():
        headers = [
            "view",
            "variant",
            "s",
            "Δ",
            "range",
            "Δ CPU",
            "samples",
            "hottest part right",
            "top-3 hot frames",
        ]
        rows = []
        for kind, entry in per_kind.items():
            rows += _variant_rows(
                results,
                entry,
                [kind, "bare", f"{entry['bare_seconds']:.3f}"],
                lambda m: [
                    f"{m['seconds']:.3f}",
                    pct(m["ratio"]),
                    f"{pct(m['ratio_min'])} .. {pct(m['ratio_max'])}",
                    pct(m["cpu_ratio"]),
                    f"{m.get('samples', 0):.0f}",
                    f"{m.get('top1_right', 0)}/{m['profiles']}",
                    ", ".join(f"{f} {s * 100:.0f}%" for f, s in m.get("hot_frames", [])),
                ],
            )
        title = f"The slow request: {CONTEXT_NAMES[context]}"
        out.append(Table(f"slow-{context}", title, headers, rows, page=False))
    if summary.get("threads"):
        rows = [
            [
                FAST_DESCRIPTIONS[k],
                us(v["no_thread"]),
                us(v["thread"]),
                pct(v["ratio"]),
                ", ".join(pct(r) for r in v["ratios"]),
            ]
            for k, v in summary["threads"].items()
        ]
        headers = ["endpoint", "never a thread µs", "after one thread µs", "Δ", "per round"]
        title = "A process that has started (and joined) one thread, bare app"
        out.append(Table("threads", title, headers, rows, page=False))
    if results.get("wrapper"):
        rows = [
            [
                display(label),
                f"{w['raw_median'] * 1e9:,.0f}",
                f"{w['timed_median'] * 1e9:,.0f}",
                f"{(w['timed_median'] - w['raw_median']) * 1e9:,.0f}",
                f"{w['own_seconds_per_request'] * 1e9:,.0f}",
            ]
            for label, w in results["wrapper"].items()
        ]
        headers = ["variant", "raw ns", "through the timer ns", "timer ns", "it reports ns"]
        out.append(Table("wrapper", "The request timer alone", headers, rows, page=False))
    for where, per in summary.get("sampler", {}).items():
        rows = [
            [
                display(label),
                f"{v['bare_seconds']:.3f}",
                f"{v['sampled_seconds']:.3f}",
                pct(v["ratio"]),
                pct(v["cpu_ratio"]),
                f"{v['samples']:.0f}",
            ]
            for label, v in per.items()
        ]
        headers = ["variant", "bare s", "sampled s", "Δ wall", "Δ CPU", "samples"]
        where_name = "the main thread" if where == "main" else "another thread"
        title = f"A CPU-bound call sampled from its first ms, on {where_name}"
        out.append(Table(f"sampler-{where}", title, headers, rows, page=False))
    return out


def _switches(added: float) -> str:
    """Context switches added per request (not measured in-process: empty)."""
    return "" if added != added else f"{added:+.2f}"


def _variant_rows(
    results: dict[str, Any],
    entry: dict[str, Any],
    bare: list[str],
    cells: Callable[[dict[str, Any]], list[str]],
) -> list[list[str]]:
    """The bare row of one endpoint, then a row of ``cells`` for each variant measured."""
    rows = [bare]
    for label in labels(results):
        if label in entry:
            rows.append(["", display(label), *cells(entry[label])])
    width = len(rows[-1])
    rows[0] = bare + [""] * (width - len(bare))
    return rows
