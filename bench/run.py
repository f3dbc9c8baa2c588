"""The Flask-PerfAlert benchmark: ``python bench/run.py`` (``--quick`` for a smoke run).

Measures the same app (``bench/apps.py``) bare and monitored in each profiler
mode, every mode in a process of its own, with short bursts alternated
between live processes (the order of the modes rotates from burst to burst):

* in-process: requests through the WSGI callable, per-request latency;
* gunicorn (sync and gthread, one worker) on 127.0.0.1 under a closed-loop
  load generator (``wrk``, or a Python client where ``wrk`` is missing);
* slow requests, monitored and bare in turn within one process (the first
  slow request of the process a monitored one): their duration, and the
  profile's shares of three part functions against the true shares measured
  in the view itself;
* memory with 100k distinct URLs over thousands of endpoints;
* the cost of a process having started one thread;
* the request timer alone around a trivial WSGI app.

Writes ``bench-results/results-<time>.json`` and prints the tables;
``--rst FILE`` writes them as reStructuredText (for docs/performance.rst).
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from bench import _load, report  # noqa: E402
from bench.apps import (  # noqa: E402
    FAST_KINDS,
    MODES,
    PROFILER_MODES,
    SLOW_KINDS,
    TARGET_SECONDS,
    TARGET_SHARES,
)


@dataclass
class Config:
    quick: bool = False
    #: In-process: sets of fresh processes (one per mode), and bursts per kind in each.
    rounds: int = 5
    inprocess_bursts: int = 4
    inprocess_seconds: float = 0.15
    warmup_seconds: float = 0.15
    #: gunicorn: sets of servers (one per mode, fresh processes), and rounds of one
    #: load burst per kind and mode on each set; the slow views once per set.
    gunicorn_sets: int = 3
    gunicorn_rounds: int = 3
    gunicorn_seconds: float = 1.0
    #: Processes per (slow view, mode), and slow requests of each kind (monitored, bare) in each.
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
    client: str = "auto"

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
            threshold=0.1,
            memory_requests=600,
            memory_checkpoints=(200, 600),
            memory_endpoints=50,
            thread_rounds=1,
            wrapper_blocks=2,
            wrapper_block_size=200,
            sampler_rounds=1,
            client="python",
        )


class ServeChild:
    """A ``serve`` child (``bench/_child.py``): one mode's app, bursts on command."""

    def __init__(self, runner: Runner, mode: str) -> None:
        spec = {"task": "serve", "mode": mode, "warmup_seconds": runner.config.warmup_seconds}
        cpus = runner.server_cpus
        runner.log.flush()
        self.mode = mode
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._child", json.dumps(spec)],
            cwd=ROOT,
            env=runner.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=runner.log,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        self._read()  # {"ready": true} once warmed up

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(30)
            raise RuntimeError(f"serve child {self.mode} ended (exit {self.proc.returncode})")
        result: dict[str, Any] = json.loads(line)
        return result

    def burst(self, kind: str, seconds: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"kind": kind, "seconds": seconds}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def stop(self) -> int | None:
        """End the child; the number of threads it had at the end."""
        alive = None
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"stop": True}) + "\n")
            self.proc.stdin.flush()
            alive = self._read().get("threads_alive_at_end")
            self.proc.wait(30)
        except (OSError, RuntimeError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait(10)
        return alive


class Runner:
    def __init__(self, config: Config, workdir: Path, log: Any) -> None:
        self.config = config
        self.workdir = workdir
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PERFALERT_")}
        self.env["PERFALERT_FILE_DIR"] = str(workdir / "reports")
        # The default store (an SQLite file) in the run's own folder: every run starts
        # with an empty window, and nothing is written into the repository.
        self.env["PERFALERT_DATA_DIR"] = str(workdir / "perfalert-data")
        # The same string hashes (dict layouts) in every process: one source less of
        # differences between two processes running the same code.
        self.env["PYTHONHASHSEED"] = "0"
        if config.threshold is not None:
            self.env["PERFALERT_THRESHOLD_SECONDS"] = str(config.threshold)
        self.env.pop("BENCH_EVENTS_FILE", None)
        self.env.pop("BENCH_CALIBRATION", None)
        self.delay_server: subprocess.Popen[str] | None = None
        self.began = time.time()
        #: (seconds into the run, 1-minute load average) at each step: how busy the machine was.
        self.loads: list[tuple[float, float]] = []

    def say(self, message: str) -> None:
        load = os.getloadavg()[0]
        self.loads.append((round(time.time() - self.began, 1), load))
        print(
            f"[{time.time() - self.began:5.0f}s, load {load:.1f}] {message}",
            file=sys.stderr,
            flush=True,
        )

    def child(self, spec: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "bench._child", json.dumps(spec)],
            cwd=ROOT,
            env=self.env,
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

    # -- set-up -------------------------------------------------------------------------
    def start_delay_server(self) -> tuple[str, int]:
        self.delay_server = subprocess.Popen(
            [sys.executable, "-m", "bench.delay_server", "--lifetime", "3600"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.delay_server.stdout is not None
        port = int(self.delay_server.stdout.readline())
        return ("127.0.0.1", port)

    def stop_delay_server(self) -> None:
        if self.delay_server is not None:
            assert self.delay_server.stdin is not None
            self.delay_server.stdin.close()
            try:
                self.delay_server.wait(10)
            except subprocess.TimeoutExpired:
                self.delay_server.kill()
                self.delay_server.wait(5)
            self.delay_server = None

    def calibrate(self) -> dict[str, Any]:
        """Work per part so that each slow view takes ``slow_target`` split 50/29/21."""
        scale = 0.1 if self.config.quick else 1.0
        per_unit = self.child({"task": "calibrate", "scale": scale})
        per_unit.pop("pid", None)
        per_unit.pop("threads_alive_at_end", None)
        target = self.config.slow_target
        a, b, c = (share * target for share in TARGET_SHARES)
        addr = self.start_delay_server()
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

    def rotated(self, round_no: int) -> list[str]:
        k = round_no % len(MODES)
        return list(MODES[k:] + MODES[:k])

    # -- in-process -------------------------------------------------------------------
    def run_inprocess(self) -> list[dict[str, Any]]:
        """Bursts alternated between one live process per mode; each burst set is a round."""
        cfg = self.config
        rounds: list[dict[str, Any]] = []
        for r in range(cfg.rounds):
            self.say(f"in-process: process set {r + 1}/{cfg.rounds}")
            children = {mode: ServeChild(self, mode) for mode in MODES}
            try:
                for b in range(cfg.inprocess_bursts):
                    per_mode: dict[str, dict[str, Any]] = {mode: {} for mode in MODES}
                    for i, kind in enumerate(FAST_KINDS):
                        for mode in self.rotated(r + b + i):
                            per_mode[mode][kind] = children[mode].burst(kind, cfg.inprocess_seconds)
                    rounds.append(per_mode)
            finally:
                for mode, child in children.items():
                    alive = child.stop()
                    if rounds:
                        rounds[-1][mode]["threads_alive_at_end"] = alive
        return rounds

    # -- gunicorn ------------------------------------------------------------------------
    def load(self, port: int, path: str) -> dict[str, Any]:
        seconds = self.config.gunicorn_seconds
        if self.client == "wrk":
            return _load.run_wrk(port, path, seconds, cpus=self.client_cpus)
        return _load.run_python_client(port, path, seconds)

    def run_gunicorn(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {"sync": [], "gthread": []}
        logfile = open(self.workdir / "gunicorn.log", "ab")  # noqa: SIM115
        try:
            for worker in ("sync", "gthread"):
                out[worker] = self.run_gunicorn_worker(worker, logfile)
        finally:
            logfile.close()
        return out

    def run_gunicorn_worker(self, worker: str, logfile: Any) -> list[dict[str, Any]]:
        """Sets of servers (one per mode, all up at once); rounds of bursts on each set.

        The bare and the monitored burst of a kind are seconds apart, on servers
        that stay up between them, so slow changes in the machine's load cancel
        out of the paired ratios. A fresh set of servers every few rounds
        averages what differs from one process to the next (memory layout).
        """
        cfg = self.config
        events = {mode: self.workdir / f"events-{worker}-{mode}.jsonl" for mode in MODES}
        rounds: list[dict[str, Any]] = []
        for set_no in range(cfg.gunicorn_sets):
            servers: dict[str, _load.Gunicorn] = {}
            try:
                for mode in self.rotated(set_no):
                    env = dict(self.env)
                    env["BENCH_EVENTS_FILE"] = str(events[mode])
                    servers[mode] = _load.Gunicorn(
                        worker, mode, env, logfile, cpus=self.server_cpus
                    )
                    servers[mode].start()
                self.warm_up(worker, servers)
                for r in range(cfg.gunicorn_rounds):
                    label = f"set {set_no + 1}/{cfg.gunicorn_sets}, round {r + 1}"
                    self.say(f"gunicorn {worker} {label}/{cfg.gunicorn_rounds}")
                    per_mode = self.gunicorn_round(servers, set_no + r)
                    if r == 0:  # the slow views once per set of servers
                        for kind, path in SLOW_KINDS.items():
                            for mode in self.rotated(set_no):
                                rid = f"{worker}-{mode}-{set_no}-{kind}"
                                per_mode[mode][kind] = self.slow_over_http(
                                    servers[mode].port, path, rid
                                )
                                # The event, its report and the harness's analysis run
                                # after the response; on a shared CPU they would slow
                                # the next one.
                                servers[mode].wait_idle()
                    rounds.append(per_mode)
            finally:
                for server in servers.values():
                    server.stop()
        # The slow views' analyses, written by each server after its responses.
        for mode, events_file in events.items():
            if not events_file.exists():
                continue
            by_rid = {}
            for line in events_file.read_text().splitlines():
                record = json.loads(line)
                by_rid[record.get("rid")] = record
            for per_mode in rounds:
                for kind in SLOW_KINDS:
                    entry = per_mode[mode].get(kind)
                    if entry is not None and entry["rid"] in by_rid:
                        entry["analysis"] = by_rid[entry["rid"]]
        return rounds

    def warm_up(self, worker: str, servers: dict[str, _load.Gunicorn]) -> None:
        for mode, server in servers.items():
            for path in FAST_KINDS.values():
                for _ in range(30 if not self.config.quick else 3):
                    status, _, _ = _load.http_get(server.port, path)
                    if status != 200:
                        raise RuntimeError(f"gunicorn {worker}/{mode}: {path} answered {status}")

    def gunicorn_round(self, servers: dict[str, _load.Gunicorn], turn: int) -> dict[str, Any]:
        """One burst per (fast kind, mode), the modes of a kind one after the other."""
        per_mode: dict[str, dict[str, Any]] = {mode: {} for mode in MODES}
        for i, (kind, path) in enumerate(FAST_KINDS.items()):
            for mode in self.rotated(turn + i):
                server = servers[mode]
                cpu0, switches0 = server.worker_cpu(), server.worker_switches()
                result = self.load(server.port, path)
                n = max(result["n"], 1)
                result["cpu"] = (server.worker_cpu() - cpu0) / n
                result["switches"] = (server.worker_switches() - switches0) / n
                per_mode[mode][kind] = result
        return per_mode

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

    # -- the slow request in-process ----------------------------------------------------------
    def run_slow(self) -> list[dict[str, Any]]:
        """Per process: the app monitored in one mode and bare, slow requests alternated.

        Each (monitored, bare) pair of one process is a round.
        """
        cfg = self.config
        rounds: list[dict[str, Any]] = []
        for r in range(cfg.slow_rounds):
            self.say(f"slow requests round {r + 1}/{cfg.slow_rounds}")
            for kind in SLOW_KINDS:
                for mode in self.rotated(r):
                    if mode == "bare":
                        continue
                    result = self.child(
                        {"task": "slow", "mode": mode, "kind": kind, "pairs": cfg.slow_pairs}
                    )
                    for monitored, bare in zip(result["monitored"], result["bare"], strict=True):
                        rounds.append({"bare": {kind: bare}, mode: {kind: monitored}})
        return rounds

    # -- memory, threads, the timer alone -----------------------------------------------------
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
                        "seconds": self.config.inprocess_seconds,
                        "warmup_seconds": self.config.warmup_seconds,
                        "start_thread": started,
                    }
                )
            rounds.append(per)
        return rounds

    def run_wrapper(self) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {}
        for mode in PROFILER_MODES:
            self.say(f"request timer alone: {mode}")
            out[mode] = self.child(
                {
                    "task": "wrapper",
                    "mode": mode,
                    "blocks": cfg.wrapper_blocks,
                    "block_size": cfg.wrapper_block_size,
                }
            )
        return out

    def run_sampler(self) -> list[dict[str, Any]]:
        """A CPU-bound call sampled from the start: main thread (SIGALRM) vs another thread."""
        cfg = self.config
        units = json.loads(self.env["BENCH_CALIBRATION"])["cpu"][0] * 2
        threshold = 0.01 if not cfg.quick else 0.001
        rounds: list[dict[str, Any]] = []
        for r in range(cfg.sampler_rounds):
            self.say(f"sampler on a CPU-bound call, round {r + 1}/{cfg.sampler_rounds}")
            per: dict[str, Any] = {}
            for where in ("main", "thread"):
                order = ("bare", "sampling") if r % 2 == 0 else ("sampling", "bare")
                for mode in order:
                    per[f"{where}/{mode}"] = self.child(
                        {
                            "task": "sampler",
                            "mode": mode,
                            "where": where,
                            "units": units,
                            "threshold": threshold,
                        }
                    )
            rounds.append(per)
        return rounds

    @property
    def client(self) -> str:
        choice = self.config.client
        if choice == "auto":
            return "wrk" if _load.wrk_available() else "python"
        return choice


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
        "--only",
        default="inprocess,gunicorn,slow,threads,wrapper,sampler,memory",
        help="comma-separated sections to run",
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
        results["summary"] = report.summarise(results)
        print(report.markdown(results))
        if args.rst:
            write_rst(args.rst, results)
        return 0

    config = Config.quick_config() if args.quick else Config()
    if args.rounds:
        config.rounds = args.rounds
    if args.gunicorn_sets:
        config.gunicorn_sets = args.gunicorn_sets
    if args.gunicorn_rounds:
        config.gunicorn_rounds = args.gunicorn_rounds
    if args.slow_rounds:
        config.slow_rounds = args.slow_rounds
    if args.client:
        config.client = args.client
    sections = [s.strip() for s in args.only.split(",") if s.strip()]

    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="perfalert-bench-"))
    began = time.time()
    results: dict[str, Any] = {"machine": machine_info(), "config": asdict(config)}
    with open(args.out / "bench.log", "w") as log:
        runner = Runner(config, workdir, log)
        results["config"]["client_used"] = runner.client if "gunicorn" in sections else None
        steps = {
            "inprocess": runner.run_inprocess,
            "gunicorn": runner.run_gunicorn,
            "slow": runner.run_slow,
            "threads": runner.run_threads,
            "wrapper": runner.run_wrapper,
            "sampler": runner.run_sampler,
            "memory": runner.run_memory,
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
            runner.stop_delay_server()
            shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["load_during_run"] = runner.loads
    results["seconds"] = time.time() - began
    results["summary"] = report.summarise(results)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = args.out / f"results-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    print(report.markdown(results))
    print(f"\nResults: {path} ({results['seconds']:.0f} s)")
    if args.rst:
        write_rst(args.rst, results)
        print(f"RST tables: {args.rst}")
    return 0


BEGIN_MARK = ".. bench-tables-begin"
END_MARK = ".. bench-tables-end"


def write_rst(path: Path, results: dict[str, Any]) -> None:
    """Write the tables to ``path``; in a page with the two marker comments, between them."""
    tables = report.rst(results)
    if path.exists():
        text = path.read_text()
        if BEGIN_MARK in text and END_MARK in text:
            head, _, rest = text.partition(BEGIN_MARK)
            _, _, tail = rest.partition(END_MARK)
            path.write_text(f"{head}{BEGIN_MARK}\n\n{tables}\n{END_MARK}{tail}")
            return
    path.write_text(tables)


if __name__ == "__main__":
    sys.exit(main())
