"""One alert per endpoint per window across gunicorn workers, masters ("hosts") and restarts.

The app is ``tests/apps/storage_app.py``; each ``perf_slow_request`` signal it
receives is a line ``<pid> <endpoint> <duplicate>`` in an events file, and each
alert is an HTML report in ``PERFALERT_FILE_DIR``.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from servers import Gunicorn, RedisServer, http_get, redis_server, wait_for

__all__ = ["redis_server"]  # the fixture, imported for pytest

pytestmark = pytest.mark.server

APP = "apps.storage_app:app"


def app_env(tmp_path: Path, host: str, storage_uri: str) -> dict[str, str]:
    return {
        "PERFALERT_STORAGE_URI": storage_uri,
        "PERFALERT_THRESHOLD_SECONDS": "0.1",
        "PERFALERT_PROFILER": "none",  # timing only: the window is what is tested here
        "PERFALERT_FILE_DIR": str(tmp_path / host / "reports"),
        "STORAGE_APP_SLEEP": "0.15",
        "STORAGE_APP_EVENTS": str(tmp_path / "events.txt"),
        "STORAGE_APP_LOG": str(tmp_path / "perfalert.log"),
        "STORAGE_APP_LOG_LEVEL": "DEBUG",
    }


def read_events(tmp_path: Path, endpoint: str) -> list[tuple[int, bool]]:
    path = tmp_path / "events.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, name, duplicate = line.split()
        if name == endpoint:
            out.append((int(pid), duplicate == "True"))
    return out


def wait_events(tmp_path: Path, endpoint: str, count: int) -> list[tuple[int, bool]]:
    # The signal is sent when gunicorn closes the response, just after the client has it.
    wait_for(
        lambda: len(read_events(tmp_path, endpoint)) >= count,
        timeout=20,
        what=f"{count} signals for {endpoint}",
    )
    return read_events(tmp_path, endpoint)


def reports(tmp_path: Path, endpoint: str) -> list[Path]:
    return sorted(tmp_path.glob(f"*/reports/perfalert-*-{endpoint}-*.html"))


def hammer(urls: list[str], concurrency: int = 20) -> list[int]:
    """GET every URL, ``concurrency`` at a time; the HTTP statuses."""
    with ThreadPoolExecutor(concurrency) as pool:
        return [status for status, _ in pool.map(http_get, urls)]


def log_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "perfalert.log"
    return path.read_text().splitlines() if path.exists() else []


def store_trouble(tmp_path: Path) -> list[str]:
    """Errors, and warnings about the alert store, the app logged."""
    return [
        line
        for line in log_lines(tmp_path)
        if " ERROR " in line or (" WARNING " in line and "store" in line.lower())
    ]


def test_two_hosts_on_one_redis_send_one_alert(tmp_path: Path, redis_server: RedisServer) -> None:
    host1 = Gunicorn(
        APP, tmp_path / "host1", app_env(tmp_path, "host1", redis_server.url), workers=3
    )
    # The second "host" preloads the app in the master, then forks: the store
    # must not share the master's connection with the workers.
    host2 = Gunicorn(
        APP,
        tmp_path / "host2",
        app_env(tmp_path, "host2", redis_server.url),
        workers=3,
        worker_class="gthread",
        threads=2,
        preload=True,
    )
    with host1, host2:
        urls = [host.base_url + "/slow/a" for _ in range(30) for host in (host1, host2)]
        assert hammer(urls) == [200] * 60
        events = wait_events(tmp_path, "slow_a", 60)
    assert len(events) == 60
    assert [duplicate for _, duplicate in events].count(False) == 1
    assert len({pid for pid, _ in events}) >= 2  # decided across processes
    # Both masters stopped gracefully: every report is written by now.
    assert len(reports(tmp_path, "slow_a")) == 1
    assert 0 < redis_server.client().pttl("perfalert:GET slow_a") <= 10 * 86400 * 1000
    assert not store_trouble(tmp_path)


def test_sqlite_four_workers_send_one_alert(tmp_path: Path) -> None:
    uri = f"sqlite://{tmp_path}/perfalert.db"
    with Gunicorn(APP, tmp_path / "host", app_env(tmp_path, "host", uri), workers=4) as host:
        assert hammer([host.base_url + "/slow/a"] * 60) == [200] * 60
        events = wait_events(tmp_path, "slow_a", 60)
    assert [duplicate for _, duplicate in events].count(False) == 1
    assert len({pid for pid, _ in events}) >= 2
    assert len(reports(tmp_path, "slow_a")) == 1
    assert not store_trouble(tmp_path)


def test_a_restarted_app_remembers_the_window(tmp_path: Path) -> None:
    uri = f"sqlite://{tmp_path}/perfalert.db"
    env = app_env(tmp_path, "host", uri)
    with Gunicorn(APP, tmp_path / "host", env, workers=2) as host:
        assert host.get("/slow/a")[0] == 200
        wait_events(tmp_path, "slow_a", 1)
    assert len(reports(tmp_path, "slow_a")) == 1

    with Gunicorn(APP, tmp_path / "host", env, workers=2, preload=True) as host:  # a deploy
        assert hammer([host.base_url + "/slow/a"] * 6) == [200] * 6
        events = wait_events(tmp_path, "slow_a", 7)
    assert [duplicate for _, duplicate in events] == [False] + [True] * 6
    assert len(reports(tmp_path, "slow_a")) == 1


def test_redis_killed_mid_run(tmp_path: Path, redis_server: RedisServer) -> None:
    env = app_env(tmp_path, "host", redis_server.url)
    with Gunicorn(APP, tmp_path / "host", env, workers=3) as host:
        assert hammer([host.base_url + "/slow/a"] * 12) == [200] * 12
        before = wait_events(tmp_path, "slow_a", 12)
        assert [duplicate for _, duplicate in before].count(False) == 1

        redis_server.kill()
        urls = [host.base_url + path for path in ("/slow/b", "/slow/a", "/") for _ in range(15)]
        assert hammer(urls) == [200] * 45  # every request answered
        # Each worker holds its first slow_b until Redis can decide it; the rest are duplicates.
        assert all(duplicate for _, duplicate in read_events(tmp_path, "slow_b"))

        redis_server.start()  # back, on the same port (and empty)

        def all_back() -> bool:
            # Slow requests make each worker try Redis again once its back-off is over.
            hammer([host.base_url + "/slow/a"] * 6, concurrency=6)
            back = {
                line.split()[0]
                for line in log_lines(tmp_path)
                if "store" in line and "is back" in line
            }
            return len(back) >= 3

        wait_for(all_back, timeout=60, interval=0, what="every worker to use Redis again")
        during = wait_events(tmp_path, "slow_b", 15)
        assert hammer([host.base_url + "/slow/c"] * 15) == [200] * 15
        after = wait_events(tmp_path, "slow_c", 15)
    assert [duplicate for _, duplicate in after].count(False) == 1  # shared again
    # The held alerts were decided by Redis once it was back: one alert in all, not one
    # per worker, and none lost.
    assert [duplicate for _, duplicate in during].count(False) == 1
    assert len(reports(tmp_path, "slow_b")) == 1
    # One warning per worker that noticed, not one per request.
    warnings = [line for line in log_lines(tmp_path) if " WARNING " in line and "store" in line]
    assert len({line.split()[0] for line in warnings}) <= 3
    warned = collections.Counter(line.split()[0] for line in warnings)
    assert warned and max(warned.values()) == 1
    assert all("is not available" in line for line in warnings)
    assert not [line for line in log_lines(tmp_path) if " ERROR " in line]


def test_two_hosts_at_once_one_slower_send_one_alert(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # The same endpoint slow on two hosts at the same time, one of them three times
    # as slow (a cold start, a busier machine): one alert. "Getting worse" is for a
    # request that began after the alerted one had ended, not for one running beside it.
    release = tmp_path / "release"
    host1 = Gunicorn(APP, tmp_path / "host1", app_env(tmp_path, "host1", redis_server.url))
    env2 = app_env(tmp_path, "host2", redis_server.url)
    host2 = Gunicorn(APP, tmp_path / "host2", {**env2, "STORAGE_APP_HOLD_UNTIL": str(release)})
    with host1, host2, ThreadPoolExecutor(1) as pool:
        slower = pool.submit(host2.get, "/slow/a")
        wait_for(Path(f"{release}.started").exists, timeout=20, what="host2's slow request")
        assert host1.get("/slow/a")[0] == 200
        [(pid1, duplicate)] = wait_events(tmp_path, "slow_a", 1)  # host1 alerted
        assert not duplicate
        release.touch()  # host2's request, running all along, ends now
        assert slower.result()[0] == 200
        events = wait_events(tmp_path, "slow_a", 2)
        assert events == [(pid1, False), (events[1][0], True)]
        assert events[1][0] != pid1

        # Begun after the alert and three times as slow: that is getting worse.
        assert host2.get("/slow/a")[0] == 200
        events = wait_events(tmp_path, "slow_a", 3)
    assert events[2][1] is False
    assert len(reports(tmp_path, "slow_a")) == 2
    [escalation] = [line for line in log_lines(tmp_path) if "Getting worse" in line]
    assert escalation.split()[0] == str(events[2][0])
    assert not store_trouble(tmp_path)
