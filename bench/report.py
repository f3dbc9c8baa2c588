"""Tables from the figures of :mod:`bench.summary`: for the docs page, and in full.

:func:`page_tables` are the tables of docs/performance.rst, one per question,
each with a name; :func:`write_rst` puts each between the page's
``.. bench-table-begin NAME`` and ``.. bench-table-end NAME`` comments (or
all of them into a file without such comments). :func:`markdown` prints
those and every detail table; the run writes it next to the raw results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .apps import FAST_DESCRIPTIONS, PARTS, SLOW_DESCRIPTIONS
from .summary import (
    CONTEXT_NAMES,
    CONTEXTS,
    DEFAULT,
    VIEW_NAMES,
    candidate_labels,
    kind_name,
    labels,
    pct,
)


@dataclass
class Table:
    name: str
    title: str
    headers: list[str] | None
    rows: list[list[str]]
    note: str = ""
    #: Detail tables are printed in full, not put on the page.
    page: bool = True


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def _shares(values: list[float]) -> str:
    return " / ".join(f"{v * 100:.0f}" for v in values)


def display(label: str) -> str:
    """``signal:sampling`` -> ``signal (sampling)``; this tree's modes as they are."""
    name, sep, mode = label.partition(":")
    return f"{name} ({mode})" if sep else label


# -- the page --------------------------------------------------------------------------------


def machine_table(results: dict[str, Any]) -> Table:
    m = results["machine"]
    cfg = results["config"]
    loads = [value for _, value in results.get("load_during_run") or []]
    rows = [
        ["CPU", f"{m['cpu']}, {m['cores']} cores"],
        ["Kernel", f"Linux {m['kernel']}"],
        ["Python", f"{m['implementation']} {m['python']}"],
        ["Flask / Werkzeug / Jinja2", f"{m['flask']} / {m['werkzeug']} / {m['jinja2']}"],
        ["pyinstrument / gunicorn", f"{m['pyinstrument']} / {m['gunicorn']}"],
        ["Load generator", f"{cfg.get('client_used') or '-'} ({m['wrk']})"],
        ["valgrind", m.get("valgrind", "-")],
        ["Flask-PerfAlert", f"commit {m['commit']}"],
    ]
    for name, c in results.get("candidates", {}).items():
        if name != "this tree":
            rows.append([f"Candidate {name!r}", f"{c['source']} (commit {c['commit']})"])
    rows += [
        [
            "Load average during the run",
            f"{min(loads):.1f} .. {max(loads):.1f} (other work on the machine)" if loads else "-",
        ],
        ["Duration of the run", f"{results.get('seconds', 0) / 60:.0f} min"],
    ]
    return Table("machine", "Machine and versions", None, rows)


def fast_table(results: dict[str, Any]) -> Table:
    summary = results["summary"]["fast"]
    shown = labels(results)
    p99_of = [DEFAULT, *candidate_labels(results)]
    headers = ["endpoint", "server", "bare median µs"]
    headers += [f"{display(label)} median" for label in shown]
    headers += [f"{display(label)} p99" for label in p99_of]
    rows = []
    kinds = next(iter(summary.values()), {})
    for kind in kinds:
        for i, context in enumerate(c for c in CONTEXTS if c in summary):
            entry = summary[context].get(kind)
            if entry is None:
                continue
            row = [FAST_DESCRIPTIONS[kind] if i == 0 else "", CONTEXT_NAMES[context]]
            row.append(us(entry["bare_median"]))
            row += [pct(entry[label]["median_ratio"]) if label in entry else "" for label in shown]
            row += [pct(entry[label]["p99_ratio"]) if label in entry else "" for label in p99_of]
            rows.append(row)
    rounds = {c: len(results.get("inprocess", [])) for c in ("inprocess",)}
    rounds.update({c: len(results.get("gunicorn", {}).get(c, [])) for c in ("sync", "gthread")})
    note = (
        "Latency against the bare app, median of the paired rounds ("
        + ", ".join(f"{CONTEXT_NAMES[c]} {n}" for c, n in rounds.items() if n)
        + "). In-process: the WSGI callable called, iterated and closed; gunicorn: one "
        "worker, one connection, closed loop."
    )
    return Table("fast", "Fast requests", headers, rows, note)


