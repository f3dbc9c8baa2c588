"""Every row of the delivery policy, against the stand-in answering as Mattermost or as nginx.

Each test makes a real slow request and waits for delivery; the stand-in
answers the upload or the post as a proxy in front of Mattermost would (408,
413, 429, 502, 503, 504 with HTML pages, a connection reset) or as
Mattermost does. What is checked is what a user sees: the alert in the
channel (with its report, or a note saying where the report is), in the
spool, or dropped, and the log line docs/mattermost.rst shows for the row.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from flask import Flask
from mattermost_setup import (
    monitored,
    quick_retries,
    settle,
    spool_dir,
    spooled,
    standin,
)
from mattermost_standin import FILES, POSTS, MattermostStandIn

from flask_perfalert.alerts import mattermost as mm
from flask_perfalert.alerts.mattermost.policy import (
    LOG_REPLAY_STOPS,
    LOG_RETRIES_OVER,
    POLICY,
    SHORTEST_REFUSED,
    UNKNOWN,
)

__all__ = ["quick_retries", "spool_dir", "standin"]  # fixtures, imported for pytest

ROOT = Path(__file__).parents[1]
NOT_MATTERMOST = "(the answer is not Mattermost's: {})"


_SUMMARY = re.compile(
    r"(GET slow) \(\d+\) took [\d.]+s \(threshold [\d.]+s\) at "
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
)


def logged(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    """The lines of ``flask_perfalert`` at ``level``, the alert's summary cut to "GET slow"."""
    return [
        _SUMMARY.sub(r"\1", r.getMessage())
        for r in caplog.records
        if r.name == "flask_perfalert" and r.levelno == level
    ]


def no_token(caplog: pytest.LogCaptureFixture, standin: MattermostStandIn) -> None:
    assert standin.token not in caplog.text
    assert all(standin.token not in str(r.args) for r in caplog.records)


# -- retry with back-off --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "path", "reason"),
    [
        ("reset", POSTS, "could not create the post: {url} closed the connection without an "
                         "answer"),
        ("reset", FILES, "could not upload the report: {url} closed the connection without an "
                         "answer"),
        ("408", POSTS, "could not create the post: {url} gave up waiting for the request (408) "
                       + NOT_MATTERMOST.format("408 Request Time-out")),
        ("408", FILES, "could not upload the report: {url} gave up waiting for the request (408) "
                       + NOT_MATTERMOST.format("408 Request Time-out")),
        (425, POSTS, 'could not create the post: {url} answered too early (425) (server said: '
                     '"Injected fault 425.")'),
        ("429", POSTS, "could not create the post: Mattermost asks to slow down (429)"),
        ("502", POSTS, "could not create the post: {url} answered 502 "
                       + NOT_MATTERMOST.format("502 Bad Gateway")),
        ("503", FILES, "could not upload the report: {url} answered 503 "
                       + NOT_MATTERMOST.format("503 Service Temporarily Unavailable")),
        ("504", POSTS, "could not create the post: {url} answered 504 "
                       + NOT_MATTERMOST.format("504 Gateway Time-out")),
        (507, POSTS, 'could not create the post: {url} answered 507 (server said: '
                     '"Injected fault 507.")'),
    ],
    ids=["reset-post", "reset-upload", "408-post", "408-upload", "425-post", "429-post",
         "502-post", "503-upload", "504-post", "507-post"],
)  # fmt: skip
def test_a_retryable_answer_is_retried_and_the_alert_reaches_the_channel(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    answer: str | int,
    path: str,
    reason: str,
) -> None:
    caplog.set_level(logging.INFO, logger="flask_perfalert")
    perf = monitored(app, standin, spool_dir, mattermost_max_retries=3)
    if isinstance(answer, int):  # Mattermost's own answer, with its JSON error
        standin.fault(status=answer, path=path)
    else:
        standin.proxy(answer, paths=(path,), retry_after=0.2 if answer == "429" else None)
    app.test_client().get("/slow/a")
    settle()

    [post] = standin.posts
    assert len(post["file_ids"]) == 1, "with its report"
    assert "could not be attached" not in post["message"]
    assert len(standin.calls("POST", path)) == 2, "tried again once"
    delay = r"0\.2" if answer == "429" else r"\d+\.\d"  # a 429's Retry-After is the wait
    expected = re.escape(
        f"Mattermost alert for GET slow: {reason.format(url=standin.url)}; try 2 of 4 in "
    )
    assert any(re.fullmatch(expected + delay + r" s\.", m) for m in logged(caplog, logging.INFO))
    assert spooled(spool_dir) == [] and perf.stats(app)["delivered"] == 1
    no_token(caplog, standin)


