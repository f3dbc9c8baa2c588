"""The two stack readers: the same stacks, and the compiled one safe under any gc setting."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from flask import Flask
from profiles import spin
from servers import wait_for

from flask_perfalert import PerfAlert, SlowRequestEvent
from flask_perfalert.profiling import _threads, stacks
from flask_perfalert.profiling.session import line_identifier, stack_of

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def compiled() -> ModuleType:
    """The compiled reader; CI builds it, so there its absence fails the test."""
    try:
        from flask_perfalert.profiling import _stackreader
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the compiled stack reader was not built")
        pytest.skip("the compiled stack reader is not built here (no C compiler?)")
    _stackreader.set_identifier_factory(line_identifier)
    return _stackreader


class Parked:
    """A thread parked in a known stack: a method, a generator, recursion."""

    def __init__(self, depth: int) -> None:
        self.release = threading.Event()
        self.parked = threading.Event()
        self.depth = depth
        self.thread = threading.Thread(target=lambda: list(self.generate()))

    def generate(self) -> Iterator[None]:
        yield self.recurse(self.depth)

    def recurse(self, n: int) -> None:
        if n:
            return self.recurse(n - 1)
        self.parked.set()
        self.release.wait(10)

    def __enter__(self) -> int:
        self.thread.start()
        assert self.parked.wait(10)
        time.sleep(0.01)  # into Event.wait's own frames
        assert self.thread.ident is not None
        return self.thread.ident

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join()


@pytest.mark.parametrize("depth", [0, 30, 500])
def test_both_readers_read_the_same_stack(compiled: ModuleType, depth: int) -> None:
    with Parked(depth) as ident:
        frames = _threads.read_stacks((ident,), 4)
        assert frames is not None
        expected = stack_of(frames[1][ident])
        read = compiled.read_stacks((ident,))
    assert read is not None
    count, by_thread = read
    assert count >= 2 and by_thread[ident] == expected
    functions = [info.split("\x00", 1)[0] for info in expected]
    assert functions[0] == "_bootstrap" and functions.count("recurse") == depth + 1
    assert functions[-1] == "wait" and "generate" in functions
    if sys.version_info >= (3, 11):
        # The method's class is in its identifier, as pyinstrument writes it; it comes
        # from the code's qualified name, which Python 3.10 does not have.
        assert any("\x01cParked" in info for info in expected if info.startswith("recurse\x00"))


class Stepping:
    """A thread that parks at one depth, then at another, then at the first again."""

    def __init__(self, depths: tuple[int, ...]) -> None:
        self.depths = depths
        self.go = threading.Event()
        self.parked = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        for depth in self.depths:
            self.descend(depth)

    def descend(self, n: int) -> None:
        if n:
            return self.descend(n - 1)
        self.parked.set()
        self.go.wait(10)
        self.go.clear()

    def next(self) -> None:
        self.parked.clear()
        self.go.set()
        assert self.parked.wait(10)
        time.sleep(0.01)


def test_a_stack_that_changes_between_reads_is_read_as_it_is_now(compiled: ModuleType) -> None:
    # The compiled reader reuses what a thread's stack shares with its previous read.
    stepping = Stepping((30, 5, 30, 30))
    stepping.thread.start()
    assert stepping.parked.wait(10)
    time.sleep(0.01)
    ident = stepping.thread.ident
    assert ident is not None
    try:
        for step in range(4):
            first = compiled.read_stacks((ident,))
            again = compiled.read_stacks((ident,))
            frames = _threads.read_stacks((ident,), 4)
            assert first is not None and again is not None and frames is not None
            expected = stack_of(frames[1][ident])
            assert first[1][ident] == again[1][ident] == expected
            names = [info.split("\x00", 1)[0] for info in expected]
            assert names.count("descend") == stepping.depths[step] + 1
            if step < 3:
                stepping.next()
    finally:
        stepping.go.set()
        stepping.thread.join()


def test_a_thread_that_is_gone_or_unknown_is_left_out(compiled: ModuleType) -> None:
    read = compiled.read_stacks((threading.get_ident(), 1))
    assert read is not None and set(read[1]) == {threading.get_ident()}
    assert read[1][threading.get_ident()][-1].startswith("test_a_thread_that_is_gone")


COMPILED_READ_RACE = """
import gc, sys, threading, time
from flask_perfalert.profiling import _stackreader, stacks

assert stacks.READER == "compiled", stacks.READER
stop = False
def leaf():
    return [object() for _ in range(20)]
def middle(n):
    return leaf() if n == 0 else middle(n - 1)
def app_thread():
    # Deep calls and returns: the thread's frame memory is given back and reused.
    while not stop:
        middle(300)
        middle(5)

class Finalized:
    # Cyclic garbage whose finalizer lets other threads run, as any app's may.
    def __init__(self):
        self.me = self
    def __del__(self):
        time.sleep(0)

threads = [threading.Thread(target=app_thread, daemon=True) for _ in range(3)]
for thread in threads:
    thread.start()
gc.set_threshold(1)
ids = tuple(thread.ident for thread in threads)
reads = refused = 0
end = time.time() + 2
while time.time() < end:
    Finalized()
    read = stacks.read_stacks(ids)
    if read is None:
        refused += 1
        continue
    for stack in read[1].values():
        assert all(isinstance(info, str) and "\\x00" in info for info in stack), stack
        # Whatever was reused from the thread's previous read, the stack is its own.
        names = [info.split("\\x00", 1)[0] for info in stack]
        if "app_thread" in names:
            below = names[names.index("app_thread") + 1 :]
            assert set(below) <= {"middle", "leaf", "<listcomp>"}, names
    reads += 1
