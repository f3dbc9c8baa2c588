"""Figures and tables from the raw results of ``bench/run.py``.

Ratios are paired per round (monitored / bare of the same round, the two
measured one right after the other) and the median over the rounds is shown,
with the range of the rounds where it matters.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .apps import FAST_DESCRIPTIONS, FAST_KINDS, PARTS, PROFILER_MODES, SLOW_DESCRIPTIONS

Table = tuple[str, list[str], list[list[str]], str]

GOAL_MEDIAN = 0.01
GOAL_P99 = 0.05
GOAL_SLOW = 0.01
GOAL_SHARE_POINTS = 5.0


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _rounds_of(results: dict[str, Any], context: str) -> list[dict[str, Any]]:
    if context == "inprocess":
        return list(results.get("inprocess", []))
    return list(results.get("gunicorn", {}).get(context, []))


def _slow_rounds_of(results: dict[str, Any], context: str) -> list[dict[str, Any]]:
    if context == "inprocess":
        return list(results.get("slow", []))
    return list(results.get("gunicorn", {}).get(context, []))


def _paired(rounds: list[dict[str, Any]], mode: str, kind: str, key: str) -> list[float]:
    out = []
    for per_mode in rounds:
        bare = per_mode.get("bare", {}).get(kind)
        other = per_mode.get(mode, {}).get(kind)
        if bare and other and bare.get(key) and other.get(key) is not None:
            out.append(other[key] / bare[key])
    return out


def _paired_diff(rounds: list[dict[str, Any]], mode: str, kind: str, key: str) -> list[float]:
    out = []
    for per_mode in rounds:
        bare = per_mode.get("bare", {}).get(kind)
        other = per_mode.get(mode, {}).get(kind)
        if bare and other and key in bare and key in other:
            out.append(other[key] - bare[key])
    return out


def _cpu_share(rounds: list[dict[str, Any]], mode: str, kind: str) -> list[float]:
    """CPU time the mode adds per request, as a share of the bare request's latency."""
    out = []
    for per_mode in rounds:
        bare = per_mode.get("bare", {}).get(kind)
        other = per_mode.get(mode, {}).get(kind)
        if bare and other and "cpu" in bare and "cpu" in other and bare["median"] > 0:
            out.append((other["cpu"] - bare["cpu"]) / bare["median"])
    return out