def test_when_the_retries_are_used_up_the_alert_waits_and_is_sent_once_the_proxy_recovers(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mm, "REPLAY_MIN", 0.3)
    monitored(app, standin, spool_dir, mattermost_max_retries=1)
    standin.script("502", "504")
    app.test_client().get("/slow/a")
    settle()
    assert standin.posts == [] and len(spooled(spool_dir)) == 1, "kept, not dropped"
    reason = f"could not create the post: {standin.url} answered 504 " + NOT_MATTERMOST.format(
        "504 Gateway Time-out"
    )
    assert (
        f"Mattermost alert for GET slow kept in the spool {spool_dir}: {reason} (after 2 tries); "
        "it is sent again later." in logged(caplog, logging.WARNING)
    )
    [post] = standin.wait_posts(1, timeout=20)  # the replay timer, no new alert
    assert len(post["file_ids"]) == 1
    settle()
    assert spooled(spool_dir) == []


# -- keep in the spool: a setting an admin fixes --------------------------------------------------
@pytest.mark.allow_internal_errors  # each is an ERROR naming the setting, as it should be
@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("token", 'Mattermost rejected the token (401); check PERFALERT_MATTERMOST_TOKEN (server '
                  'said: "Invalid or expired session, please login again.")'),
        ("channel", "channel not found or bot not a member (403): could not upload the report in "
                    "channel {other}; check PERFALERT_MATTERMOST_CHANNEL_ID and add the bot to the "
                    'channel (server said: "You do not have the appropriate permissions.")'),
        (404, "could not upload the report: not found (404) on {url}; is PERFALERT_MATTERMOST_URL "
              'the Mattermost server? (server said: "Injected fault 404.")'),
        (405, "could not upload the report: not found (405) on {url}; is PERFALERT_MATTERMOST_URL "
              'the Mattermost server? (server said: "Injected fault 405.")'),
    ],
)  # fmt: skip
def test_a_settings_problem_keeps_the_alert_with_an_error_naming_the_setting(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    problem: str | int,
    reason: str,
) -> None:
    perf = monitored(app, standin, spool_dir)
    if problem == "token":
        app.config["PERFALERT_MATTERMOST_TOKEN"] = "a-revoked-token"
    elif problem == "channel":
        app.config["PERFALERT_MATTERMOST_CHANNEL_ID"] = standin.other_channel_id
    else:
        standin.fault(status=int(problem), path=FILES, times=None)
    perf.init_app(app)
    app.test_client().get("/slow/a")
    settle()

    assert standin.posts == [] and len(spooled(spool_dir)) == 1, "kept, not dropped"
    assert len(standin.calls("POST", FILES)) == 1, "not retried: it needs a person"
    reason = reason.format(url=standin.url, other=standin.other_channel_id)
    assert logged(caplog, logging.ERROR) == [
        f"Mattermost alert for GET slow kept in the spool {spool_dir}: {reason}; it is sent "
        "again later."
    ]
    no_token(caplog, standin)
    assert "a-revoked-token" not in caplog.text

    # The admin fixes it; the kept alert goes to the channel.
    app.config["PERFALERT_MATTERMOST_TOKEN"] = standin.token
    app.config["PERFALERT_MATTERMOST_CHANNEL_ID"] = standin.channel_id
    standin.clear_faults()
    perf.init_app(app)
    result = app.test_cli_runner().invoke(args=["perfalert", "check"])
    assert "1 alert(s) were waiting; 1 sent, 0 left." in result.output, result.output


