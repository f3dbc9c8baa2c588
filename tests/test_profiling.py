"""Profiles: the default sampler, the other modes, and where profiles must be right."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from flask import Flask
from profiles import call_tree_functions, spin
from servers import Gunicorn, wait_for
from werkzeug.serving import make_server

from flask_perfalert import PerfAlert, PerfAlertSettings, SlowRequestEvent
from flask_perfalert.profiling import _threads, policy
from flask_perfalert.profiling import session as compat
from flask_perfalert.profiling._threads import frames_of
from flask_perfalert.profiling.measurement import MAX_DISTINCT_STACKS, Measurement
from flask_perfalert.profiling.policy import ProfilingPolicy
from flask_perfalert.profiling.sampler import SAMPLER, Sampler
from flask_perfalert.profiling.session import stack_of
from flask_perfalert.profiling.state import ACTIVE, InFlight, TimerState, WatchCall
from flask_perfalert.stats import Stats

TESTS = Path(__file__).parent


def crunch_numbers(seconds: float) -> int:
    return spin(seconds)


def tree_functions(event: SlowRequestEvent) -> list[str]:
    assert event.profile is not None, event.profile_note
    return call_tree_functions(event)


def only(events: list[SlowRequestEvent]) -> SlowRequestEvent:
    assert len(events) == 1, [e.summary() for e in events]
    return events[0]


# -- the default mode -----------------------------------------------------------------


def test_the_first_slow_request_has_a_profile_that_names_the_culprit(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    PerfAlert(app, threshold_seconds=0.1, file_enabled=False)

    @app.route("/report")
    def report() -> str:
        return str(crunch_numbers(0.2))

    assert app.test_client().get("/report").status_code == 200
    event = only(events)
    assert event.profile is not None
    hot = event.hot_frames(3)
    assert hot and hot[0].function in ("crunch_numbers", "spin")
    assert "crunch_numbers" in tree_functions(event)
    # The report says which part of the request the profile covers.
    assert re.match(r"Sampled every 5 ms \(\d+ ms on average\) from 0\.01", event.profile_note)
    assert "are counted to the first sample's stack" in event.profile_note
    # CPU time is reported (a busy loop uses CPU; a loaded machine gives it less).
    assert event.profile.cpu_time > 0


def test_a_request_with_few_samples_still_reports_its_cpu_time(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    # A loaded machine (or a long interval) gives a slow request only a few
    # samples; its CPU time must still be there, read up to the end of the work.
    perf = PerfAlert(app, threshold_seconds=0.1, sample_interval=0.05, file_enabled=False)

    @perf.watch(threshold=0.1)
    def build_invoice() -> int:
        return crunch_numbers(0.2)

    @app.route("/report")
    def report() -> str:
        return str(crunch_numbers(0.2) + build_invoice())

    assert app.test_client().get("/report").status_code == 200
    assert {e.kind for e in events} == {"request", "function"}
    for event in events:  # the watched call's is handed on after the request's end
        assert event.profile is not None
        assert 1 <= event.profile.sample_count <= 8, event.profile_note
        assert event.profile.cpu_time > 0.05, event.kind
        assert event.profile.cpu_time <= event.profile.duration + 0.01


def test_sample_after_and_interval_are_settings(app: Flask, events: list[SlowRequestEvent]) -> None:
    PerfAlert(app, threshold_seconds=0.1, sample_after=0, sample_interval=0.02, file_enabled=False)

    @app.route("/")
    def index() -> str:
        return str(crunch_numbers(0.15))

    app.test_client().get("/")
    note = only(events).profile_note
    assert re.match(r"Sampled every 20 ms \(\d+ ms on average\) from 0\.000s", note), note


@pytest.mark.parametrize(
    ("mode", "has_profile", "note"),
    [
        ("sampling", True, "Sampled every"),
        ("pyinstrument", True, "Profiled by pyinstrument"),
        ("none", False, "profiling is off"),
    ],
)
def test_profiler_modes(
    app: Flask, events: list[SlowRequestEvent], mode: str, has_profile: bool, note: str
) -> None:
    PerfAlert(app, threshold_seconds=0.1, profiler=mode, file_enabled=False)

    @app.route("/")
    def index() -> str:
        return str(crunch_numbers(0.15))

    app.test_client().get("/")
    event = only(events)
    assert (event.profile is not None) is has_profile
    assert note in event.profile_note
    if has_profile:
        assert "crunch_numbers" in tree_functions(event)


def test_one_sample_gives_a_call_tree_and_says_so(
    app: Flask, events: list[SlowRequestEvent], report_dir: Path, wait_delivery: Any
) -> None:
    # Sampling starts at half the threshold, once a second: a request just over
    # the threshold ends before a second sample. Its one stack is where the time went.
    PerfAlert(app, threshold_seconds=0.1, sample_after=0.5, sample_interval=1.0)

    @app.route("/")
    def index() -> str:
        return str(crunch_numbers(0.105))

    app.test_client().get("/")
    event = only(events)
    assert event.profile is not None
    assert event.profile_note.startswith("One sample, at 0."), event.profile_note
    assert "crunch_numbers" in tree_functions(event)
    wait_delivery()
    [report] = report_dir.glob("perfalert-*.html")
    assert "One sample, at" in report.read_text()


def test_no_sample_still_alerts_and_says_so() -> None:
    # A request that ended before its first sample (its arm point, or a sampler that
    # waited for a busy CPU): no call tree, and the note says why.
    policy_ = ProfilingPolicy(PerfAlertSettings(threshold_seconds=0.1))
    result = policy_.result(0.0, 0.105, "GET /", Measurement(0.0, 0.01))
    assert result.session is None
    assert result.note == (
        "No profile: too few samples (0); sampling starts 0.010s into the work, every 5 ms."
    )


# -- where profiles must be right ----------------------------------------------------------


async def crunch_async(seconds: float) -> int:
    await asyncio.sleep(0)
    return crunch_numbers(seconds)


@pytest.mark.parametrize("mode", ["sampling", "pyinstrument"])
def test_async_views_show_their_own_frames(
    app: Flask, events: list[SlowRequestEvent], mode: str
) -> None:
    PerfAlert(app, threshold_seconds=0.1, profiler=mode, file_enabled=False)

    @app.route("/async")
    async def async_view() -> str:
        return str(await crunch_async(0.2))

    assert app.test_client().get("/async").status_code == 200
    functions = tree_functions(only(events))
    assert "crunch_async" in functions and "crunch_numbers" in functions


def work_alpha() -> int:
    return spin(0.3)


def work_beta() -> int:
    return spin(0.3)


def test_concurrent_requests_on_threads_each_get_only_their_own_stacks(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    PerfAlert(app, threshold_seconds=0.2, file_enabled=False)
    app.add_url_rule("/alpha", "alpha", lambda: str(work_alpha()))
    app.add_url_rule("/beta", "beta", lambda: str(work_beta()))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        clients = [
            threading.Thread(target=lambda p=p: urlopen(base + p, timeout=20).read())
            for p in ("/alpha", "/beta")
        ]
        for client in clients:
            client.start()
        for client in clients:
            client.join(20)
        wait_for(lambda: len(events) == 2, timeout=10)
    finally:
        server.shutdown()
        thread.join(5)
    by_endpoint = {e.endpoint: tree_functions(e) for e in events}
    assert "work_alpha" in by_endpoint["alpha"] and "work_beta" not in by_endpoint["alpha"]
    assert "work_beta" in by_endpoint["beta"] and "work_alpha" not in by_endpoint["beta"]


def test_a_watched_function_in_a_request_gets_its_own_profile(
    app: Flask, events: list[SlowRequestEvent]
) -> None:
    perf = PerfAlert(app, threshold_seconds=0.1, file_enabled=False)

    @perf.watch(threshold=0.05)
    def build_invoice() -> int:
        return crunch_numbers(0.15)

    @app.route("/checkout")
    def checkout() -> str:
        spin(0.05)
        return str(build_invoice())

    app.test_client().get("/checkout")
    by_kind = {e.kind: e for e in events}
    assert set(by_kind) == {"request", "function"}
    function_tree = tree_functions(by_kind["function"])
    # Its own profile starts at the watched function: the view is not in it.
    assert "crunch_numbers" in function_tree and "checkout" not in function_tree
    assert "checkout" in tree_functions(by_kind["request"])


def descend(depth: int) -> int:
    if depth == 0:
        return spin(0.15)
    return descend(depth - 1) + 1


def test_deep_recursion(app: Flask, events: list[SlowRequestEvent]) -> None:
    PerfAlert(app, threshold_seconds=0.1, file_enabled=False)

    @app.route("/deep")
    def deep() -> str:
        return str(descend(600))

    assert app.test_client().get("/deep").status_code == 200
    event = only(events)
    assert event.hot_frames(1)[0].function == "spin"
    assert tree_functions(event).count("descend") >= 600


def test_a_request_running_for_minutes_keeps_bounded_samples_and_all_its_time() -> None:
    m = Measurement(start=0.0, arm_at=0.0)
    now = 0.0
    # 3x as many distinct stacks (different lines) as the table holds, 10 ms each.
    for i in range(3 * MAX_DISTINCT_STACKS):
        now += 0.01
        m.add_sample((f"handler\x00app.py\x001\x01l{i}", f"query\x00db.py\x00{i}"), now)
    assert len(m.stacks) <= 2 * MAX_DISTINCT_STACKS + 1
    # Merged rather than dropped: every sampled second is still there.
    assert sum(m.stacks.values()) == pytest.approx(now)
    assert m.sample_count == 3 * MAX_DISTINCT_STACKS


def test_the_sampler_thread_is_not_one_of_the_app_s_threads(tmp_path: Path) -> None:
    # The sampler is a thread of ours, started with the first request: the app's
    # threading.enumerate() (and its tests' thread checks) never see it.
    script = tmp_path / "main_thread.py"
    script.write_text(
        "import threading, time\n"
        "from flask import Flask\n"
        "from flask_perfalert import PerfAlert, perf_slow_request\n"
        "app = Flask('x')\n"
        "app.testing = True\n"
        "PerfAlert(app, threshold_seconds=0.05, file_enabled=False)\n"
        "seen = []\n"
        "perf_slow_request.connect(lambda s, event: seen.append(event), app, weak=False)\n"
        "@app.route('/')\n"
        "def index():\n"
        "    deadline = time.perf_counter() + 0.1\n"
        "    while time.perf_counter() < deadline: pass\n"
        "    return 'ok'\n"
        "c = app.test_client()\n"
        "for _ in range(3): c.get('/', buffered=True)\n"
        "print(threading.active_count(), len(seen), seen[0].profile is not None)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["1", "3", "True"], out.stderr


@pytest.mark.server
@pytest.mark.parametrize(
    ("worker_class", "threads"), [("sync", 1), ("gthread", 4)], ids=["sync", "gthread"]
)
def test_profiles_under_gunicorn_preload(tmp_path: Path, worker_class: str, threads: int) -> None:
    events = tmp_path / "events.jsonl"
    server = Gunicorn(
        "apps.profiling_app:app",
        tmp_path,
        {"PROFILING_APP_EVENTS": str(events)},
        workers=2,
        worker_class=worker_class,
        threads=threads,
        preload=True,
    )
    with server:
        pids: set[str] = set()
        deadline = time.monotonic() + 30
        # Slow requests until both forked workers have produced a profile.
        while time.monotonic() < deadline:
            for name in ("alpha", "beta"):
                status, _ = server.get(f"/busy/{name}")
                assert status == 200
            lines = events.read_text().splitlines() if events.exists() else []
            pids = {json.loads(line)["pid"] for line in lines}
            if len(pids) == 2:
                break
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert len({r["pid"] for r in records}) == 2
    for record in records:
        # Each forked worker samples with its own timer: every report has a call
        # tree naming its own request's function.
        assert record["note"].startswith("Sampled every"), record
        name = record["url"].rsplit("/", 1)[-1]
        assert f"work_{name}" in record["functions"], record


# -- environments -------------------------------------------------------------------------


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import json, time, gevent, urllib.request
from gevent.pywsgi import WSGIServer
from flask import Flask
from flask_perfalert import PerfAlert, perf_slow_request

app = Flask("green")
app.testing = True
PerfAlert(app, threshold_seconds=0.1, file_enabled=False, storage_uri="memory://")
events = []
perf_slow_request.connect(lambda s, event: events.append(event), sender=app, weak=False)

def work_cpu():
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass
    return "cpu"

def work_wait():
    time.sleep(0.3)  # gevent's: the greenlet waits, the others run
    return "wait"

app.add_url_rule("/cpu", "cpu", work_cpu)
app.add_url_rule("/wait", "wait", work_wait)
server = WSGIServer(("127.0.0.1", 0), app, log=None)
server.start()
url = f"http://127.0.0.1:{server.server_port}"
jobs = [gevent.spawn(lambda p=p: urllib.request.urlopen(url + p).read()) for p in ("/wait", "/cpu")]
gevent.joinall(jobs, raise_error=True)
print(json.dumps({e.endpoint: [f.function for f in e.hot_frames(10)] for e in events}))
"""


