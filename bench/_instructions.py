"""Instructions per request under callgrind: where wall-clock noise hides a 1 % effect.

A benchmark child (:func:`task_instructions`) runs under ``valgrind
--tool=callgrind --dump-before=getppid``: it warms each endpoint kind up, then
calls ``os.getppid()`` around a fixed number of requests, and callgrind
writes the counts of each stretch to a file of its own. The request thread's
instructions of the measured stretch, divided by the requests, are the
figure; they do not depend on the machine's load, so two variants can be
told apart at a fraction of a per cent. Threads are counted apart
(``--separate-threads``): a sampler thread's wake-ups follow the wall clock,
which callgrind slows down some fifty-fold, so they would be overcounted.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import _internals, apps
from ._wsgi import make_caller, trivial_wsgi_app

ROOT = Path(__file__).resolve().parent.parent

#: The request timer around the least a Werkzeug app does (bare: that app alone).
TIMER_KIND = "timer"


def available() -> bool:
    return shutil.which("valgrind") is not None


# -- in the child, under callgrind ---------------------------------------------------------


def task_instructions(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm-up, then ``os.getppid()`` (a dump), ``requests`` requests, a dump, per kind."""
    app = apps.create_app(spec["mode"])
    requests, warmup = spec["requests"], spec["warmup"]
    kinds = list(spec["kinds"])
    # The timer's own kind replaces the app behind the timer: it goes last.
    kinds.sort(key=lambda kind: kind == TIMER_KIND)
    for kind in kinds:
        if kind == TIMER_KIND:
            if spec["mode"] == "bare":
                call = make_caller(trivial_wsgi_app)
            else:
                _internals.timer_state(app).wrapped = trivial_wsgi_app
                call = make_caller(app)
            path = "/json"
        else:
            call = make_caller(app)
            path = apps.FAST_KINDS[kind]
        for _ in range(warmup):
            call(path)
        _internals.settle()
        gc.collect()
        if spec.get("freeze"):
            gc.freeze()
        os.getppid()  # callgrind dumps what was counted so far
        for _ in range(requests):
            call(path)
        os.getppid()
    return {"kinds": kinds, "requests": requests}


# -- in the harness ---------------------------------------------------------------------


def _totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def run_one(spec: dict[str, Any], env: dict[str, str], folder: Path) -> dict[str, Any]:
    """One child under callgrind: instructions per request of each kind (request thread)."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        "--dump-before=getppid",
        f"--callgrind-out-file={folder}/cg.%p",
        sys.executable,
        "-m",
        "bench._child",
        json.dumps(spec),
    ]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"callgrind child {spec['mode']} failed:\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    pid = result["pid"]
    # cg.<pid>.<part>-01: the main thread's counts from one dump to the next.
    parts: dict[int, int] = {}
    for path in folder.glob(f"cg.{pid}.*-01"):
        match = re.fullmatch(rf"cg\.{pid}\.(\d+)-01", path.name)
        if match:
            parts[int(match.group(1))] = _totals(path)
    kinds = result["kinds"]
    if sorted(parts) != list(range(1, 2 * len(kinds) + 1)):
        raise RuntimeError(f"callgrind child {spec['mode']}: unexpected dumps {sorted(parts)}")
    requests = result["requests"]
    return {
        kind: parts[2 * i + 2] / requests  # part 2i+1: warm-up; 2i+2: the requests
        for i, kind in enumerate(kinds)
    }


def run_all(
    specs: dict[str, tuple[dict[str, Any], dict[str, str]]], folder: Path, parallel: int
) -> dict[str, dict[str, Any]]:
    """Every variant's child (``label: (spec, env)``), ``parallel`` at a time.

    Instruction counts do not depend on the load, so the children may share the CPUs.
    """
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {
            label: pool.submit(run_one, spec, env, folder / label.replace(":", "-"))
            for label, (spec, env) in specs.items()
        }
        return {label: future.result() for label, future in futures.items()}
