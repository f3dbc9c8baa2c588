"""The harness's sections: which processes run, in which order, with which package.

Every variant (the bare app, or the app monitored by one candidate in one
profiler mode, see :mod:`bench.candidates`) runs in processes of its own.
Short bursts are alternated between live processes of every variant, the
order rotating from burst to burst, so that variants compared with each other
are measured moments apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from . import _instructions, _load, _stores
from .apps import FAST_KINDS, SLOW_KINDS, TARGET_SHARES
from .candidates import THIS_TREE, Candidate, Variant, env_for
from .delay_server import DelayServer

ROOT = Path(__file__).resolve().parent.parent


class Runner:
    def __init__(
        self,
        config: Any,
        workdir: Path,
        log: IO[str],
        candidates: dict[str, Candidate],
        variants: list[Variant],
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.log = log
        self.candidates = candidates
        self.variants = variants
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PERFALERT_")}
        self.env["PERFALERT_FILE_DIR"] = str(workdir / "reports")
        # The alert window and counters of this run alone (on defaults they would
        # go to the app's instance folder and outlive the run).
        self.env["PERFALERT_DATA_DIR"] = str(workdir / "perfalert-data")
        # The same string hashes (dict layouts) in every process: one source less of
        # differences between two processes running the same code.
        self.env["PYTHONHASHSEED"] = "0"
        if config.threshold is not None:
            self.env["PERFALERT_THRESHOLD_SECONDS"] = str(config.threshold)
        self.env.pop("BENCH_EVENTS_FILE", None)
        self.env.pop("BENCH_CALIBRATION", None)
        #: The remote service the I/O-bound slow view waits for.
        self.delay_server = DelayServer()
        self.began = time.time()
        #: (seconds into the run, 1-minute load average) at each step: how busy the machine was.
        self.loads: list[tuple[float, float]] = []

    def env_of(self, variant: Variant | None) -> dict[str, str]:
        """The environment of a child of ``variant`` (None: this tree)."""
        name = THIS_TREE if variant is None or variant.candidate is None else variant.candidate
        if variant is not None and variant.bare:
            return dict(self.env)
        return env_for(self.env, self.candidates[name])

    @property
    def monitored(self) -> list[Variant]:
        return [v for v in self.variants if not v.bare]

    def say(self, message: str) -> None:
        load = os.getloadavg()[0]
        self.loads.append((round(time.time() - self.began, 1), load))
        print(
            f"[{time.time() - self.began:5.0f}s, load {load:.1f}] {message}",
            file=sys.stderr,
            flush=True,
        )

    def child(
        self, spec: dict[str, Any], variant: Variant | None = None, timeout: float = 300.0
    ) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "bench._child", json.dumps(spec)],
            cwd=ROOT,
            env=self.env_of(variant),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"child {spec['task']} failed:\n{proc.stderr[-4000:]}")
        if proc.stderr.strip():
            self.log.write(f"-- child {spec.get('task')} {spec.get('mode')} stderr:\n")
            self.log.write(proc.stderr[-4000:] + "\n")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    def rotated(self, round_no: int, variants: list[Variant] | None = None) -> list[Variant]:
        """The variants in the order of ``round_no``: each goes first in turn."""
        items = self.variants if variants is None else variants
        k = round_no % len(items)
        return items[k:] + items[:k]

    # -- set-up -------------------------------------------------------------------------
    def calibrate(self) -> dict[str, Any]:
        """Work per part so that each slow view takes ``slow_target`` split 50/29/21."""
        scale = 0.1 if self.config.quick else 1.0
        per_unit = self.child({"task": "calibrate", "scale": scale})
        per_unit.pop("pid", None)
        per_unit.pop("threads_alive_at_end", None)
        target = self.config.slow_target
        a, b, c = (share * target for share in TARGET_SHARES)
        addr = self.delay_server.start()
        calibration = {
            "cpu": [
                max(1, round(a / per_unit["compute_tree"])),
                max(1, round(b / per_unit["crunch_numbers"])),
                max(1, round(c / per_unit["build_strings"])),
            ],
            "io": {
                "delay": round(a, 4),
                "query": max(1, round(b / per_unit["run_query"])),
                "rows": max(1, round(c / per_unit["process_rows"])),
            },
            "delay_addr": list(addr),
            "seconds_per_unit": per_unit,
        }
        self.env["BENCH_CALIBRATION"] = json.dumps(calibration)
        return calibration

    # -- fast requests in-process ---------------------------------------------------------
    def run_inprocess(self) -> list[dict[str, Any]]:
        """Bursts alternated between one live process per variant; each burst set is a round."""
        cfg = self.config
        rounds: list[dict[str, Any]] = []
        for r in range(cfg.rounds):
            self.say(f"in-process: process set {r + 1}/{cfg.rounds}")
            spec = {"task": "serve", "warmup_seconds": cfg.warmup_seconds}
            children = {
                v.label: _load.ServeChild(
                    v.label, {**spec, "mode": v.mode}, self.env_of(v), self.log, self.server_cpus
                )
                for v in self.variants
            }
            try:
                for b in range(cfg.inprocess_bursts):
                    per: dict[str, dict[str, Any]] = {label: {} for label in children}
                    for i, kind in enumerate(FAST_KINDS):
                        for v in self.rotated(r + b + i):
                            per[v.label][kind] = children[v.label].burst(
                                kind, cfg.inprocess_seconds
                            )
                    rounds.append(per)
            finally:
                for label, child in children.items():
                    alive = child.stop()
                    if rounds:
                        rounds[-1][label]["threads_alive_at_end"] = alive
        return rounds

    # -- fast requests and the slow views under gunicorn -----------------------------------
    def load(self, port: int, path: str) -> dict[str, Any]:
        seconds = self.config.gunicorn_seconds
        if self.client == "wrk":
            return _load.run_wrk(port, path, seconds, cpus=self.client_cpus)
        return _load.run_python_client(port, path, seconds)

    def run_gunicorn(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        with open(self.workdir / "gunicorn.log", "ab") as logfile:
            for worker in ("sync", "gthread"):
                out[worker] = self.run_gunicorn_worker(worker, logfile)
        return out

    def run_gunicorn_worker(self, worker: str, logfile: IO[bytes]) -> list[dict[str, Any]]:
        """Sets of servers (one per variant, all up at once); rounds of bursts on each set.

        The bursts of one kind on every server are seconds apart, on servers
        that stay up between them, so slow changes in the machine's load cancel
        out of the paired ratios. A fresh set of servers every few rounds
        averages what differs from one process to the next (memory layout).
        """
        cfg = self.config
        events = {
            v.label: self.workdir / f"events-{worker}-{v.label.replace(':', '-')}.jsonl"
            for v in self.variants
        }
        rounds: list[dict[str, Any]] = []
        for set_no in range(cfg.gunicorn_sets):
            servers: dict[str, _load.Gunicorn] = {}
            try:
                for v in self.rotated(set_no):
                    env = self.env_of(v)
                    env["BENCH_EVENTS_FILE"] = str(events[v.label])
                    servers[v.label] = _load.Gunicorn(
                        worker, v.mode, env, logfile, cpus=self.server_cpus
                    )
                    servers[v.label].start()
                self.warm_up(worker, servers)
                for r in range(cfg.gunicorn_rounds):
                    label = f"set {set_no + 1}/{cfg.gunicorn_sets}, round {r + 1}"
                    self.say(f"gunicorn {worker} {label}/{cfg.gunicorn_rounds}")
                    per = self.gunicorn_round(servers, set_no + r)
                    if r == 0:  # the slow views once per set of servers
                        for kind, path in SLOW_KINDS.items():
                            for v in self.rotated(set_no):
                                rid = f"{worker}-{v.label}-{set_no}-{kind}"
                                server = servers[v.label]
                                per[v.label][kind] = self.slow_over_http(server.port, path, rid)
                                # The event, its report and the harness's analysis run
                                # after the response; on a shared CPU they would slow
                                # the next one. A loaded machine can leave the worker
                                # idle before its events thread has begun: wait for
                                # the event's line too.
                                if not v.bare:
                                    wait_for_line(events[v.label], f'"rid": "{rid}"')
                                server.wait_idle()
                    rounds.append(per)
            finally:
                for server in servers.values():
                    server.stop()
        # The slow views' analyses, written by each server after its responses.
        for label, events_file in events.items():
            if not events_file.exists():
                continue
            by_rid = {}
            for line in events_file.read_text().splitlines():
                record = json.loads(line)
                by_rid[record.get("rid")] = record
            for per in rounds:
                for kind in SLOW_KINDS:
                    entry = per[label].get(kind)
                    if entry is not None and entry["rid"] in by_rid:
                        entry["analysis"] = by_rid[entry["rid"]]
        return rounds

    def warm_up(self, worker: str, servers: dict[str, _load.Gunicorn]) -> None:
        for label, server in servers.items():
            for path in FAST_KINDS.values():
                for _ in range(30 if not self.config.quick else 3):
                    status, _, _ = _load.http_get(server.port, path)
                    if status != 200:
                        raise RuntimeError(f"gunicorn {worker}/{label}: {path} answered {status}")

    def gunicorn_round(self, servers: dict[str, _load.Gunicorn], turn: int) -> dict[str, Any]:
        """One burst per (fast kind, variant), the variants of a kind one after the other."""
        per: dict[str, dict[str, Any]] = {label: {} for label in servers}
        for i, (kind, path) in enumerate(FAST_KINDS.items()):
            for v in self.rotated(turn + i):
                server = servers[v.label]
                cpu0, switches0 = server.worker_cpu(), server.worker_switches()
                result = self.load(server.port, path)
                n = max(result["n"], 1)
                result["cpu"] = (server.worker_cpu() - cpu0) / n
                result["switches"] = (server.worker_switches() - switches0) / n
                per[v.label][kind] = result
        return per

    def slow_over_http(self, port: int, path: str, rid: str) -> dict[str, Any]:
        status, body, seconds = _load.http_get(port, f"{path}?rid={rid}")
        view = json.loads(body)
        return {
            "status": status,
            "response_seconds": seconds,
            "view_seconds": view["view_seconds"],
            "true_parts": {name: s for name, _, _, s in view["parts"]},
            "rid": rid,
            "analysis": None,
        }

    @property
    def server_cpus(self) -> set[int] | None:
        """With two or more CPUs: servers on the last one, the load generator on the others."""
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        return {cpus[-1]} if len(cpus) >= 2 else None

    @property
    def client_cpus(self) -> set[int] | None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        return set(cpus[:-1]) if len(cpus) >= 2 else None

    @property
    def client(self) -> str:
        choice: str = self.config.client
        if choice == "auto":
            return "wrk" if _load.wrk_available() else "python"
        return choice

    # -- the slow request in-process --------------------------------------------------------
    def run_slow(self) -> list[dict[str, Any]]:
        """Per process: the app monitored by one variant and bare, slow requests alternated.

        Each (monitored, bare) pair of one process is a round.
        """
        cfg = self.config
        rounds: list[dict[str, Any]] = []
        for r in range(cfg.slow_rounds):
            self.say(f"slow requests round {r + 1}/{cfg.slow_rounds}")
            for kind in SLOW_KINDS:
                for v in self.rotated(r, self.monitored):
                    result = self.child(
                        {"task": "slow", "mode": v.mode, "kind": kind, "pairs": cfg.slow_pairs},
                        v,
                    )
                    for monitored, bare in zip(result["monitored"], result["bare"], strict=True):
                        rounds.append({"bare": {kind: bare}, v.label: {kind: monitored}})
        return rounds

    # -- memory, threads, the timer alone, the sampler, instructions, stores -------------------
    def run_memory(self) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {}
        scenarios = {
            "bare": ("bare", {}),
            "sampling": ("sampling", {}),
            "sampling, every request slow": (
                "sampling",
                {"PERFALERT_THRESHOLD_SECONDS": "0.000001", "PERFALERT_FILE_ENABLED": "false"},
            ),
        }
        saved = dict(self.env)
        try:
            for name, (mode, extra) in scenarios.items():
                self.say(f"memory: {name}")
                self.env = dict(saved)
                self.env.update(extra)
                out[name] = self.child(
                    {
                        "task": "memory",
                        "mode": mode,
                        "endpoints": cfg.memory_endpoints,
                        "checkpoints": list(cfg.memory_checkpoints),
                    },
                    Variant(mode, mode, None),
                    timeout=900,
                )
        finally:
            self.env = saved
        return out

    def run_threads(self) -> list[dict[str, Any]]:
        cfg = self.config
        rounds: list[dict[str, Any]] = []
        for r in range(cfg.thread_rounds):
            self.say(f"thread effect round {r + 1}/{cfg.thread_rounds}")
            per: dict[str, Any] = {}
            order = [False, True] if r % 2 == 0 else [True, False]
            for started in order:
                per["thread" if started else "no_thread"] = self.child(
                    {
                        "task": "fast",
                        "mode": "bare",
                        "kinds": ["sqlite", "json"],
                        "seconds": cfg.inprocess_seconds,
                        "warmup_seconds": cfg.warmup_seconds,
                        "start_thread": started,
                    },
                    self.variants[0],
                )
            rounds.append(per)
        return rounds

    def run_wrapper(self) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {}
        for v in self.monitored:
            self.say(f"request timer alone: {v.label}")
            out[v.label] = self.child(
                {
                    "task": "wrapper",
                    "mode": v.mode,
                    "blocks": cfg.wrapper_blocks,
                    "block_size": cfg.wrapper_block_size,
                },
                v,
            )
        return out

    def run_sampler(self) -> list[dict[str, Any]]:
        """A CPU-bound call sampled from the start, on the main thread and on another.

        Every sampling variant (this tree's, each candidate's) against the same
        bare runs.
        """
        cfg = self.config
        units = json.loads(self.env["BENCH_CALIBRATION"])["cpu"][0] * 2
        threshold = 0.01 if not cfg.quick else 0.001
        sampling = [v for v in self.variants if v.bare or v.mode == "sampling"]
        rounds: list[dict[str, Any]] = []
        for r in range(cfg.sampler_rounds):
            self.say(f"sampler on a CPU-bound call, round {r + 1}/{cfg.sampler_rounds}")
            per: dict[str, Any] = {}
            for where in ("main", "thread"):
                for v in self.rotated(r, sampling):
                    per[f"{where}/{v.label}"] = self.child(
                        {
                            "task": "sampler",
                            "mode": v.mode,
                            "where": where,
                            "units": units,
                            "threshold": threshold,
                        },
                        v,
                    )
            rounds.append(per)
        return rounds

    def run_instructions(self) -> dict[str, Any]:
        """Instructions per request under callgrind: bare and every variant but pyinstrument."""
        if not _instructions.available():
            return {"skipped": "valgrind is not installed"}
        cfg = self.config
        # pyinstrument would take hours under callgrind; a quick run counts the
        # sampling variants only.
        skipped = ("pyinstrument", "none") if cfg.quick else ("pyinstrument",)
        chosen = [v for v in self.variants if v.mode not in skipped]
        self.say(f"instructions under callgrind: {', '.join(v.label for v in chosen)}")
        kinds = list(cfg.instruction_kinds)
        specs = {
            v.label: (
                {
                    "task": "instructions",
                    "mode": v.mode,
                    "kinds": kinds,
                    "requests": cfg.instruction_requests,
                    "warmup": cfg.instruction_warmup,
                },
                self.env_of(v),
            )
            for v in chosen
        }
        parallel = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        per_request = _instructions.run_all(specs, self.workdir / "callgrind", parallel)
        return {"requests": cfg.instruction_requests, "per_request": per_request}

    def run_stores(self) -> dict[str, Any]:
        self.say("alert stores: one claim each")
        return _stores.run_stores(
            self.env_of(None), self.config.store_claims, self.config.store_warmup
        )


def wait_for_line(path: Path, text: str, timeout: float = 30.0) -> None:
    """Wait until a line of ``path`` contains ``text``, for at most ``timeout`` seconds.

    A line that never comes is left to the results to show (the request has no event).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if text in path.read_text():
                return
        except OSError:  # not written yet
            pass
        time.sleep(0.02)
