"""The report index: ``index.html`` in the report folder, read as a person (and a browser) would.

Reports come from real requests. Where a test needs what the monitor does not
decide by itself (a report days old, a usual latency, an escalation, suppressed
requests), it takes a real event and has the file subscriber write a variant.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from browser import chromium
from flask import Flask

from flask_perfalert import (
    Escalation,
    PerfAlert,
    PerfAlertSettings,
    SlowRequestEvent,
    UsualLatency,
)
from flask_perfalert.alerts.file import FileAlerts
from flask_perfalert.stats import Stats

RAW_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
HOSTILE_ENDPOINT = '<script>alert("e")</script>\'"><img src=x onerror=alert(1)>\x1b[31m\nx'
HOSTILE_PATH = "/h/</script><svg onload=alert(1)>\"x\"?q=<img src=x onerror=alert(2)>&r='a'"


# -- helpers ------------------------------------------------------------------------------


class IndexPage(HTMLParser):
    """The rows of the reports table and the chart's groups, as parsed from the page."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.rows: list[dict[str, Any]] = []
        self.groups: list[dict[str, Any]] = []
        self._cell: list[str] | None = None
        self._in_svg_text = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = {name: value or "" for name, value in attrs}
        self.attributes.extend(found.items())
        if tag == "tr" and "data-report" in found:
            self.rows.append({"report": found["data-report"], "cells": [], "href": None})
        elif tag == "td" and self.rows:
            self._cell = []
            self.rows[-1]["cells"].append(self._cell)
        elif tag == "a" and self.rows and self._cell is not None:
            self.rows[-1]["href"] = found.get("href")
        elif tag == "g" and found.get("class") == "endpoint":
            self.groups.append(
                {
                    "endpoint": found["data-endpoint"],
                    "total": int(found["data-total"]),
                    "bars": {},
                    "label": "",
                }
            )
        elif tag == "rect" and found.get("class") == "bar":
            self.groups[-1]["bars"][found["data-period"]] = int(found["data-count"])
        elif tag == "text" and found.get("class") == "label":
            self._in_svg_text = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "text":
            self._in_svg_text = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_svg_text:
            self.groups[-1]["label"] += data

    def table(self) -> list[dict[str, Any]]:
        """Each row: its report, link, and cells by column name."""
        names = ["time", "endpoint", "duration", "unusual", "status", "escalation", "suppressed"]
        out = []
        for row in self.rows:
            texts = ["".join(cell).strip() for cell in row["cells"]]
            cells = dict(zip(names, texts, strict=True))
            out.append({"report": row["report"], "href": row["href"], **cells})
        return out


def index_of(folder: Path) -> IndexPage:
    return IndexPage((folder / "index.html").read_text(encoding="utf-8"))


