"""A generated report, opened in a real browser (headless Chromium).

The call tree is drawn by pyinstrument's JavaScript, so the checks read the DOM
after the scripts ran, and ask the browser what a person would see: the header
block is on top (not covered by the call tree) and the slow function's row of
the call tree is on the page.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from browser import chromium
from flask import Flask, request

from flask_perfalert import PerfAlert, SlowRequestEvent

#: Run in a copy of the report after pyinstrument's scripts; writes what the
#: browser laid out into <pre id="probe">, which --dump-dom then shows.
PROBE = """
<script>
setTimeout(function () {
  var out = {};
  var header = document.getElementById("perfalert-header");
  var h1 = header && header.querySelector("h1");
  if (h1) {
    var r = h1.getBoundingClientRect();
    var hit = document.elementFromPoint(r.left + 5, r.top + r.height / 2);
    out.h1_on_top = !!hit && header.contains(hit);
    out.h1_top = r.top;
  }
  var rows = document.getElementById("perfalert-headers");
  out.headers_height = rows ? rows.getBoundingClientRect().height : 0;
  var app = document.getElementById("app");
  out.app_top = app ? app.getBoundingClientRect().top : null;
  out.tree_rows = [];
  if (app) {
    app.querySelectorAll("*").forEach(function (el) {
      if (el.children.length === 0 && el.textContent.trim() === FUNCTION_NAME) {
        var b = el.getBoundingClientRect();
        var hit = document.elementFromPoint(b.left + 1, b.top + b.height / 2);
        out.tree_rows.push({top: b.top, height: b.height, visible: !!hit && app.contains(hit)});
      }
    });
  }
  out.viewport_height = window.innerHeight;
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 1000);
</script>
"""


def compute_invoice_totals(seconds: float) -> int:
    """The slow function the report must point at."""
    deadline = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < deadline:
        total = (total + 7) % 1_000_003
    return total


@pytest.fixture
def report(
    app: Flask, events: list[SlowRequestEvent], report_dir: Path, wait_delivery: Any
) -> Path:
    PerfAlert(app, threshold_seconds=0.05)

    @app.post("/checkout/<int:cart>")
    def checkout(cart: int) -> str:
        # The form is shown because the view read it (the extension never reads a body).
        request.form.get("note")
        return str(compute_invoice_totals(0.15))

    response = app.test_client().post(
        "/checkout/42?coupon=SPRING",
        headers={
            "User-Agent": "BrowserTest/1.0",
            "X-Request-Id": "req-4711",
            "Accept-Language": "de-CH",
            "Authorization": "Bearer very-secret-token",
        },
        data={"card_number": "4111111111111111", "note": "gift wrap"},
    )
    assert response.status_code == 200
    wait_delivery()
    [path] = report_dir.glob("perfalert-*.html")
    return path


@pytest.mark.server
def test_report_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    page = report.read_text()
    probe_page = tmp_path / "probe.html"
    head, _, tail = page.rpartition("</body>")
    probe = PROBE.replace("FUNCTION_NAME", json.dumps("compute_invoice_totals"))
    probe_page.write_text(f"{head}{probe}</body>{tail}")

    dumped = chromium(tmp_path / "profile-dom", "--dump-dom", probe_page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    dom = dumped.stdout

    # The request header block is rendered, with its values, and no credential.
    headers_table = re.search(r'<table id="perfalert-headers">(.*?)</table>', dom, re.S)
    assert headers_table, dom[:3000]
    assert "X-Request-Id" in headers_table.group(1)
    assert "req-4711" in headers_table.group(1)
    assert "BrowserTest/1.0" in headers_table.group(1)
    assert "very-secret-token" not in dom
    assert "4111111111111111" not in dom
    assert "gift wrap" in dom

    # pyinstrument's script drew the call tree: the function's name is in #app's
    # markup (before the page's own <script> tags), not only in the JSON data.
    app_markup = dom[dom.index('<div id="app"') :]
    app_markup = app_markup[: app_markup.index("<script")]
    assert "compute_invoice_totals" in app_markup

    probe_json = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert probe_json, "the probe script did not run"
    seen = json.loads(probe_json.group(1).replace("&quot;", '"'))
    # The header is on top, not covered by the call tree, and the tree is below it.
    assert seen["h1_on_top"] is True, seen
    assert seen["headers_height"] > 0, seen
    assert seen["app_top"] > seen["h1_top"], seen
    # The slow function's row of the call tree is on screen, where a person sees it.
    assert any(
        row["visible"] and 0 <= row["top"] < seen["viewport_height"] for row in seen["tree_rows"]
    ), seen

    shot = tmp_path / "report.png"
    taken = chromium(tmp_path / "profile-shot", f"--screenshot={shot}", report.as_uri())
    assert taken.returncode == 0, taken.stderr[-3000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
