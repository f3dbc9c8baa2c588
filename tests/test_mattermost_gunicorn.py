"""Real gunicorn workers forked from a preloaded app deliver to Mattermost."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from mattermost_standin import MattermostStandIn, free_port

HERE = Path(__file__).parent


@pytest.fixture
def standin() -> Iterator[MattermostStandIn]:
    with MattermostStandIn() as server:
        yield server


def wait_listening(port: int, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {proc.communicate()[1]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("gunicorn did not start listening")


@pytest.mark.server
def test_a_preloaded_app_delivers_from_both_workers(
    standin: MattermostStandIn, tmp_path: Path
) -> None:
    port = free_port()
    env = dict(
        os.environ,
        PERFALERT_MATTERMOST_ENABLED="true",
        PERFALERT_MATTERMOST_URL=standin.url,
        PERFALERT_MATTERMOST_TOKEN=standin.token,
        PERFALERT_MATTERMOST_CHANNEL_ID=standin.channel_id,
        PERFALERT_MATTERMOST_TIMEOUT="5",
        PERFALERT_FILE_DIR=str(tmp_path / "reports"),
        PERFALERT_THRESHOLD_SECONDS="0.05",
        # A window per worker (not the default shared one): each must alert, and post.
        PERFALERT_STORAGE_URI="memory://",
        SLOW_SECONDS="0.15",
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--preload",
        "--workers=2",
        "--worker-class=sync",
        f"--bind=127.0.0.1:{port}",
        "--graceful-timeout=20",
        f"--chdir={HERE / 'apps'}",
        "mattermost_app:app",
    ]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_listening(port, proc)
        pids: set[str] = set()
        with ThreadPoolExecutor(2) as pool:
            for _ in range(30):
                answers = pool.map(
                    lambda _: requests.get(f"http://127.0.0.1:{port}/slow", timeout=10).text,
                    range(2),
                )
                pids.update(answers)
                if len(pids) == 2:
                    break
        assert len(pids) == 2, "both workers served slow requests"
        # Each worker keeps its own de-duplication window (memory://): one alert each.
        posts = standin.wait_posts(2, timeout=30)
        posters = {pid for pid in pids for p in posts if f"**Process:** {pid}" in p["message"]}
        assert posters == pids
        assert len(posts) == 2 and all(len(p["file_ids"]) == 1 for p in posts)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
