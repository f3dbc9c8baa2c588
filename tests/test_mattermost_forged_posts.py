"""Nobody else can make the bot post: the spool is ours or ignored.

The spool is replayed with the bot's token, so a file planted in it would be
posted word for word. These tests plant entries (unsigned, signed with
another key, owned by another user, with another mode) and spool folders
others can write to, and check that nothing planted is posted, that each is
logged once and left alone, and that a folder the extension did not create
keeps its mode.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from pathlib import Path

import pytest
from flask import Flask
from mattermost_setup import (
    kept_while_down,
    monitored,
    posted_for,
    quick_retries,
    settle,
    slow_endpoints,
    spool_dir,
    spool_entries,
    standin,
)
from mattermost_standin import MattermostStandIn

__all__ = ["quick_retries", "spool_dir", "standin"]  # fixtures, imported for pytest

FORGED = "@channel URGENT: IT asks everyone to re-enter their password at http://evil.example/login"


def forged_entry(standin: MattermostStandIn, number: int = 1) -> tuple[str, bytes]:
    """A spool entry as the old format had them: plain JSON, the post's text inside.

    It names the server and channel (which are no secret), as an attacker would.
    """
    event_id = f"{number:032x}"
    data = {
        "version": 1,
        "server": standin.url,
        "channel_id": standin.channel_id,
        "app": "test_mattermost_forged_posts",
        "event_id": event_id,
        "created": time.time() - 60,
        "summary": "GET login",
        "message": FORGED,
        "report_name": "perfalert-x.html",
        "report_html": None,
        "post_sent_at": None,
    }
    name = f"mm-{int(time.time() * 1000) - 60_000:013d}-{event_id}.json"
    return name, json.dumps(data).encode()


def plant(folder: Path, name: str, content: bytes, mode: int = 0o600) -> Path:
    path = folder / name
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


def replay(app: Flask) -> str:
    result = app.test_cli_runner().invoke(args=["perfalert", "check"])
    assert result.exit_code == 0, result.output
    return result.output


def ignored_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "ignored" in r.getMessage()
    ]


# -- planted entries --------------------------------------------------------------------------
def _unsigned(folder: Path, standin: MattermostStandIn) -> Path:
    return plant(folder, *forged_entry(standin))


def _signed_with_another_key(folder: Path, standin: MattermostStandIn) -> Path:
    name, content = forged_entry(standin)
    data = json.loads(content)
    data.update(version=2, app="test_mattermost_forged_posts")
    header = "PERFALERT-SPOOL-1 " + "0" * 64  # the signed format, with a made-up signature
    return plant(folder, name, f"{header}\n{json.dumps(data)}".encode())


def _group_writable(folder: Path, standin: MattermostStandIn) -> Path:
    return plant(folder, *forged_entry(standin), mode=0o660)


@pytest.mark.parametrize("planted", [_unsigned, _signed_with_another_key, _group_writable])
def test_an_entry_planted_in_the_spool_is_never_posted(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    planted: object,
) -> None:
    kept_while_down(app, standin, spool_dir, "genuine")
    standin.start()
    path = planted(spool_dir, standin)  # type: ignore[operator]
    content = path.read_bytes()
    replay(app)
    replay(app)  # the second look logs nothing new
    assert "genuine" in posted_for(standin), "the genuine alert is sent"
    assert not any(FORGED in p["message"] for p in standin.posts), "the planted one is not"
    assert path.read_bytes() == content, "left alone"
    lines = ignored_lines(caplog)
    assert len(lines) == 1 and path.name in lines[0], lines


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a file another user's")
def test_an_entry_owned_by_another_user_is_never_posted(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kept_while_down(app, standin, spool_dir, "genuine")
    standin.start()
    [genuine] = spool_entries(spool_dir)
    os.chown(genuine, 65534, 65534)  # "nobody": a copy another user made of a real entry
    replay(app)
    assert [n for n in posted_for(standin) if n != "perfalert_check"] == []
    assert genuine.exists()
    assert len(ignored_lines(caplog)) == 1


# -- folders others can write to, folders we did not create -----------------------------------
def test_a_spool_folder_others_can_write_to_is_not_used(
    app: Flask, standin: MattermostStandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The default folder is in the shared temporary directory: another user may create it first.
    folder = tmp_path / "shared-spool"
    folder.mkdir()
    os.chmod(folder, 0o777)
    planted = plant(folder, *forged_entry(standin))
    monitored(app, standin, folder)
    slow_endpoints(app, "a", "b")
    client = app.test_client()
    client.get("/a")
    client.get("/b")
    settle()
    assert sorted(posted_for(standin)) == ["a", "b"], "alerts go, without a copy on disk there"
    replay(app)
    assert not any(FORGED in p["message"] for p in standin.posts)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777, "its mode is not ours to change"
    assert list(folder.iterdir()) == [planted], "nothing written there, the planted file kept"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if str(folder) in w]) == 1, warnings


@pytest.mark.parametrize("mode", [0o1777, 0o755], ids=["sticky-world-writable", "0755"])
def test_an_existing_spool_folder_keeps_its_mode(
    app: Flask, standin: MattermostStandIn, tmp_path: Path, mode: int
) -> None:
    folder = tmp_path / "existing"
    folder.mkdir()
    os.chmod(folder, mode)
    monitored(app, standin, folder, mattermost_max_retries=0)
    standin.down()
    app.test_client().get("/slow/a")
    settle()
    assert stat.S_IMODE(folder.stat().st_mode) == mode


def test_an_empty_spool_setting_leaves_the_working_directory_alone(
    app: Flask, standin: MattermostStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    os.chmod(workdir, 0o755)
    monkeypatch.chdir(workdir)
    monitored(app, standin, Path(""), mattermost_max_retries=0)
    standin.down()
    app.test_client().get("/slow/a")
    settle()
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o755


def test_a_folder_the_extension_creates_is_private(
    app: Flask, standin: MattermostStandIn, spool_dir: Path
) -> None:
    old_umask = os.umask(0)
    try:
        kept_while_down(app, standin, spool_dir, "genuine")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(spool_dir.stat().st_mode) == 0o700
    [entry] = spool_entries(spool_dir)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