# -- keep in the spool: an answer the policy does not know ----------------------------------------
@pytest.mark.allow_internal_errors  # an answer nobody expects is an ERROR: someone should look
@pytest.mark.parametrize(
    ("answer", "path", "reason"),
    [
        ("400", POSTS, "could not create the post: {url} refused the request (400) "
                       + NOT_MATTERMOST.format("400 Bad Request")),
        (400, POSTS, 'could not create the post: {url} refused the request (400) (server said: '
                     '"Injected fault 400.")'),
        (418, POSTS, 'could not create the post: {url} refused the request (418) (server said: '
                     '"Injected fault 418.")'),
        (451, FILES, 'could not upload the report: {url} refused the request (451) (server said: '
                     '"Injected fault 451.")'),
    ],
    ids=["400-proxy-page", "400-not-about-the-message", "418", "451-upload"],
)  # fmt: skip
def test_an_unknown_answer_never_drops_the_alert(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    answer: str | int,
    path: str,
    reason: str,
) -> None:
    monkeypatch.setattr(mm, "REPLAY_MIN", 0.3)
    perf = monitored(app, standin, spool_dir)
    if isinstance(answer, int):
        standin.fault(status=answer, path=path)
    else:
        standin.proxy(answer, paths=(path,))
    app.test_client().get("/slow/a")
    settle()
    detail = "; check the server and any proxy in front of it"
    assert (
        f"Mattermost alert for GET slow kept in the spool {spool_dir}: "
        f"{reason.format(url=standin.url)}{detail}; it is sent again later."
        in logged(caplog, logging.ERROR)
    )
    assert perf.stats(app)["dropped"] == 0
    [post] = standin.wait_posts(1, timeout=20)  # the answer was a one-off: the replay sends it
    assert len(post["file_ids"]) == 1
    no_token(caplog, standin)


# -- a smaller post -------------------------------------------------------------------------------
@pytest.mark.parametrize("file_reports", [True, False], ids=["report-folder", "no-report-folder"])
def test_a_report_the_proxy_finds_too_large_is_left_off_and_the_message_says_where_it_is(
    app: Flask,
    spool_dir: Path,
    report_dir: Path,
    caplog: pytest.LogCaptureFixture,
    file_reports: bool,
) -> None:
    # nginx's client_max_body_size: the report's upload is larger, the post is not.
    with MattermostStandIn(proxy_body_limit=20_000) as standin:
        monitored(app, standin, spool_dir, file_enabled=file_reports)
        app.test_client().get("/slow/a")
        settle()
        [post] = standin.posts
        assert post["file_ids"] == []
        assert len(standin.calls("POST", FILES)) == 1, "not retried: it would not fit later"
    reason = "report too large (413) " + NOT_MATTERMOST.format("413 Request Entity Too Large")
    if file_reports:
        [report] = report_dir.glob("perfalert-*.html")
        where, note = f"the full report: {report}", f"the full report is `{report}`"
    else:
        assert not report_dir.exists() or not list(report_dir.glob("perfalert-*.html"))
        where = note = (
            "the report is in no report folder (file reports are off or it was not written)"
        )
    assert post["message"].endswith(f"\n_The report could not be attached: {reason}; {note}._")
    assert (
        logged(caplog, logging.WARNING).count(
            f"Mattermost alert for GET slow: {reason}; posting it without the report ({where})."
        )
        == 1
    )
    assert spooled(spool_dir) == []


def test_file_uploads_disabled_on_the_server_post_the_message_without_the_report(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, report_dir: Path
) -> None:
    monitored(app, standin, spool_dir)
    standin.fault(status=501, path=FILES)  # Mattermost's FeatureDisabled, as JSON
    app.test_client().get("/slow/a")
    settle()
    [post] = standin.posts
    [report] = report_dir.glob("perfalert-*.html")
    assert post["file_ids"] == []
    assert (
        "_The report could not be attached: Mattermost refused the report (501) (server said: "
        f'"Injected fault 501."); the full report is `{report}`._' in post["message"]
    )