def slow_table(results: dict[str, Any]) -> Table:
    summary = results["summary"]["slow"]
    shown = labels(results)
    headers = ["view", "server", "bare s", *[display(label) for label in shown]]
    rows = []
    for kind in PARTS:
        for i, context in enumerate(c for c in CONTEXTS if c in summary):
            entry = summary[context].get(kind)
            if entry is None:
                continue
            row = [VIEW_NAMES[kind] if i == 0 else "", CONTEXT_NAMES[context]]
            row.append(f"{entry['bare_seconds']:.3f}")
            row += [pct(entry[label]["ratio"]) if label in entry else "" for label in shown]
            rows.append(row)
    pairs = [r for r in results.get("slow", []) if "slow_cpu" in r.get(DEFAULT, {})]
    note = (
        f"Duration of the slow request against bare. In-process ({len(pairs)} pairs per view "
        "and profiler): the app monitored and bare in one process, their slow requests "
        "alternated. Under gunicorn, monitored and bare are different servers (one request "
        "each per set of servers), so the process's memory layout stays in the figure."
    )
    return Table("slow", "The slow request", headers, rows, note)


def accuracy_table(results: dict[str, Any]) -> Table:
    summary = results["summary"]["slow"]
    headers = [
        "view",
        "server",
        "profiler",
        "profile shares %",
        "true shares %",
        "max gap, points",
        "worst request",
        "profiled",
        "samples",
    ]
    rows = []
    for kind, names in PARTS.items():
        first = True
        for context in (c for c in CONTEXTS if c in summary):
            entry = summary[context].get(kind, {})
            for label in labels(results):
                m = entry.get(label)
                if not m or "shares" not in m:
                    continue
                if label == "pyinstrument" and context != "inprocess":
                    continue  # its shares are those of a request it slowed down; once is enough
                rows.append(
                    [
                        VIEW_NAMES[kind] if first else "",
                        CONTEXT_NAMES[context],
                        display(label),
                        _shares([m["shares"][n]["profile"] for n in names]),
                        _shares([m["shares"][n]["true"] for n in names]),
                        f"{m['max_dev_points']:.1f}",
                        f"{m['worst_dev_points']:.1f}",
                        f"{m['profiles']}/{m['requests']}",
                        f"{m['samples']:.0f}",
                    ]
                )
                first = False
    note = "; ".join(
        f"{VIEW_NAMES[k]}: {', '.join(PARTS[k])} ({SLOW_DESCRIPTIONS[k].split(': ', 1)[1]})"
        for k in PARTS
    )
    note += (
        ". Shares: the part's time in the profile / the profile's time, against the "
        "part's wall time / the view's, measured by the view in the same request; "
        "medians over the slow requests. Max gap: the largest of the three differences. "
        "Profiled: slow requests whose event carried a profile; samples: median per profile."
    )
    return Table("accuracy", "Profile accuracy", headers, rows, note)


def instructions_table(results: dict[str, Any]) -> Table | None:
    summary = results["summary"].get("instructions")
    if not summary:
        return None
    shown = [label for label in labels(results) if label in next(iter(summary.values()))]
    headers = ["endpoint", "bare", *[f"{display(label)} added" for label in shown]]
    rows = []
    for kind, entry in summary.items():
        name = "request timer alone" if kind == "timer" else FAST_DESCRIPTIONS[kind]
        row = [name, f"{entry['bare']:,.0f}"]
        for label in shown:
            e = entry[label]
            row.append(f"{e['added']:+,.0f} ({pct(e['ratio'])})")
        rows.append(row)
    n = results["instructions"].get("requests")
    note = (
        f"Instructions per request of the request's thread under callgrind ({n} requests "
        "per endpoint after a warm-up), in-process. The request timer alone: around a "
        "Werkzeug response of two bytes (bare: that response alone)."
    )
    return Table("instructions", "Instructions per request", headers, rows, note)