def summarise_fast(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in FAST_KINDS:
        bare = [r["bare"][kind] for r in rounds if kind in r.get("bare", {})]
        if not bare:
            continue
        per_kind: dict[str, Any] = {
            "bare_median": _median([b["median"] for b in bare]),
            "bare_p99": _median([b["p99"] for b in bare]),
            "bare_throughput": _median([b["throughput"] for b in bare]),
            "bare_cpu": _median([b.get("cpu", 0.0) for b in bare]),
            "requests_per_round": _median([b["n"] for b in bare]),
        }
        for mode in PROFILER_MODES:
            runs = [r[mode][kind] for r in rounds if kind in r.get(mode, {})]
            if not runs:
                continue
            ratios = _paired(rounds, mode, kind, "median")
            per_kind[mode] = {
                "median": _median([x["median"] for x in runs]),
                "p99": _median([x["p99"] for x in runs]),
                "throughput": _median([x["throughput"] for x in runs]),
                "median_ratio": _median(ratios),
                "median_ratio_min": min(ratios),
                "median_ratio_max": max(ratios),
                "p99_ratio": _median(_paired(rounds, mode, kind, "p99")),
                "throughput_ratio": _median(_paired(rounds, mode, kind, "throughput")),
                "cpu_ratio": _median(_paired(rounds, mode, kind, "cpu")),
                "cpu_added_us": _median(_paired_diff(rounds, mode, kind, "cpu")) * 1e6,
                "cpu_share_of_latency": _median(_cpu_share(rounds, mode, kind)),
                "switches_added": _median(_paired_diff(rounds, mode, kind, "switches")),
                "errors": sum(x.get("errors", 0) for x in runs),
            }
            per_kind[mode]["overhead_us"] = (
                per_kind[mode]["median"] - per_kind["bare_median"]
            ) * 1e6
        out[kind] = per_kind
    return out


def summarise_slow(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, names in PARTS.items():
        bare = [r["bare"][kind] for r in rounds if kind in r.get("bare", {})]
        if not bare:
            continue
        per_kind: dict[str, Any] = {
            "bare_seconds": _median([b["response_seconds"] for b in bare]),
            "bare_true_shares": {
                name: _median([b["true_parts"][name] / b["view_seconds"] for b in bare])
                for name in names
            },
        }
        for mode in PROFILER_MODES:
            runs = [r[mode][kind] for r in rounds if kind in r.get(mode, {})]
            if not runs:
                continue
            ratios = _paired(rounds, mode, kind, "response_seconds")
            entry: dict[str, Any] = {
                "seconds": _median([x["response_seconds"] for x in runs]),
                "ratio": _median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
            }
            if all("total_seconds" in x for x in runs):
                entry["total_ratio"] = _median(_paired(rounds, mode, kind, "total_seconds"))
            entry["cpu_ratio"] = _median(_paired(rounds, mode, kind, "cpu_seconds"))
            analyses = [
                x["analysis"]
                for x in runs
                if x.get("analysis")
                and x["analysis"]["parts"]
                and x["analysis"]["profiled_seconds"]
            ]
            entry["profiles"] = len(analyses)
            if analyses:
                shares = {}
                for name in names:
                    shares[name] = {
                        "true": _median([a["parts"][name]["true_share"] for a in analyses]),
                        "profile": _median([a["parts"][name]["profile_share"] for a in analyses]),
                        "window": _median(
                            [a["parts"][name].get("window_true_share", 0.0) for a in analyses]
                        ),
                    }
                devs = [
                    max(abs(p["profile_share"] - p["true_share"]) for p in a["parts"].values())
                    * 100
                    for a in analyses
                ]
                top_ok = [
                    max(a["parts"], key=lambda n, a=a: a["parts"][n]["profile_share"])
                    == max(a["parts"], key=lambda n, a=a: a["parts"][n]["true_share"])
                    for a in analyses
                ]
                bare_truth = per_kind["bare_true_shares"]
                entry.update(
                    shares=shares,
                    unprofiled_dev_points=max(
                        abs(shares[n]["profile"] - bare_truth[n]) for n in names
                    )
                    * 100,
                    max_dev_points=_median(devs),
                    worst_dev_points=max(devs),
                    top1_right=sum(top_ok),
                    samples=_median([a["sample_count"] for a in analyses]),
                    hot_frames=analyses[0]["hot_frames"],
                    profile_note=analyses[0]["profile_note"],
                )
            per_kind[mode] = entry
        out[kind] = per_kind
    return out


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"fast": {}, "slow": {}}
    for context in ("inprocess", "sync", "gthread"):
        rounds = _rounds_of(results, context)
        if rounds:
            summary["fast"][context] = summarise_fast(rounds)
        slow = _slow_rounds_of(results, context)
        if slow:
            summary["slow"][context] = summarise_slow(slow)
    if results.get("threads"):
        summary["threads"] = {
            kind: {
                "no_thread": _median([r["no_thread"][kind]["median"] for r in results["threads"]]),
                "thread": _median([r["thread"][kind]["median"] for r in results["threads"]]),
                "ratio": _median(
                    [
                        r["thread"][kind]["median"] / r["no_thread"][kind]["median"]
                        for r in results["threads"]
                    ]
                ),
                "ratios": [
                    r["thread"][kind]["median"] / r["no_thread"][kind]["median"]
                    for r in results["threads"]
                ],
            }
            for kind in ("sqlite", "json")
        }
    if results.get("sampler"):
        rounds = results["sampler"]
        summary["sampler"] = {}
        for where in ("main", "thread"):
            bare = [r[f"{where}/bare"] for r in rounds]
            mon = [r[f"{where}/sampling"] for r in rounds]
            summary["sampler"][where] = {
                "bare_seconds": _median([b["seconds"] for b in bare]),
                "sampled_seconds": _median([m["seconds"] for m in mon]),
                "ratio": _median(
                    [m["seconds"] / b["seconds"] for b, m in zip(bare, mon, strict=True)]
                ),
                "cpu_ratio": _median(
                    [m["cpu_seconds"] / b["cpu_seconds"] for b, m in zip(bare, mon, strict=True)]
                ),
                "samples": _median([m["samples"] for m in mon]),
                "interval": _median([m["interval"] for m in mon]),
            }
    summary["goals"] = goals(summary)
    return summary


def goals(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals for the default mode ("sampling"), met or not, with the figures."""
    out: dict[str, Any] = {}
    for context, per_kind in summary["fast"].items():
        medians = {
            k: v["sampling"]["median_ratio"] - 1 for k, v in per_kind.items() if "sampling" in v
        }
        p99s = {k: v["sampling"]["p99_ratio"] - 1 for k, v in per_kind.items() if "sampling" in v}
        cpus = {
            k: v["sampling"]["cpu_share_of_latency"] for k, v in per_kind.items() if "sampling" in v
        }
        if medians:
            worst_c = max(cpus, key=lambda k: cpus[k])
            out[f"{context}: CPU added <= 1% of the latency (load-robust check)"] = {
                "met": cpus[worst_c] <= GOAL_MEDIAN,
                "worst": f"{worst_c} {cpus[worst_c] * 100:+.1f}%",
            }
            worst_m = max(medians, key=lambda k: medians[k])
            worst_p = max(p99s, key=lambda k: p99s[k])
            out[f"{context}: median <= 1%"] = {
                "met": medians[worst_m] <= GOAL_MEDIAN,
                "worst": f"{worst_m} {medians[worst_m] * 100:+.1f}%",
            }
            out[f"{context}: p99 <= 5%"] = {
                "met": p99s[worst_p] <= GOAL_P99,
                "worst": f"{worst_p} {p99s[worst_p] * 100:+.1f}%",
            }
    for context, per_kind in summary["slow"].items():
        for kind, entry in per_kind.items():
            s = entry.get("sampling")
            if not s:
                continue
            out[f"{context}: {kind} request <= 1% slower"] = {
                "met": s["ratio"] - 1 <= GOAL_SLOW,
                "worst": f"{_pct(s['ratio'])} (CPU {_pct(s['cpu_ratio'])})",
            }
            if "max_dev_points" in s:
                out[f"{context}: {kind} shares within 5 points"] = {
                    "met": s["max_dev_points"] <= GOAL_SHARE_POINTS,
                    "worst": f"{s['max_dev_points']:.1f} points (worst round "
                    f"{s['worst_dev_points']:.1f})",
                }
    return out


# -- tables ---------------------------------------------------------------------------------


def _pct(ratio: float) -> str:
    if ratio != ratio:  # NaN: not measured here
        return "n/a"
    return f"{(ratio - 1) * 100:+.1f}%"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


CONTEXT_TITLES = {
    "inprocess": "In-process (WSGI callable, call + body + close)",
    "sync": "gunicorn sync worker (1 worker)",
    "gthread": "gunicorn gthread worker (1 worker, 4 threads)",
}


def tables(results: dict[str, Any]) -> list[Table]:
    summary = results["summary"]
    out: list[Table] = []
    client = results["config"].get("client_used") or "-"
    for context, per_kind in summary["fast"].items():
        headers = [
            "endpoint kind",
            "bare median µs",
            "mode",
            "median",
            "Δ median",
            "range",
            "Δ µs",
            "Δ p99",
            "Δ throughput",
            "CPU added µs",
            "CPU added / latency",
        ]
        if context != "inprocess":
            headers.append("context switches added")
        rows = []
        for kind, entry in per_kind.items():
            for i, mode in enumerate(PROFILER_MODES):
                m = entry.get(mode)
                if m is None:
                    continue
                rows.append(
                    [
                        FAST_DESCRIPTIONS[kind] if i == 0 else "",
                        _us(entry["bare_median"]) if i == 0 else "",
                        mode,
                        _us(m["median"]),
                        _pct(m["median_ratio"]),
                        f"{_pct(m['median_ratio_min'])}..{_pct(m['median_ratio_max'])}",
                        f"{m['overhead_us']:+.1f}",
                        _pct(m["p99_ratio"]),
                        _pct(m["throughput_ratio"]),
                        f"{m['cpu_added_us']:+.1f}",
                        f"{m['cpu_share_of_latency'] * 100:+.1f}%",
                    ]
                )
                if context != "inprocess":
                    rows[-1].append(f"{m['switches_added']:+.2f}")
        n_rounds = len(_rounds_of(results, context))
        note = (
            f"{n_rounds} interleaved rounds; Δ = monitored vs bare, median of per-round ratios. "
            "CPU added: the process's CPU time per request, monitored minus bare (less "
            "disturbed by other load than latency); / latency: as a share of the bare median."
        )
        if context != "inprocess":
            note += f" Load: {client}, one connection, closed loop."
        out.append((CONTEXT_TITLES[context], headers, rows, note))

    for context, per_kind in summary["slow"].items():
        headers = [
            "view",
            "mode",
            "bare s",
            "monitored s",
            "Δ",
            "range",
            "Δ CPU",
            "part",
            "true share",
            "profile share",
            "sampled-window truth",
            "unprofiled truth",
        ]
        rows = []
        for kind, entry in per_kind.items():
            for mode in PROFILER_MODES:
                m = entry.get(mode)
                if m is None:
                    continue
                names = PARTS[kind]
                for j, name in enumerate(names):
                    shares = m.get("shares", {}).get(name)
                    rows.append(
                        [
                            kind if j == 0 else "",
                            mode if j == 0 else "",
                            f"{entry['bare_seconds']:.3f}" if j == 0 else "",
                            f"{m['seconds']:.3f}" if j == 0 else "",
                            _pct(m["ratio"]) if j == 0 else "",
                            f"{_pct(m['ratio_min'])}..{_pct(m['ratio_max'])}" if j == 0 else "",
                            _pct(m["cpu_ratio"]) if j == 0 else "",
                            name,
                            f"{shares['true'] * 100:.1f}%"
                            if shares
                            else f"{entry['bare_true_shares'][name] * 100:.1f}%",
                            f"{shares['profile'] * 100:.1f}%" if shares else "(no profile)",
                            f"{shares['window'] * 100:.1f}%" if shares else "",
                            f"{entry['bare_true_shares'][name] * 100:.1f}%",
                        ]
                    )
        title = f"The slow request: {CONTEXT_TITLES[context]}"
        note = "; ".join(f"{k}: {v}" for k, v in SLOW_DESCRIPTIONS.items())
        note += (
            ". Shares: medians over rounds. True share: the part's wall time / the view's, in"
            " the same request; sampled-window truth: the same over the time the profile covers;"
            " unprofiled truth: the true share in the bare runs (no profiler)."
        )
        out.append((title, headers, rows, note))

        headers = [
            "view",
            "mode",
            "max |profile - truth| (points)",
            "worst round",
            "vs unprofiled truth",
            "hottest part right",
            "samples",
            "top-3 hot frames (self time)",
        ]
        rows = []
        for kind, entry in per_kind.items():
            for mode in PROFILER_MODES:
                m = entry.get(mode)
                if not m or "max_dev_points" not in m:
                    continue
                rows.append(
                    [
                        kind,
                        mode,
                        f"{m['max_dev_points']:.1f}",
                        f"{m['worst_dev_points']:.1f}",
                        f"{m['unprofiled_dev_points']:.1f}",
                        f"{m['top1_right']}/{m['profiles']}",
                        f"{m['samples']:.0f}",
                        ", ".join(f"{f} {s * 100:.0f}%" for f, s in m["hot_frames"]),
                    ]
                )
        out.append((f"Profile accuracy: {CONTEXT_TITLES[context]}", headers, rows, ""))

    if "threads" in summary:
        rows = [
            [
                FAST_DESCRIPTIONS[k],
                _us(v["no_thread"]),
                _us(v["thread"]),
                _pct(v["ratio"]),
                ", ".join(_pct(r) for r in v["ratios"]),
            ]
            for k, v in summary["threads"].items()
        ]
        out.append(
            (
                "A process that has started (and joined) one thread, bare app, in-process",
                ["endpoint kind", "never a thread µs", "after one thread µs", "Δ", "per round"],
                rows,
                "",
            )
        )
    if results.get("wrapper"):
        rows = []
        for mode, w in results["wrapper"].items():
            rows.append(
                [
                    mode,
                    f"{w['raw_median'] * 1e9:,.0f}",
                    f"{w['timed_median'] * 1e9:,.0f}",
                    f"{(w['timed_median'] - w['raw_median']) * 1e9:,.0f}",
                    f"{w['own_seconds_per_request'] * 1e9:,.0f}",
                ]
            )
        out.append(
            (
                "The request timer alone, around a trivial WSGI app (ns per request)",
                ["mode", "raw", "through the timer", "timer cost", "own cost it reports"],
                rows,
                "Medians of alternating blocks, in-process.",
            )
        )
    if summary.get("sampler"):
        rows = []
        for where, v in summary["sampler"].items():
            rows.append(
                [
                    "main thread (SIGALRM)"
                    if where == "main"
                    else "another thread (sampler thread)",
                    f"{v['bare_seconds']:.3f}",
                    f"{v['sampled_seconds']:.3f}",
                    _pct(v["ratio"]),
                    _pct(v["cpu_ratio"]),
                    f"{v['samples']:.0f}",
                    f"{v['samples'] / v['sampled_seconds']:.0f}/s",
                ]
            )
        out.append(
            (
                "The sampler's cost on a CPU-bound call sampled from its first millisecond",
                [
                    "where the work runs",
                    "bare s",
                    "sampled s",
                    "Δ wall",
                    "Δ CPU",
                    "samples",
                    "rate",
                ],
                rows,
                "@perf.watch(threshold=0.01) around ~1.1 s of recursive calls; process CPU "
                "includes the sampler thread. Median of paired rounds.",
            )
        )
    if results.get("memory"):
        rows = []
        for name, mem in results["memory"].items():
            for cp in mem["checkpoints"]:
                state = cp.get("state") or {}
                rows.append(
                    [
                        name,
                        f"{cp['requests']:,}",
                        f"{cp['rss_kib'] / 1024:.1f}",
                        f"{cp['traced_total_bytes'] / 1024:,.0f}",
                        f"{cp['traced_extension_bytes'] / 1024:,.1f}",
                        str(state.get("store_keys", "-")),
                        str(state.get("identifier_cache", "-")),
                        str(state.get("sampler_active", "-")),
                    ]
                )
        cfg = results["config"]
        out.append(
            (
                "Memory: distinct URLs over many endpoints (in-process)",
                [
                    "scenario",
                    "requests",
                    "RSS MiB",
                    "live Python KiB",
                    "extension's live KiB",
                    "alert-store keys",
                    "frame-id cache",
                    "sampler entries",
                ],
                rows,
                f"{cfg['memory_endpoints']:,} endpoints /ep<k>/<n>, every URL distinct (query "
                "string too), one in eleven a 404. Live memory from tracemalloc after gc; the "
                "extension's = allocated by its own code and still alive.",
            )
        )
    if summary.get("goals"):
        rows = [
            [name, "met" if g["met"] else "MISSED", g["worst"]]
            for name, g in summary["goals"].items()
        ]
        out.append(("Goals for the default mode (sampling)", ["goal", "", "worst case"], rows, ""))
    return out


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; Python {m['python']}, "
        f"Flask {m['flask']}, Werkzeug {m['werkzeug']}, pyinstrument {m['pyinstrument']}, "
        f"gunicorn {m['gunicorn']}, {m['wrk']}; commit {m['commit']}"
    ]
    for title, headers, rows, note in tables(results):
        parts.append(f"\n### {title}\n\n{_markdown_table(headers, rows)}")
        if note:
            parts.append(f"\n{note}")
    return "\n".join(parts)


def _rst_table(headers: list[str] | None, rows: list[list[str]]) -> str:
    lines = [".. list-table::", f"   :header-rows: {1 if headers else 0}", ""]
    for row in [headers, *rows] if headers else rows:
        for i, cell in enumerate(row):
            text = cell.replace("*", "\\*").replace("|", "\\|") if cell else "\\"
            if text.startswith(("-", "+")):
                text = "\\" + text
            lines.append(f"   {'* -' if i == 0 else '  -'} {text}")
    return "\n".join(lines)


def machine_rows(results: dict[str, Any]) -> list[list[str]]:
    m = results["machine"]
    cfg = results["config"]
    load = results.get("load_during_run") or []
    loads = [value for _, value in load]
    return [
        ["CPU", f"{m['cpu']}, {m['cores']} cores"],
        ["Kernel", f"Linux {m['kernel']}"],
        ["Python", f"{m['implementation']} {m['python']}"],
        ["Flask / Werkzeug / Jinja2", f"{m['flask']} / {m['werkzeug']} / {m['jinja2']}"],
        ["pyinstrument", m["pyinstrument"]],
        ["gunicorn", m["gunicorn"]],
        ["Load generator", cfg.get("client_used") or "-"],
        ["wrk", m["wrk"]],
        ["Flask-PerfAlert", f"{m['flask_perfalert']} (commit {m['commit']})"],
        [
            "Load average during the run",
            f"{min(loads):.1f} .. {max(loads):.1f} (other work on the machine)" if loads else "-",
        ],
        ["Duration of the run", f"{results.get('seconds', 0):.0f} s"],
    ]


def rst(results: dict[str, Any]) -> str:
    title = "Machine and versions"
    parts = [f"{title}\n{'~' * len(title)}\n\n{_rst_table(None, machine_rows(results))}\n"]
    for title, headers, rows, note in tables(results):
        parts.append(f"{title}\n{'~' * len(title)}\n\n{_rst_table(headers, rows)}\n")
        if note:
            parts.append(f"{note}\n")
    return "\n".join(parts)