def test_gevent_requests_get_each_their_own_call_tree(tmp_path: Path) -> None:
    # One OS thread runs every greenlet: the sampler (a real thread, whatever
    # gevent patched) reads each request's own greenlet frames.
    out = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    hot = json.loads(out.stdout.splitlines()[-1])
    assert hot["cpu"][0] == "work_cpu", hot
    assert "work_cpu" not in hot["wait"], hot
    functions = call_tree_of_wait = hot["wait"]
    assert functions and call_tree_of_wait


STACK_READING_RACE = """
import gc, sys, threading, time, types
from flask_perfalert.profiling import _threads

stop = False
def leaf():
    return sum(range(20))
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

thread = threading.Thread(target=app_thread, daemon=True)
thread.start()
gc.set_threshold(120)
reads = 0
end = time.time() + 3
while time.time() < end:
    for _ in range(3):
        Finalized()
    read = _threads.read_stacks((thread.ident,), 4)
    if read is not None:
        frames = read[1][thread.ident]
        assert all(isinstance(f, types.FrameType) for f in frames), frames
        reads += 1
stop = True
print(reads)
"""


def test_reading_a_stack_while_collections_run_finalizers_never_corrupts_memory() -> None:
    # On CPython 3.11 reading another thread's stack makes frame objects; a garbage
    # collection started by one runs finalizers on the sampler's thread, which can let
    # the thread being read return from the frame whose object is being made. Before
    # the sampler guarded against it, this script crashed the interpreter every time.
    out = subprocess.run(
        [sys.executable, "-c", STACK_READING_RACE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) > 20, out.stdout


def test_another_threads_stack_is_read_whole_before_that_thread_can_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each read of a stack, frames included, is one call of C code: no bytecode runs
    # between the check of the collector's count and the last frame read, so the GIL
    # cannot pass to the thread being read. A profile function sees every Python
    # function run, and every C function called from Python code.
    monkeypatch.setattr(_threads, "NEEDS_GC_HEADROOM", True)
    release = threading.Event()

    def innermost() -> None:
        release.wait(10)

    def caller() -> None:
        innermost()

    thread = threading.Thread(target=caller)
    thread.start()
    ident = thread.ident
    assert ident is not None
    try:
        while "innermost" not in [
            f.f_code.co_name for f in frames_of(sys._current_frames()[ident])
        ]:
            time.sleep(0.001)
        events: list[tuple[str, str]] = []

        def profile(frame: Any, event: str, arg: Any) -> None:
            name = (
                getattr(arg, "__name__", type(arg).__name__)
                if event.startswith("c_")
                else frame.f_code.co_name
            )
            events.append((event, name))

        sys.setprofile(profile)
        try:
            read = _threads.read_stacks((ident,), 8)
        finally:
            sys.setprofile(None)
        assert read is not None
        names = [f.f_code.co_name for f in read[1][ident]]
        assert names[:4] == ["wait", "wait", "innermost", "caller"], names
        # Python code that ran: only ours, building each read before making it.
        ours = {"read_stacks", "_reader", "_chains", "_guarded", "_read_on", "_make_headroom"}
        assert {name for event, name in events if event == "call"} <= ours
        # The frames were read by C calls made from C, never from Python code.
        c_calls = [name for event, name in events if event == "c_call"]
        assert "_current_frames" not in c_calls and "getattr" not in c_calls, c_calls
    finally:
        release.set()
        thread.join()


def test_a_deep_stack_is_read_whole() -> None:
    release = threading.Event()

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        else:
            release.wait(10)

    thread = threading.Thread(target=deep, args=(200,))
    thread.start()
    try:
        time.sleep(0.05)
        read = _threads.read_stacks((thread.ident or 0,), 8)
        assert read is not None
        names = [f.f_code.co_name for f in read[1][thread.ident or 0]]
        assert names.count("deep") == 201 and names[-1] == "_bootstrap", names[-5:]
    finally:
        release.set()
        thread.join()


def test_reading_other_threads_stacks_never_touches_the_garbage_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On CPython 3.11 a garbage collection started while another thread's frames are
    # read can corrupt memory (and, on 3.11.0-3.11.8, deadlock in sys._current_frames).
    # The app's gc settings are its own: instead of disabling gc, frames are read only
    # when a collection cannot start meanwhile.
    monkeypatch.setattr(_threads, "NEEDS_GC_HEADROOM", True)
    threshold = gc.get_threshold()
    enabled = gc.isenabled()
    try:
        gc.set_threshold(100_000)
        frames = _threads.read_stacks((threading.get_ident(),), 8)
        assert frames is not None and frames[1][threading.get_ident()]
        assert gc.isenabled() is enabled and gc.get_threshold()[0] == 100_000
        # The young generation close to its threshold while nobody allocates (a
        # request waiting on the network): the frames are still read.
        gc.set_threshold(300)
        for young in (285, 300 - 8 - 33 - 16 - 3):  # above the limit; just below it
            kept: list[list[None]] = []
            while gc.get_count()[0] < young:
                kept.append([])
            assert _threads.read_stacks((threading.get_ident(),), 8) is not None, young
            assert gc.isenabled() is enabled and gc.get_threshold()[0] == 300
            del kept
        gc.set_threshold(10)  # too low to ever leave room: no frames, rather than a risk
        assert _threads.read_stacks((threading.get_ident(),), 8) is None
        assert gc.isenabled() is enabled
        gc.disable()  # no automatic collection at all: always safe
        assert _threads.read_stacks((threading.get_ident(),), 8) is not None
        assert not gc.isenabled()
    finally:
        gc.set_threshold(*threshold)
        if enabled:
            gc.enable()


class ScriptedClock:
    """A perf_counter that returns the given readings, in turn."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


def sampled_call(sampler: Sampler, **settings: Any) -> InFlight:
    """A watched call on this thread, registered with ``sampler``, armed at once."""
    config = PerfAlertSettings(sample_after=0, **settings)
    timer = TimerState(lambda environ, start_response: [])
    timer.use(config, ProfilingPolicy(config), Stats(), lambda *args: None)
    record = InFlight(0.0, threading.get_ident(), timer, None, WatchCall("job", 1.0, None))
    sampler.active[id(record)] = record
    return record


def test_the_sampler_backs_off_above_max_overhead_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = stack_of(frames_of(sys._getframe()))
    # A tick a second; the sampler thread's CPU clock is read at its first tick and
    # at the end of each 1 s window: 0.2 s of CPU in each of two windows, then nothing.
    cpu = ScriptedClock(0.0, 0.2, 0.4, 0.4)
    sampler = Sampler(
        active={},
        clock=ScriptedClock(0.0, 1.0, 2.0, 3.0, 4.0, 5.0),
        cpu_clock=cpu,
        stacks=lambda ids, hint: (1, {threading.get_ident(): stack}),
    )
    sampler.configure(0.005, 0.05)
    record = sampled_call(sampler)
    with caplog.at_level(logging.WARNING, "flask_perfalert"):
        assert sampler.tick() and sampler.tick() and sampler.tick()
    assert sampler.interval == 0.02
    assert caplog.text.count("sampler used") == 1
    assert record.timer.stats.sampler_seconds == pytest.approx(0.4)
    # Once it is cheap again, it comes back to the configured interval.
    assert sampler.tick() and sampler.tick()
    assert sampler.interval == 0.005


def test_samples_are_taken_with_the_injected_clock_and_stacks() -> None:
    def job() -> Any:
        return sys._getframe()

    stack = stack_of(frames_of(job()))
    sampler = Sampler(
        active={},
        clock=ScriptedClock(0.0, 0.01, 0.03),
        stacks=lambda ids, hint: (1, {threading.get_ident(): stack}),
    )
    record = sampled_call(sampler)
    assert sampler.tick() and sampler.tick()
    m = record.measurement
    assert m is not None and m.sample_count == 2
    assert sum(m.stacks.values()) == pytest.approx(0.03)  # from the start at 0.0
    assert any(info.startswith("job\x00") for stack in m.stacks for info in stack)


# -- pyinstrument compatibility ------------------------------------------------------------


def test_this_pyinstrument_is_compatible() -> None:
    compat.check_compatible()
    assert compat.incompatible is None


@pytest.mark.allow_internal_errors
def test_an_incompatible_pyinstrument_fails_loudly_and_alerts_go_on(
    app: Flask, events: list[SlowRequestEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compat.Session, "root_frame", lambda self, **kwargs: None)
    with pytest.raises(RuntimeError, match="is not supported"):
        compat.check_compatible()
    try:
        PerfAlert(app, threshold_seconds=0.05, file_enabled=False)

        @app.route("/")
        def index() -> str:
            return str(spin(0.08))

        assert app.test_client().get("/").status_code == 200
        event = only(events)
        assert event.profile is None
        assert "is not supported" in event.profile_note
    finally:
        monkeypatch.undo()
        compat.check_compatible()


# -- the extension's own cost and state ---------------------------------------------------------


def test_stats_count_and_measure_the_extension_s_own_cost(
    app: Flask, events: list[SlowRequestEvent], clock: Any
) -> None:
    perf = PerfAlert(app, threshold_seconds=0.05, file_enabled=False, clock=clock)

    @app.route("/fast")
    def fast() -> str:
        return "ok"

    @app.route("/slow")
    def slow() -> str:
        return str(spin(0.06))

    client = app.test_client()
    for _ in range(20):
        client.get("/fast")
    client.get("/slow")
    client.get("/slow")
    stats = perf.stats(app)
    assert (stats["requests"], stats["slow"], stats["alerted"], stats["suppressed"]) == (
        22,
        2,
        1,
        1,
    )
    assert 0 < stats["own_seconds_per_request"] < 0.001
    assert stats["own_seconds"] == pytest.approx(22 * stats["own_seconds_per_request"])
    assert stats["sampler_seconds"] > 0
    assert 0 < stats["estimated_overhead"] < 0.5
    assert stats["after_response_seconds"] > 0


def test_monitoring_state_stays_bounded_over_many_urls_and_endpoints(app: Flask) -> None:
    perf = PerfAlert(app, threshold_seconds=0.05, file_enabled=False)
    for i in range(300):
        app.add_url_rule(f"/e{i}/<item>", f"endpoint_{i}", lambda item: item)
    client = app.test_client()
    for i in range(3000):
        assert client.get(f"/e{i % 300}/{i}?q={i}").status_code == 200
    assert perf.stats(app)["requests"] == 3000
    # Nothing is kept per URL or per endpoint once requests are done.
    assert SAMPLER.active == {}


def test_requests_on_ever_new_threads_leave_nothing_behind(app: Flask) -> None:
    # A server that starts a thread per request: nothing is kept per thread.
    perf = PerfAlert(app, threshold_seconds=10, file_enabled=False)
    app.add_url_rule("/fast", "fast", lambda: "ok")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/fast"
        for _ in range(50):
            assert urlopen(base, timeout=10).read() == b"ok"
    finally:
        server.shutdown()
        thread.join(5)
    assert perf.stats(app)["requests"] == 50
    assert ACTIVE == {}


def test_fast_requests_are_never_sampled(app: Flask) -> None:
    # A request shorter than its arm point costs the sampler nothing.
    PerfAlert(app, threshold_seconds=0.5, file_enabled=False)
    app.add_url_rule("/fast", "fast", lambda: "ok")
    client = app.test_client()
    client.get("/fast")
    before = SAMPLER.samples_taken
    for _ in range(300):
        assert client.get("/fast").data == b"ok"
    assert SAMPLER.samples_taken == before


def test_an_async_view_whose_loop_thread_refuses_pyinstrument_leaves_nothing_behind(
    app: Flask, events: list[SlowRequestEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyinstrument refuses to start where another profiler runs; the extension
    # then samples instead, and must stop doing so when the view returns.
    class RefusingOffTheMainThread(policy.Profiler):  # type: ignore[misc]
        def start(self, *args: Any, **kwargs: Any) -> None:
            if threading.current_thread() is not threading.main_thread():
                raise RuntimeError("There is already a profiler running.")
            super().start(*args, **kwargs)

    monkeypatch.setattr(policy, "Profiler", RefusingOffTheMainThread)
    PerfAlert(app, threshold_seconds=0.05, profiler="pyinstrument", file_enabled=False)

    @app.route("/async")
    async def async_view() -> str:
        return str(await crunch_async(0.08))

    assert app.test_client().get("/async").status_code == 200
    assert only(events).profile is not None
    assert ACTIVE == {}