def memory_table(results: dict[str, Any]) -> Table | None:
    memory = results.get("memory")
    if not memory:
        return None
    headers = ["scenario", "requests", "RSS MiB", "extension's live KiB", "alert-store keys"]
    rows = []
    for name, mem in memory.items():
        for i, cp in enumerate(mem["checkpoints"]):
            state = cp.get("state") or {}
            rows.append(
                [
                    name if i == 0 else "",
                    f"{cp['requests']:,}",
                    f"{cp['rss_kib'] / 1024:.1f}",
                    f"{cp['traced_extension_bytes'] / 1024:,.1f}",
                    str(state.get("store_keys", "-")),
                ]
            )
    cfg = results["config"]
    note = (
        f"{cfg['memory_endpoints']:,} endpoints /ep<k>/<n>, every URL distinct (query "
        "string too), one in eleven a 404, in-process. Extension's live memory: what its "
        "own code allocated and is still alive after a collection (tracemalloc)."
    )
    return Table("memory", "Memory", headers, rows, note)


def stores_table(results: dict[str, Any]) -> Table | None:
    stores = results.get("stores")
    if not stores:
        return None
    headers = ["store", "alert (new key) µs", "p99 µs", "duplicate µs", "p99 µs"]
    rows = []
    for name, s in stores.items():
        if "skipped" in s:
            rows.append([f"{name}://", s["skipped"], "", "", ""])
            continue
        rows.append(
            [
                s["uri"],
                f"{s['new_median'] * 1e6:,.0f}",
                f"{s['new_p99'] * 1e6:,.0f}",
                f"{s['duplicate_median'] * 1e6:,.0f}",
                f"{s['duplicate_p99'] * 1e6:,.0f}",
            ]
        )
    claims = next((s["claims"] for s in stores.values() if "claims" in s), 0)
    note = (
        f"One claim per slow request, on the events thread after the response; median "
        f"and p99 of {claims:,} claims each. SQLite: a file on local disk; Redis: a local "
        "redis-server over TCP."
    )
    return Table("stores", "Alert stores", headers, rows, note)


def versus_table(results: dict[str, Any]) -> Table | None:
    """This tree's sampler against each candidate's, figure by figure."""
    others = [c for c in candidate_labels(results) if c.endswith(":sampling")]
    if not others:
        return None
    summary = results["summary"]
    shown = [DEFAULT, *others]
    headers = ["measure", *[display(label) for label in shown]]
    rows: list[list[str]] = []

    def row(name: str, cell: Any) -> None:
        cells = [cell(label) for label in shown]
        if any(cells):  # a section this run left out
            rows.append([name, *cells])

    timer_ns = {
        label: (w["timed_median"] - w["raw_median"]) * 1e9
        for label, w in results.get("wrapper", {}).items()
    }
    row(
        "request timer alone, ns per request",
        lambda label: f"{timer_ns[label]:,.0f}" if label in timer_ns else "",
    )
    instructions = summary.get("instructions", {})
    for kind in ("timer", "json"):
        if kind in instructions:
            what = "request timer alone" if kind == "timer" else FAST_DESCRIPTIONS[kind]
            row(
                f"instructions added, {what}",
                lambda label, e=instructions[kind]: (
                    f"{e[label]['added']:+,.0f}" if label in e else ""
                ),
            )
    for context, per_kind in summary["fast"].items():
        row(
            f"fast requests, {CONTEXT_NAMES[context]}: median, worst kind",
            lambda label, p=per_kind: _worst_kind(p, label),
        )
    for context in ("inprocess",):
        for kind, entry in summary["slow"].get(context, {}).items():
            row(
                f"slow request, {VIEW_NAMES[kind]}",
                lambda label, e=entry: pct(e[label]["ratio"]) if label in e else "",
            )
            row(
                f"samples per {VIEW_NAMES[kind]} slow request",
                lambda label, e=entry: (
                    f"{e[label]['samples']:.0f}" if "samples" in e.get(label, {}) else ""
                ),
            )
            row(
                f"shares, {VIEW_NAMES[kind]}: max gap, points",
                lambda label, e=entry: (
                    f"{e[label]['max_dev_points']:.1f}"
                    if "max_dev_points" in e.get(label, {})
                    else ""
                ),
            )
    for where, per in summary.get("sampler", {}).items():
        name = "main thread (sync worker)" if where == "main" else "other thread (gthread)"
        row(
            f"CPU-bound call sampled from its first ms, {name}",
            lambda label, p=per: pct(p[label]["ratio"]) if label in p else "",
        )
    note = (
        "From the tables above; the request timer alone: around a two-byte Werkzeug "
        "response, in-process; a CPU-bound call: about 1.1 s of recursive calls watched "
        "with a 10 ms threshold (so sampled almost all along), against the same call bare."
    )
    return Table("versus", "Signal sampler and thread sampler", headers, rows, note)