@pytest.mark.parametrize("refusals", [1, 2])
def test_a_post_the_proxy_finds_too_large_is_sent_shorter_with_a_note(
    app: Flask,
    standin: MattermostStandIn,
    spool_dir: Path,
    report_dir: Path,
    caplog: pytest.LogCaptureFixture,
    refusals: int,
) -> None:
    monitored(app, standin, spool_dir)
    standin.script(*["413"] * refusals)
    app.test_client().get("/slow/a?page=2")
    settle()

    [post] = standin.posts
    assert len(post["file_ids"]) == 1, "the report is still attached"
    [report] = report_dir.glob("perfalert-*.html")
    reason = "post too large (413) " + NOT_MATTERMOST.format("413 Request Entity Too Large")
    text, note = post["message"].rsplit("\n", 1)
    assert note == f"_This message was cut to fit: {reason}; the full report is `{report}`._"
    assert text.startswith("#### :hourglass: Slow request: `GET` `slow` took **")
    if refusals == 1:
        assert len(text) <= 1000 and "**Duration:**" in text
    else:
        assert "\n" not in text, "only the heading is left"
    line = (
        f"Mattermost alert for GET slow: {reason}; posting a shorter message (the full report: "
        f"{report})."
    )
    assert logged(caplog, logging.WARNING).count(line) == refusals
    assert len(standin.calls("POST", POSTS)) == refusals + 1
    assert spooled(spool_dir) == []


@pytest.mark.allow_internal_errors  # a body limit nothing fits under is an ERROR: raise it
def test_a_post_refused_even_cut_to_its_heading_is_kept_in_the_spool(
    app: Flask, standin: MattermostStandIn, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    perf = monitored(app, standin, spool_dir)
    standin.script("413", "413", "413")
    app.test_client().get("/slow/a")
    settle()
    assert standin.posts == [] and len(spooled(spool_dir)) == 1
    reason = "post too large (413) " + NOT_MATTERMOST.format("413 Request Entity Too Large")
    assert logged(caplog, logging.ERROR) == [
        f"Mattermost alert for GET slow kept in the spool {spool_dir}: {reason}, even cut to its "
        "heading; raise the body size limit of the server or of the proxy in front of it "
        "(nginx: client_max_body_size); it is sent again later."
    ]
    assert perf.stats(app)["dropped"] == 0
    result = app.test_cli_runner().invoke(args=["perfalert", "check"])  # the proxy is fixed
    assert "1 alert(s) were waiting; 1 sent, 0 left." in result.output, result.output


# -- drop: only the message itself, refused for good ----------------------------------------------
@pytest.mark.allow_internal_errors  # the drop is an ERROR with Mattermost's reason
def test_a_message_mattermost_refuses_as_invalid_is_dropped_with_its_reason(
    app: Flask, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with MattermostStandIn(max_post_size=100) as standin:  # every alert is longer
        perf = monitored(app, standin, spool_dir)
        app.test_client().get("/slow/a")
        settle()
        assert standin.posts == []
        assert len(standin.calls("POST", POSTS)) == 1, "not tried again: it cannot succeed"
    assert logged(caplog, logging.ERROR) == [
        "Mattermost alert for GET slow dropped: Mattermost refused the message itself (400) "
        '(server said: "Invalid Message.").'
    ]
    assert spooled(spool_dir) == []
    stats = perf.stats(app)
    assert (stats["dropped"], stats["delivered"]) == (1, 0)


# -- the table in the docs ------------------------------------------------------------------------
def test_the_docs_show_every_row_of_the_policy_with_its_log_line() -> None:
    page = " ".join((ROOT / "docs" / "mattermost.rst").read_text().split())
    for rule in (*POLICY, SHORTEST_REFUSED, UNKNOWN):
        assert " ".join(rule.answer.split()) in page, rule.answer
        assert str(rule.log) in page.replace("``", ""), rule.log
    for line in (LOG_RETRIES_OVER, LOG_REPLAY_STOPS):
        assert str(line) in page.replace("``", ""), line
