"""Figures from the raw results of ``bench/run.py``, and the verdict against the goals.

Ratios are paired per round (a variant / bare of the same round, the two
measured one right after the other) and the median over the rounds is kept,
with the range of the rounds where it matters. Variants are named by label:
``sampling``, ``pyinstrument``, ``none`` (this tree), ``NAME:MODE`` (a
candidate, see ``bench/candidates.py``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .apps import FAST_DESCRIPTIONS, FAST_KINDS, PARTS, PROFILER_MODES

#: The goals, for the default mode: a fast request's median at most 1 % slower
#: than bare, never more than 5 % (median or p99); the slow request at most 1 %
#: slower; each of the three parts' share of the profile within 5 points of
#: its true share; a new sampler within 0.5 points of the one it replaces.
GOAL_MEDIAN = 0.01
HARD_LIMIT = 0.05
GOAL_SLOW = 0.01
GOAL_SHARE_POINTS = 5.0
GOAL_SAME_AS_CANDIDATE_POINTS = 0.5

#: The variant the goals are judged on: this tree's default mode.
DEFAULT = "sampling"
CONTEXTS = ("inprocess", "sync", "gthread")
CONTEXT_NAMES = {"inprocess": "in-process", "sync": "gunicorn sync", "gthread": "gunicorn gthread"}
VIEW_NAMES = {"slow_cpu": "CPU-bound", "slow_io": "I/O-bound"}


def kind_name(kind: str) -> str:
    """``json300`` -> ``JSON of 300 objects`` (without the details in brackets)."""
    return FAST_DESCRIPTIONS[kind].split(" (")[0]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def labels(results: dict[str, Any]) -> list[str]:
    """Every monitored variant of a run, in the order it was measured."""
    variants = results.get("variants")
    if not variants:  # a results file from before candidates
        return list(PROFILER_MODES)
    return [v["label"] for v in variants if v["mode"] != "bare"]


def candidate_labels(results: dict[str, Any]) -> list[str]:
    return [label for label in labels(results) if ":" in label]


def _fast_rounds(results: dict[str, Any], context: str) -> list[dict[str, Any]]:
    if context == "inprocess":
        return list(results.get("inprocess", []))
    return list(results.get("gunicorn", {}).get(context, []))


def _slow_rounds(results: dict[str, Any], context: str) -> list[dict[str, Any]]:
    if context == "inprocess":
        return list(results.get("slow", []))
    return list(results.get("gunicorn", {}).get(context, []))


def _pairs(rounds: list[dict[str, Any]], label: str, kind: str) -> list[tuple[Any, Any]]:
    out = []
    for per in rounds:
        bare, other = per.get("bare", {}).get(kind), per.get(label, {}).get(kind)
        if bare and other:
            out.append((bare, other))
    return out


def _ratios(rounds: list[dict[str, Any]], label: str, kind: str, key: str) -> list[float]:
    return [
        other[key] / bare[key]
        for bare, other in _pairs(rounds, label, kind)
        if bare.get(key) and other.get(key) is not None
    ]


def _diffs(rounds: list[dict[str, Any]], label: str, kind: str, key: str) -> list[float]:
    return [
        other[key] - bare[key]
        for bare, other in _pairs(rounds, label, kind)
        if key in bare and key in other
    ]


def summarise_fast(rounds: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in FAST_KINDS:
        bare = [r["bare"][kind] for r in rounds if kind in r.get("bare", {})]
        if not bare:
            continue
        per_kind: dict[str, Any] = {
            "bare_median": median([b["median"] for b in bare]),
            "bare_p99": median([b["p99"] for b in bare]),
            "bare_throughput": median([b["throughput"] for b in bare]),
            "requests_per_round": median([b["n"] for b in bare]),
        }
        for label in variants:
            runs = [r[label][kind] for r in rounds if kind in r.get(label, {})]
            if not runs:
                continue
            ratios = _ratios(rounds, label, kind, "median")
            cpu_added = _diffs(rounds, label, kind, "cpu")
            entry = {
                "median": median([x["median"] for x in runs]),
                "p99": median([x["p99"] for x in runs]),
                "median_ratio": median(ratios),
                "median_ratio_min": min(ratios),
                "median_ratio_max": max(ratios),
                "p99_ratio": median(_ratios(rounds, label, kind, "p99")),
                "throughput_ratio": median(_ratios(rounds, label, kind, "throughput")),
                "cpu_added_us": median(cpu_added) * 1e6,
                "cpu_share_of_latency": median(cpu_added) / per_kind["bare_median"],
                "switches_added": median(_diffs(rounds, label, kind, "switches")),
                "errors": sum(x.get("errors", 0) for x in runs),
            }
            entry["overhead_us"] = (entry["median"] - per_kind["bare_median"]) * 1e6
            per_kind[label] = entry
        out[kind] = per_kind
    return out


def _analysis_summary(analyses: list[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    shares = {
        name: {
            "true": median([a["parts"][name]["true_share"] for a in analyses]),
            "profile": median([a["parts"][name]["profile_share"] for a in analyses]),
            "window": median([a["parts"][name].get("window_true_share", 0.0) for a in analyses]),
        }
        for name in names
    }
    devs = [
        max(abs(p["profile_share"] - p["true_share"]) for p in a["parts"].values()) * 100
        for a in analyses
    ]
    window_devs = [
        max(abs(p["profile_share"] - p.get("window_true_share", 0.0)) for p in a["parts"].values())
        * 100
        for a in analyses
    ]
    top_right = [
        max(a["parts"], key=lambda n, a=a: a["parts"][n]["profile_share"])
        == max(a["parts"], key=lambda n, a=a: a["parts"][n]["true_share"])
        for a in analyses
    ]
    return {
        "shares": shares,
        "max_dev_points": median(devs),
        "worst_dev_points": max(devs),
        "window_dev_points": median(window_devs),
        "top1_right": sum(top_right),
        "samples": median([a["sample_count"] for a in analyses]),
        "hot_frames": analyses[0]["hot_frames"],
        "profile_note": analyses[0]["profile_note"],
    }


def _profiled(analysis: dict[str, Any] | None) -> bool:
    return bool(analysis and analysis["parts"] and analysis["profiled_seconds"])


def summarise_slow(rounds: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, names in PARTS.items():
        bare = [r["bare"][kind] for r in rounds if kind in r.get("bare", {})]
        if not bare:
            continue
        per_kind: dict[str, Any] = {
            "bare_seconds": median([b["response_seconds"] for b in bare]),
            "bare_true_shares": {
                name: median([b["true_parts"][name] / b["view_seconds"] for b in bare])
                for name in names
            },
        }
        for label in variants:
            runs = [r[label][kind] for r in rounds if kind in r.get(label, {})]
            if not runs:
                continue
            ratios = _ratios(rounds, label, kind, "response_seconds")
            entry: dict[str, Any] = {
                "seconds": median([x["response_seconds"] for x in runs]),
                "ratio": median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "cpu_ratio": median(_ratios(rounds, label, kind, "cpu_seconds")),
            }
            analyses = [x["analysis"] for x in runs if _profiled(x.get("analysis"))]
            entry["profiles"] = len(analyses)
            entry["requests"] = len(runs)
            if analyses:
                entry.update(_analysis_summary(analyses, names))
                truth = per_kind["bare_true_shares"]
                entry["unprofiled_dev_points"] = (
                    max(abs(entry["shares"][n]["profile"] - truth[n]) for n in names) * 100
                )
            per_kind[label] = entry
        out[kind] = per_kind
    return out


def summarise_instructions(section: dict[str, Any]) -> dict[str, Any]:
    per_request = section.get("per_request")
    if not per_request or "bare" not in per_request:
        return {}
    out: dict[str, Any] = {}
    for kind, bare in per_request["bare"].items():
        entry: dict[str, Any] = {"bare": bare}
        for label, counts in per_request.items():
            if label != "bare" and kind in counts:
                entry[label] = {
                    "per_request": counts[kind],
                    "added": counts[kind] - bare,
                    "ratio": counts[kind] / bare if bare else float("nan"),
                }
        out[kind] = entry
    return out


def summarise_sampler(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for where in ("main", "thread"):
        found = sorted({key.split("/", 1)[1] for r in rounds for key in r if key.startswith(where)})
        per: dict[str, Any] = {}
        for label in found:
            if label == "bare":
                continue
            pairs = [(r[f"{where}/bare"], r[f"{where}/{label}"]) for r in rounds]
            per[label] = {
                "bare_seconds": median([b["seconds"] for b, _ in pairs]),
                "sampled_seconds": median([m["seconds"] for _, m in pairs]),
                "ratio": median([m["seconds"] / b["seconds"] for b, m in pairs]),
                "cpu_ratio": median([m["cpu_seconds"] / b["cpu_seconds"] for b, m in pairs]),
                "samples": median([m["samples"] for _, m in pairs]),
            }
        out[where] = per
    return out


def summarise_threads(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for kind in ("sqlite", "json"):
        ratios = [r["thread"][kind]["median"] / r["no_thread"][kind]["median"] for r in rounds]
        out[kind] = {
            "no_thread": median([r["no_thread"][kind]["median"] for r in rounds]),
            "thread": median([r["thread"][kind]["median"] for r in rounds]),
            "ratio": median(ratios),
            "ratios": ratios,
        }
    return out


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    variants = labels(results)
    summary: dict[str, Any] = {"fast": {}, "slow": {}}
    for context in CONTEXTS:
        rounds = _fast_rounds(results, context)
        if rounds:
            summary["fast"][context] = summarise_fast(rounds, variants)
        slow = _slow_rounds(results, context)
        if slow:
            summary["slow"][context] = summarise_slow(slow, variants)
    if results.get("instructions"):
        summary["instructions"] = summarise_instructions(results["instructions"])
    if results.get("threads"):
        summary["threads"] = summarise_threads(results["threads"])
    if results.get("sampler"):
        summary["sampler"] = summarise_sampler(results["sampler"])
    summary["goals"] = goals(summary, candidate_labels(results))
    return summary


# -- the verdict -------------------------------------------------------------------------------


def pct(ratio: float) -> str:
    """A ratio against bare as a signed percentage (``n/a`` when not measured)."""
    if ratio != ratio:  # NaN
        return "n/a"
    return f"{(ratio - 1) * 100:+.1f} %"


def _worst(values: dict[str, float]) -> tuple[str, float]:
    kind = max(values, key=lambda k: values[k])
    return kind, values[kind]


def goals(summary: dict[str, Any], candidates: list[str]) -> list[dict[str, Any]]:
    """Each goal for the default mode: met or not, with its worst figure.

    The slow request is judged where bare and monitored share a process (the
    only place a 1 % difference can be told from the process's memory layout).
    """
    out: list[dict[str, Any]] = []

    def add(goal: str, where: str, met: bool, figure: str) -> None:
        out.append({"goal": goal, "where": where, "met": met, "figure": figure})

    for context, per_kind in summary["fast"].items():
        where = CONTEXT_NAMES[context]
        entries = {k: v[DEFAULT] for k, v in per_kind.items() if DEFAULT in v}
        if not entries:
            continue
        kind, worst = _worst({k: e["median_ratio"] - 1 for k, e in entries.items()})
        figure = f"{kind_name(kind)} {worst * 100:+.1f} %"
        add("fast request: median ≤ 1 % slower", where, worst <= GOAL_MEDIAN, figure)
        kind_p, worst_p = _worst({k: e["p99_ratio"] - 1 for k, e in entries.items()})
        add(
            "fast request: median and p99 ≤ 5 % slower (hard limit)",
            where,
            max(worst, worst_p) <= HARD_LIMIT,
            f"median {figure}, p99 {kind_name(kind_p)} {worst_p * 100:+.1f} %",
        )
        for candidate in candidates:
            diffs = {
                k: (v[DEFAULT]["median_ratio"] - v[candidate]["median_ratio"]) * 100
                for k, v in per_kind.items()
                if DEFAULT in v and candidate in v
            }
            if diffs:
                kind_c, points = _worst(diffs)
                add(
                    f"fast request: median within 0.5 points of {candidate.replace(':', ' (')})",
                    where,
                    points <= GOAL_SAME_AS_CANDIDATE_POINTS,
                    f"{kind_name(kind_c)} {points:+.1f} points",
                )
    for context, per_kind in summary["slow"].items():
        for kind, entry in per_kind.items():
            s = entry.get(DEFAULT)
            if not s:
                continue
            where = f"{CONTEXT_NAMES[context]}, {VIEW_NAMES[kind]}"
            if context == "inprocess":
                met = s["ratio"] - 1 <= GOAL_SLOW
                add("slow request ≤ 1 % slower", where, met, f"{(s['ratio'] - 1) * 100:+.2f} %")
            if "max_dev_points" in s:
                add(
                    "top-3 shares within 5 points of the truth",
                    where,
                    s["max_dev_points"] <= GOAL_SHARE_POINTS,
                    f"{s['max_dev_points']:.1f} points (worst request {s['worst_dev_points']:.1f})",
                )
    return out