def _worst_kind(per_kind: dict[str, Any], label: str) -> str:
    values = {k: v[label]["median_ratio"] for k, v in per_kind.items() if label in v}
    if not values:
        return ""
    kind = max(values, key=lambda k: values[k])
    return f"{pct(values[kind])} ({kind_name(kind)})"


def verdict_table(results: dict[str, Any]) -> Table:
    rows = [
        [g["goal"], g["where"], "met" if g["met"] else "MISSED", g["figure"]]
        for g in results["summary"]["goals"]
    ]
    return Table("verdict", "Verdict", ["goal", "where", "", "worst figure"], rows)


def page_tables(results: dict[str, Any]) -> list[Table]:
    tables: list[Table | None] = [
        machine_table(results),
        verdict_table(results),
        fast_table(results) if results["summary"]["fast"] else None,
        slow_table(results) if results["summary"]["slow"] else None,
        accuracy_table(results) if results["summary"]["slow"] else None,
        instructions_table(results),
        memory_table(results),
        stores_table(results),
        versus_table(results),
    ]
    return [t for t in tables if t is not None]


# -- output ------------------------------------------------------------------------------------


def _markdown_table(table: Table) -> str:
    headers = table.headers or [""] * len(table.rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)


def markdown(results: dict[str, Any], more: list[Table] | None = None) -> str:
    """The page tables, then ``more`` (the detail tables), as Markdown."""
    parts = []
    for table in page_tables(results) + (more or []):
        parts.append(f"\n### {table.title}\n\n{_markdown_table(table)}")
        if table.note:
            parts.append(f"\n{table.note}")
    return "\n".join(parts)


def _rst_table(table: Table) -> str:
    lines = [".. list-table::", f"   :header-rows: {1 if table.headers else 0}", ""]
    for row in [table.headers, *table.rows] if table.headers else table.rows:
        for i, cell in enumerate(row):
            text = cell.replace("*", "\\*").replace("|", "\\|") if cell else "\\"
            if text.startswith(("-", "+")):
                text = "\\" + text
            lines.append(f"   {'* -' if i == 0 else '  -'} {text}")
    out = "\n".join(lines) + "\n"
    if table.note:
        out += f"\n{table.note}\n"
    return out


def rst(results: dict[str, Any]) -> str:
    """Every page table with its title (for a file without the page's comments)."""
    return "\n".join(
        f"{t.title}\n{'~' * len(t.title)}\n\n{_rst_table(t)}" for t in page_tables(results)
    )


_BLOCK = re.compile(
    r"(?P<begin>^\.\. bench-table-begin (?P<name>[\w-]+)\n)(?P<body>.*?)"
    r"(?P<end>^\.\. bench-table-end (?P=name)$)",
    re.MULTILINE | re.DOTALL,
)


def write_rst(path: Path, results: dict[str, Any]) -> None:
    """Each page table between its comments in ``path``; without any, all of them in it."""
    text = path.read_text() if path.exists() else ""
    tables = {t.name: t for t in page_tables(results)}
    if not _BLOCK.search(text):
        path.write_text(rst(results))
        return

    def fill(match: re.Match[str]) -> str:
        table = tables.get(match["name"])
        body = _rst_table(table) if table else "(not measured in this run)\n"
        return f"{match['begin']}\n{body}\n{match['end']}"

    path.write_text(_BLOCK.sub(fill, text))