def crunch(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def slow_views(app: Flask) -> PerfAlert:
    perf = PerfAlert(app, threshold_seconds=0.03, profiler="none", storage_uri="memory://")

    @app.get("/orders/<int:number>")
    def orders(number: int) -> str:
        crunch(0.05)
        return "order"

    @app.get("/gone")
    def gone() -> tuple[str, int]:
        crunch(0.06)
        return "gone", 404

    return perf


def variant(event: SlowRequestEvent, **changes: Any) -> SlowRequestEvent:
    """A new event like ``event`` (its own id and report) with ``changes``."""
    return dataclasses.replace(
        event,
        id=uuid.uuid4().hex,
        report_path=None,
        _html=None,
        _html_done=False,
        _lock=threading.Lock(),
        **changes,
    )


def file_alerts_of(perf: PerfAlert, app: Flask) -> FileAlerts:
    alerts = perf._monitor(app).file_alerts
    assert alerts is not None
    return alerts


def alerted(
    app: Flask, events: list[SlowRequestEvent], wait_delivery: Any, *paths: str
) -> tuple[FileAlerts, list[SlowRequestEvent]]:
    """The reports of real requests to ``paths`` (of :func:`slow_views`) and their subscriber."""
    perf = slow_views(app)
    client = app.test_client()
    for path in paths:
        client.get(path)
    wait_delivery()
    assert len(events) == len(paths)
    return file_alerts_of(perf, app), list(events)


def name_of(event: SlowRequestEvent) -> str:
    """The file name of the report the file subscriber wrote for ``event``."""
    assert event.report_path is not None
    return event.report_path.name


def utc_time(event: SlowRequestEvent) -> str:
    return event.timestamp.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# -- the table ------------------------------------------------------------------------------


def test_index_lists_every_report_newest_first_rewritten_after_each(
    app: Flask, events: list[SlowRequestEvent], report_dir: Path, wait_delivery: Any
) -> None:
    perf = slow_views(app)

    @perf.watch(threshold=0.02)
    def nightly_job() -> None:
        crunch(0.04)

    client = app.test_client()
    seen_rows = []
    client.get("/orders/7?page=2")
    wait_delivery()
    seen_rows.append(len(index_of(report_dir).rows))
    client.get("/gone")
    wait_delivery()
    seen_rows.append(len(index_of(report_dir).rows))
    with app.app_context():
        nightly_job()
    wait_delivery()
    seen_rows.append(len(index_of(report_dir).rows))
    assert seen_rows == [1, 2, 3]  # rewritten after each report

    orders, gone, job = events
    rows = index_of(report_dir).table()
    assert [row["report"] for row in rows] == [name_of(e) for e in (job, gone, orders)]
    for row, event in zip(rows, (job, gone, orders), strict=True):
        assert row["href"] == name_of(event)
        assert (report_dir / row["href"]).is_file()
        assert row["time"] == utc_time(event)
        assert row["duration"] == f"{event.duration:.3f} s"
        assert row["escalation"] == "" and row["suppressed"] == "0" and row["unusual"] == ""
    assert rows[0]["endpoint"] == f"{nightly_job.__module__}.{nightly_job.__qualname__}()"
    assert rows[0]["status"] == ""
    assert rows[1]["endpoint"] == "GET gone" + "http://localhost/gone"
    assert rows[1]["status"] == "404"
    assert rows[2]["endpoint"] == "GET orders" + "http://localhost/orders/7?page=2"
    assert rows[2]["status"] == "200"

    listing = app.test_cli_runner().invoke(args=["perfalert", "reports"])
    assert f"Index of every report, with a chart: {report_dir / 'index.html'}" in listing.output


def test_index_says_how_unusual_whether_it_escalated_and_what_was_suppressed(
    app: Flask, events: list[SlowRequestEvent], report_dir: Path, wait_delivery: Any
) -> None:
    alerts, [event] = alerted(app, events, wait_delivery, "/orders/1")
    later = event.timestamp + timedelta(seconds=1)
    alerts.write(
        variant(
            event,
            timestamp=later,
            duration=1.84,
            usual=UsualLatency(median=0.08, p95=0.21, requests=400),
            escalation=Escalation(previous_worst=0.8, factor=2.0),
            suppressed=7,
        )
    )

    newest, first = index_of(report_dir).table()
    assert newest["duration"] == "1.840 s"
    assert newest["unusual"] == "23 x median 80 ms"
    assert newest["escalation"] == "yes: 2.3 x the worst before (0.800 s)"
    assert newest["suppressed"] == "7"
    assert 'title="p95 210 ms"' in (report_dir / "index.html").read_text()
    assert first["unusual"] == "" and first["escalation"] == "" and first["suppressed"] == "0"
    listed = app.test_cli_runner().invoke(args=["perfalert", "reports", "--json"]).output
    newest_json = json.loads(listed)[0]
    assert newest_json["usual_median"] == 0.08 and newest_json["usual_p95"] == 0.21
    assert newest_json["escalated_from"] == 0.8 and newest_json["suppressed"] == 7


def test_pruned_reports_leave_the_index(
    app: Flask, events: list[SlowRequestEvent], report_dir: Path, wait_delivery: Any
) -> None:
    app.config["PERFALERT_FILE_MAX_FILES"] = 2
    alerts, (first, second) = alerted(app, events, wait_delivery, "/orders/1", "/gone")
    assert first.report_path is not None and second.report_path is not None
    # Reports by count: a third one pushes out the oldest.
    third = alerts.write(variant(first, timestamp=second.timestamp + timedelta(seconds=1)))
    assert third is not None
    assert not first.report_path.exists()
    rows = index_of(report_dir).table()
    assert [row["report"] for row in rows] == [third.name, second.report_path.name]

    # Reports by age: one older than FILE_MAX_AGE_DAYS goes with the next write.
    old = time.time() - 31 * 86400
    os.utime(second.report_path, (old, old))
    fourth = alerts.write(variant(first, timestamp=second.timestamp + timedelta(seconds=2)))
    assert fourth is not None and not second.report_path.exists()
    assert [row["report"] for row in index_of(report_dir).table()] == [fourth.name, third.name]


# -- what the page holds ---------------------------------------------------------------------


def hostile_index(app: Flask, report_dir: Path, wait_delivery: Any) -> str:
    PerfAlert(app, threshold_seconds=0.03, profiler="none", storage_uri="memory://")

    def hostile(anything: str) -> str:
        crunch(0.05)
        return "ok"

    app.add_url_rule("/h/<path:anything>", HOSTILE_ENDPOINT, hostile)
    app.test_client().get(HOSTILE_PATH)
    wait_delivery()
    return (report_dir / "index.html").read_text(encoding="utf-8")


def test_hostile_endpoint_names_and_urls_are_text_in_the_index(
    app: Flask, report_dir: Path, wait_delivery: Any
) -> None:
    page = hostile_index(app, report_dir, wait_delivery)
    parsed = IndexPage(page)

    # Shown as text, in the table, in the chart's label, its titles and attributes.
    shown = 'GET <script>alert("e")</script>\'"><img src=x onerror=alert(1)>\\x1b[31m\\nx'
    [row] = parsed.table()
    assert row["endpoint"].startswith(shown)
    assert "/h/%3C/script%3E%3Csvg" in row["endpoint"]  # the URL, as the request sent it
    [group] = parsed.groups
    assert group["endpoint"] == shown
    assert group["label"].startswith("GET <script>alert")
    # ...and it made no element and no attribute: the page has the same tags as a benign one.
    assert not RAW_CONTROL.search(page)
    assert "<script" not in page and "<img" not in page and "<svg onload" not in page
    assert not [name for name, _ in parsed.attributes if name.startswith("on")]
    benign_dir = report_dir.parent / "benign"
    benign = Flask("benign")
    benign.config.update(PERFALERT_FILE_DIR=str(benign_dir))
    benign.test_client_class = app.test_client_class
    PerfAlert(benign, threshold_seconds=0.03, profiler="none", storage_uri="memory://")
    benign.add_url_rule("/h/<path:anything>", "plain", lambda anything: crunch(0.05) or "ok")
    benign.test_client().get("/h/x?q=1")
    wait_delivery()
    assert IndexPage((benign_dir / "index.html").read_text()).tags == parsed.tags


def test_the_index_has_no_external_asset_and_runs_no_script(
    app: Flask, report_dir: Path, wait_delivery: Any
) -> None:
    page = hostile_index(app, report_dir, wait_delivery)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    assert "<link" not in page and "<script" not in page and "<iframe" not in page
    # Even a script that got in would not run: the page forbids every script.
    assert "default-src 'none'" in page
    hrefs = [value for name, value in IndexPage(page).attributes if name == "href"]
    assert hrefs and all(report_dir.joinpath(href).is_file() for href in hrefs)


@pytest.mark.parametrize("planted", ["file", "link"])
def test_an_index_html_of_someone_else_is_left_alone(
    app: Flask,
    report_dir: Path,
    tmp_path: Path,
    wait_delivery: Any,
    caplog: pytest.LogCaptureFixture,
    planted: str,
) -> None:
    report_dir.mkdir(mode=0o700)
    theirs = report_dir / "index.html"
    if planted == "file":
        theirs.write_text("<h1>Our team's own page</h1>")
    else:
        (tmp_path / "elsewhere.html").write_text("<h1>Our team's own page</h1>")
        theirs.symlink_to(tmp_path / "elsewhere.html")
    slow_views(app)
    app.test_client().get("/orders/1")
    wait_delivery()
    assert theirs.read_text() == "<h1>Our team's own page</h1>"
    assert theirs.is_symlink() == (planted == "link")
    assert len(list(report_dir.glob("perfalert-*.html"))) == 1  # the report itself is there
    [warning] = [r for r in caplog.records if "report index" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "is not an index this extension wrote" in warning.getMessage()
    assert "PERFALERT_FILE_DIR" in warning.getMessage()

    opened = app.test_cli_runner().invoke(args=["perfalert", "reports", "--open"])
    assert opened.exit_code == 1
    assert "is not an index this extension wrote" in opened.output


def test_workers_sharing_the_folder_leave_an_index_of_every_report(
    report_dir: Path, wait_delivery: Any, events: list[SlowRequestEvent], app: Flask
) -> None:
    # Each worker has its own subscriber (and what it read of the reports); they
    # write at the same moments, and the index lists all of their reports.
    _, [event] = alerted(app, events, wait_delivery, "/orders/1")
    workers = []
    for number in range(4):
        worker = Flask(f"worker{number}")
        worker.config.update(PERFALERT_FILE_DIR=str(report_dir))
        workers.append(file_alerts_of(PerfAlert(worker, storage_uri="memory://"), worker))
    start = threading.Barrier(len(workers))
    written: list[Path | None] = []

    def work(alerts: FileAlerts, number: int) -> None:
        start.wait()
        for n in range(15):
            when = event.timestamp + timedelta(milliseconds=number * 100 + n + 1)
            written.append(alerts.write(variant(event, timestamp=when)))

    threads = [threading.Thread(target=work, args=(w, n)) for n, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(written) == 60 and None not in written
    listed = {row["report"] for row in index_of(report_dir).table()}
    assert listed == {p.name for p in written if p is not None} | {name_of(event)}


def test_a_worker_that_listed_the_folder_first_does_not_drop_a_newer_report(
    app: Flask, events: list[SlowRequestEvent], report_dir: Path, wait_delivery: Any
) -> None:
    # Worker A has listed the reports and is about to write the index when worker B
    # writes a report. Without a lock A's index, written last, would miss B's report.
    alerts, [event] = alerted(app, events, wait_delivery, "/orders/1")
    settings = PerfAlertSettings(file_dir=alerts.folder)
    a_listed = threading.Event()
    b_done = threading.Event()

    def a_clock() -> float:  # the index asks for "now" between listing and writing
        a_listed.set()
        b_done.wait(1.0)  # B cannot finish while A holds the folder: this times out
        return time.time()

    worker_a = FileAlerts(settings, Stats(), clock=a_clock)
    worker_b = FileAlerts(settings, Stats())

    def b() -> None:
        a_listed.wait(10)
        worker_b.write(variant(event, timestamp=event.timestamp + timedelta(seconds=2)))
        b_done.set()

    thread = threading.Thread(target=b)
    thread.start()
    a_report = worker_a.write(variant(event, timestamp=event.timestamp + timedelta(seconds=1)))
    thread.join(10)
    assert a_report is not None and b_done.is_set()
    listed = [row["report"] for row in index_of(report_dir).table()]
    assert listed == [p.name for p in sorted(report_dir.glob("perfalert-*.html"), reverse=True)]
    assert len(listed) == 3


# -- the chart ------------------------------------------------------------------------------


def test_the_chart_counts_slow_requests_per_endpoint_and_day_over_the_window(
    app: Flask, events: list[SlowRequestEvent], report_dir: Path, wait_delivery: Any
) -> None:
    alerts, (orders, gone) = alerted(app, events, wait_delivery, "/orders/1", "/gone")
    now = orders.timestamp

    def day(event_time: datetime) -> str:
        return event_time.astimezone(timezone.utc).strftime("%Y-%m-%d")

    # orders: today 1 (the real one), 3 days ago an alert after 4 suppressed, and one
    # 12 days ago (outside the 10-day window: not counted).
    three_days_ago = now - timedelta(days=3)
    alerts.write(variant(orders, timestamp=three_days_ago, suppressed=4))
    alerts.write(variant(orders, timestamp=now - timedelta(days=12), suppressed=9))
    # gone: today 1 (real) + an alert after 2 suppressed, 1 day ago.
    one_day_ago = now - timedelta(days=1)
    alerts.write(variant(gone, timestamp=one_day_ago, suppressed=2))
    # Twelve more endpoints, one slow request each: only the top 10 get a row.
    for number in range(12):
        alerts.write(variant(gone, endpoint=f"extra_{number:02d}", timestamp=now))

    page = (report_dir / "index.html").read_text()
    groups = {g["endpoint"]: g for g in IndexPage(page).groups}
    assert len(groups) == 10
    assert list(groups)[:2] == ["GET orders", "GET gone"]  # the busiest first
    assert groups["GET orders"]["bars"] == {day(now): 1, day(three_days_ago): 5}
    assert groups["GET orders"]["total"] == 6
    assert groups["GET gone"]["bars"] == {day(now): 1, day(one_day_ago): 3}
    assert groups["GET gone"]["total"] == 4
    assert all(groups[f"GET extra_{n:02d}"]["total"] == 1 for n in range(8))
    assert "And 4 other endpoints with 4 slow requests in the window." in page
    assert len(page.split('<table id="perfalert-reports">')[1].split("<tr data-report")) == 1 + 17


def test_a_short_window_is_charted_by_the_hour(
    app: Flask, events: list[SlowRequestEvent], report_dir: Path, wait_delivery: Any
) -> None:
    app.config["PERFALERT_ALERT_WINDOW_DAYS"] = 1
    alerts, [orders] = alerted(app, events, wait_delivery, "/orders/1")
    earlier = orders.timestamp - timedelta(hours=5)
    alerts.write(variant(orders, timestamp=earlier))
    page = (report_dir / "index.html").read_text()
    [group] = IndexPage(page).groups
    hour = "%Y-%m-%d %H:00"
    assert group["bars"] == {orders.timestamp.strftime(hour): 1, earlier.strftime(hour): 1}
    assert "last 1 day (the alert window)" in page


# -- in a browser ---------------------------------------------------------------------------

#: Run in a copy of the index (without its no-script policy); writes what the
#: browser laid out into <pre id="probe">, which --dump-dom then shows.
PROBE = """
<script>
var out = {groups: [], links: []};
document.querySelectorAll("#perfalert-chart g.endpoint").forEach(function (g) {
  var bars = [];
  g.querySelectorAll("rect.bar").forEach(function (r) {
    var b = r.getBoundingClientRect();
    bars.push({count: +r.getAttribute("data-count"), width: b.width, height: b.height});
  });
  out.groups.push({endpoint: g.getAttribute("data-endpoint"), bars: bars});
});
var chart = document.getElementById("perfalert-chart").getBoundingClientRect();
out.chart = {width: chart.width, height: chart.height};
document.querySelectorAll("#perfalert-reports a").forEach(function (a) {
  out.links.push(a.href);
});
var pre = document.createElement("pre");
pre.id = "probe";
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>
"""


@pytest.mark.server
def test_the_index_in_headless_chromium(
    app: Flask,
    events: list[SlowRequestEvent],
    report_dir: Path,
    wait_delivery: Any,
    tmp_path: Path,
) -> None:
    alerts, [orders, _] = alerted(app, events, wait_delivery, "/orders/1", "/gone")
    alerts.write(variant(orders, timestamp=orders.timestamp - timedelta(days=2), suppressed=3))
    index = report_dir / "index.html"
    page = index.read_text()

    # As written: the page forbids scripts, so one planted in it does not run.
    planted = report_dir / "index-planted.html"
    planted.write_text(page.replace("</body>", PROBE + "</body>"))
    dumped = chromium(tmp_path / "profile-planted", "--dump-dom", planted.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    assert '<svg id="perfalert-chart"' in dumped.stdout
    assert 'id="probe"' not in dumped.stdout

    # Without that policy, a probe reads what the browser laid out.
    probe_page = report_dir / "index-probe.html"
    probe_page.write_text(
        re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page).replace(
            "</body>", PROBE + "</body>"
        )
    )
    dumped = chromium(tmp_path / "profile-dom", "--dump-dom", probe_page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    probe_json = re.search(r'<pre id="probe">(.*?)</pre>', dumped.stdout, re.S)
    assert probe_json, "the probe script did not run"
    seen = json.loads(probe_json.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert seen["chart"]["width"] > 300 and seen["chart"]["height"] > 40
    # One group of bars per endpoint, each bar drawn, with the right counts.
    counts = {g["endpoint"]: sorted(b["count"] for b in g["bars"]) for g in seen["groups"]}
    assert counts == {"GET orders": [1, 4], "GET gone": [1]}
    assert all(b["width"] > 0 and b["height"] > 0 for g in seen["groups"] for b in g["bars"])
    # Every link resolves to a report file next to the index.
    assert len(seen["links"]) == 3
    for link in seen["links"]:
        assert link.startswith("file://")
        target = Path(link[len("file://") :])
        assert target.parent == report_dir.resolve() and target.is_file(), link

    shot = tmp_path / "index.png"
    taken = chromium(tmp_path / "profile-shot", f"--screenshot={shot}", index.as_uri())
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