stop = True
print(reads, refused)
"""


def test_the_compiled_reader_reads_safely_with_a_collection_at_every_allocation(
    compiled: ModuleType,
) -> None:
    # gc.set_threshold(1): a collection can start at any allocation, with finalizers
    # that let other threads run. The compiled reader makes no object while it walks,
    # so every read is made, and none corrupts memory.
    out = subprocess.run(
        [sys.executable, "-c", COMPILED_READ_RACE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FLASK_PERFALERT_PURE_PYTHON": ""},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    reads, refused = map(int, out.stdout.split()[-2:])
    assert reads > 20 and refused == 0, out.stdout


@pytest.fixture
def gc_threshold() -> Iterator[None]:
    saved, enabled = gc.get_threshold(), gc.isenabled()
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        if enabled:
            gc.enable()
        else:
            gc.disable()


@pytest.mark.usefixtures("gc_threshold")
@pytest.mark.parametrize("setting", ["disabled", "frozen", 1, 10, 700, 100_000])
def test_any_gc_setting_gives_call_trees(
    app: Flask, events: list[SlowRequestEvent], setting: str | int
) -> None:
    if stacks.READER != "compiled" and setting in (1, 10) and _threads.NEEDS_GC_HEADROOM:
        pytest.skip("the pure-Python reader on 3.11 refuses these: see the next test")
    PerfAlert(app, threshold_seconds=0.05, file_enabled=False)

    @app.route("/work")
    def work() -> str:
        return str(spin(0.12))

    if setting == "disabled":
        gc.disable()
    elif setting == "frozen":
        gc.freeze()
    else:
        assert isinstance(setting, int)
        gc.set_threshold(setting)
    try:
        assert app.test_client().get("/work").status_code == 200
    finally:
        gc.unfreeze()
    (event,) = events
    assert event.profile is not None, event.profile_note
    assert "spin" in [frame.function for frame in event.hot_frames(3)]


PURE_READER_SMALL_THRESHOLD = """
import gc, logging, sys
sys.path.insert(0, sys.argv[1])
from flask import Flask
from profiles import spin
from flask_perfalert import PerfAlert, perf_slow_request
from flask_perfalert.profiling import stacks

assert stacks.READER == "python", stacks.READER
logging.basicConfig(level=logging.WARNING, format="LOG %(message)s")
app = Flask(__name__, instance_path=sys.argv[2])
app.testing = True
PerfAlert(app, threshold_seconds=0.05, file_enabled=False)
notes = []
def receive(sender, event, **extra):
    notes.append(event.profile_note)
perf_slow_request.connect(receive, app)

@app.route("/a")
def a():
    return str(spin(0.12))

@app.route("/b")
def b():
    return str(spin(0.12))

gc.set_threshold(10)
client = app.test_client()
for path in ("/a", "/b"):
    client.get(path, buffered=True)
gc.set_threshold(700)
for note in notes:
    print("NOTE", note)
"""


@pytest.mark.skipif(not _threads.NEEDS_GC_HEADROOM, reason="only CPython 3.11's reader refuses")
def test_a_threshold_too_small_for_the_pure_reader_is_said_once_and_in_the_report(
    tmp_path: Path,
) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PURE_READER_SMALL_THRESHOLD, str(ROOT / "tests"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "FLASK_PERFALERT_PURE_PYTHON": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    logs = [line for line in out.stderr.splitlines() if "cannot sample stacks" in line]
    assert len(logs) == 1 and "gc.set_threshold" in logs[0] and "(10," in logs[0], out.stderr
    notes = [line for line in out.stdout.splitlines() if line.startswith("NOTE")]
    assert len(notes) == 2 and all("threshold (10" in note for note in notes), out.stdout


def test_a_free_threaded_build_is_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    real = stacks.sysconfig.get_config_var
    monkeypatch.setattr(
        stacks.sysconfig,
        "get_config_var",
        lambda name: 1 if name == "Py_GIL_DISABLED" else real(name),
    )
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert stacks._free_threaded()
    # Started with PYTHON_GIL=1, a free-threaded build has the GIL: reads are safe.
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert not stacks._free_threaded()


def test_on_a_free_threaded_build_slow_requests_alert_without_a_call_tree(
    app: Flask,
    events: list[SlowRequestEvent],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flask_perfalert import extension
    from flask_perfalert.profiling import policy

    reason = (
        "sampling is off on free-threaded CPython: reading another thread's frames is unsafe there"
    )
    monkeypatch.setattr(stacks, "UNAVAILABLE", reason)
    monkeypatch.setattr(policy, "UNAVAILABLE", reason)
    monkeypatch.setattr(extension, "_checked", False)
    with caplog.at_level(logging.WARNING, "flask_perfalert"):
        PerfAlert(app, threshold_seconds=0.05, file_enabled=False)
        PerfAlert(Flask("another"), file_enabled=False)

    @app.route("/slow")
    def slow() -> str:
        return str(spin(0.08))

    client = app.test_client()
    client.get("/slow")
    client.get("/slow")
    wait_for(lambda: events)
    event = events[0]
    assert event.profile is None and event.profile_note == f"No profile: {reason}."
    # Said once per process, naming the cause and what to do instead.
    lines = [r.getMessage() for r in caplog.records if "free-threaded" in r.getMessage()]
    assert len(lines) == 1 and "PERFALERT_PROFILER" in lines[0]
