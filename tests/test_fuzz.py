"""Bad input, fuzzed: no setting and no request shape makes the extension fail or change a response.

Property-based (hypothesis): random settings of every type through
``load_settings`` and ``PerfAlert(app)``, and random requests (paths, methods,
query strings, headers, bodies) through the same app with and without the
extension, with thresholds so small that every request takes the slow path.
"""

from __future__ import annotations

import io
import json
import logging
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, abort, jsonify, redirect, request, stream_with_context
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from werkzeug.test import EnvironBuilder

from flask_perfalert import PerfAlert, PerfAlertSettings, SlowRequestEvent, perf_slow_request
from flask_perfalert.events_thread import EVENTS
from flask_perfalert.settings import PREFIX, load_settings

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: For the tests that build an app or write a file per example.
FUZZ_HEAVY = settings(FUZZ, max_examples=100)

KEYS = PerfAlertSettings.keys()  # "PERFALERT_X" -> "x"
#: Keys whose random values could reach the network once their feature exists
#: (Mattermost posts, a Redis store): fuzzed with local or invalid values only.
NETWORK_KEYS = {"PERFALERT_MATTERMOST_URL", "PERFALERT_STORAGE_URI"}
#: Keys naming folders: fuzzed with odd values inside the test's temporary folder.
FOLDER_KEYS = {"PERFALERT_FILE_DIR", "PERFALERT_SPOOL_DIR"}


class Unprintable:
    """A value whose repr() and str() raise (hypothesis prints it with ``_repr_pretty_``)."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("Unprintable()")


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


ODD_STRINGS = st.sampled_from(
    [
        "",
        " ",
        "nan",
        "-inf",
        "inf",
        "1e309",
        "0",
        "-1",
        "true",
        "yes",
        "[",
        "{",
        '{"index": "fast"}',
        '{"index": -1}',
        '{"index": 1e-9}',
        '{"index": NaN}',
        '["/health*", "static"]',
        "static, /health*, [",
        "/tmp/\x00nul",
        "\udcff",
        "../../etc",
        "x" * 10_000,
        _deep_json(100_000),
        "{" * 100_000,
    ]
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.builds(pow, st.just(10), st.just(5000)),  # beyond int->str conversion limits
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.binary(max_size=30),
    ODD_STRINGS,
    st.builds(Unprintable),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=10), inner, max_size=4),
        st.frozensets(st.text(max_size=5), max_size=3),
        st.tuples(inner, inner),
    ),
    max_leaves=8,
)
ENV_VALUES = st.one_of(st.text(max_size=40), ODD_STRINGS)
SAFE_NETWORK_VALUES = st.sampled_from(
    [None, "", "memory://", "nope://x", "http://127.0.0.1:9", "not a url", 42, ["memory://"]]
)


@st.composite
def setting_sources(draw: st.DrawFn) -> tuple[dict[Any, Any], dict[str, Any], dict[str, str]]:
    keys = st.sampled_from(sorted(KEYS))
    config: dict[Any, Any] = {}
    for key in draw(st.lists(keys, max_size=8)):
        config[key] = draw(SAFE_NETWORK_VALUES if key in NETWORK_KEYS else VALUES)
    config.update(
        draw(st.dictionaries(st.one_of(st.integers(), st.text(max_size=8)), VALUES, max_size=2))
    )
    if draw(st.booleans()):
        config[PREFIX + draw(st.text(max_size=12))] = draw(VALUES)  # an unknown key
    options: dict[str, Any] = {}
    for key in draw(st.lists(keys, max_size=4)):
        options[KEYS[key]] = draw(SAFE_NETWORK_VALUES if key in NETWORK_KEYS else VALUES)
    environ: dict[str, str] = {}
    for key in draw(st.lists(keys, max_size=6)):
        environ[key] = draw(ENV_VALUES)
    return config, options, environ


class Records(logging.Handler):
    def __init__(self, level: int = logging.DEBUG) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.getMessage()  # a message that cannot be formatted fails here, not later
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("flask_perfalert")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_load_settings_never_raises_and_names_each_rejected_key(records: Records) -> None:
    @FUZZ
    @given(setting_sources())
    @example(({}, {}, {"PERFALERT_EXCLUDE": _deep_json(100_000)}))
    @example(({}, {}, {"PERFALERT_ENDPOINT_THRESHOLDS": "{" * 100_000}))
    @example(({"PERFALERT_ENDPOINT_THRESHOLDS": {"a": -1.0}}, {}, {}))
    @example(({}, {"endpoint_thresholds": {"a": math.nan}}, {}))
    @example(({}, {}, {"PERFALERT_ENDPOINT_THRESHOLDS": '{"a": 0}'}))
    @example(({}, {"threshold_seconds": 10**5000}, {}))
    @example(({"PERFALERT_FILE_MAX_FILES": Unprintable()}, {}, {}))
    @example(({"PERFALERT_FILE_MAX_FILES": 10**5000}, {}, {}))
    def check(sources: tuple[dict[Any, Any], dict[str, Any], dict[str, str]]) -> None:
        config, options, environ = sources
        records.records.clear()
        loaded = load_settings(config, options, environ)
        for threshold in loaded.settings.endpoint_thresholds.values():
            assert threshold > 0  # a threshold of 0, below or NaN would be invalid
        messages = [r.getMessage() for r in records.records]
        assert not [r for r in records.records if r.levelno >= logging.ERROR]
        given_keys = {k for k in KEYS if k in config or k in environ or KEYS[k] in options}
        for key in given_keys:
            if loaded.sources[KEYS[key]] == "default":
                assert any(key in m and "Invalid value" in m for m in messages), (key, messages)
        for message in messages:
            assert "Unprintable" not in message or "no repr" not in message
        loaded.settings.masked()
        json.dumps(loaded.settings.masked(), default=str)

    check()


# -- a test app ---------------------------------------------------------------------------------


def make_app(name: str, folder: Path) -> Flask:
    app = Flask(name)
    # TRUSTED_HOSTS: a random Host header makes request.host raise (Flask answers 400).
    app.config.update(PERFALERT_FILE_DIR=str(folder), TRUSTED_HOSTS=["localhost", "127.0.0.1"])

    @app.route("/", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def index() -> str:
        return "index"

    @app.route("/echo/<path:rest>", methods=["GET", "POST"])
    def echo(rest: str) -> Any:
        return jsonify(path=rest, args=request.args.to_dict(flat=False), method=request.method)

    @app.route("/json", methods=["POST", "PUT"])
    def json_view() -> Any:
        data = request.get_json(silent=True)
        return jsonify(kind=type(data).__name__, size=len(json.dumps(data)))

    @app.post("/form")
    def form() -> Any:
        return jsonify(form=request.form.to_dict(flat=False), files=sorted(request.files))

    @app.post("/data")
    def data() -> str:
        return str(len(request.get_data()))

    @app.get("/items/<int:item_id>/<token>")
    def item(item_id: int, token: str) -> str:
        return f"item {item_id}"

    @app.route("/boom")
    def boom() -> str:
        raise RuntimeError("view failed")

    @app.route("/abort")
    def aborted() -> str:
        abort(418)

    @app.route("/stream")
    def stream() -> Response:
        def generate() -> Iterator[str]:
            yield "a"
            yield request.args.get("x", "b")

        return Response(stream_with_context(generate()))

    @app.route("/go")
    def go() -> Any:
        return redirect("/echo/" + request.args.get("to", "x"))

    app.logger.disabled = True  # /boom's traceback is Flask's, and expected
    return app


# -- random requests ----------------------------------------------------------------------------

PATH_PIECES = st.one_of(
    st.sampled_from(
        [
            "",
            "echo",
            "json",
            "form",
            "data",
            "items",
            "7",
            "boom",
            "abort",
            "stream",
            "go",
            "..",
            ".",
            "%00",
            "%2e%2e",
            "%2F",
            "<script>",
            "ä",
            "视图",
            "\u202e",
            "%ff",
            "//",
        ]
    ),
    st.text(max_size=8),
)
METHODS = st.one_of(
    st.sampled_from(
        [
            "GET",
            "POST",
            "PUT",
            "DELETE",
            "PATCH",
            "HEAD",
            "OPTIONS",
            "TRACE",
            "PROPFIND",
            "get",
            "",
            "G E T",
            "POST\r\n",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=255), max_size=12),
)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "text/plain",
        "application/octet-stream",
        "application/vnd.api+json",
        "application/json; charset=latin-1",
        "\xff/\xfe",
    ]
)


def _repeat(piece: Any, times: int) -> Any:
    return piece * times


HUGE_TEXT = st.builds(_repeat, st.text(min_size=1, max_size=10), st.integers(0, 30_000))
HUGE_BYTES = st.builds(_repeat, st.binary(min_size=1, max_size=10), st.integers(0, 30_000))
JSON_BODIES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
).map(lambda v: json.dumps(v).encode())
BODIES = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    HUGE_BYTES,
    JSON_BODIES,
    st.sampled_from(
        [
            b"{",
            b'{"a": ',
            b"[" * 5000,
            b'{"password": "pw"',
            b"\xff\xfe{}",
            b"a=1&password=2&a=3",
            b"--xyz\r\nContent-Disposition: form-data; "
            b'name="f"; filename="../x"\r\n\r\nDATA\r\n--xyz--\r\n',
        ]
    ),
    HUGE_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
)
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            "X-Api-Key",
            "Authorization",
            "Cookie",
            "Referer",
            "X-Auth-Token",
            "Transfer-Encoding",
            "Content-Length",
            "Host",
            "Accept",
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
        min_size=1,
        max_size=12,
    ),
)
HEADER_VALUES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=40),
    HUGE_TEXT.map(lambda t: t.encode("utf-8", "replace").decode("latin-1")),
)


@st.composite
def wsgi_requests(draw: st.DrawFn) -> dict[str, Any]:
    path = "/" + "/".join(draw(st.lists(PATH_PIECES, max_size=5)))
    query = draw(
        st.one_of(
            st.text(max_size=40),
            HUGE_TEXT,
            st.sampled_from(["a=1&a=2", "password=x&q=<b>", "%zz=%", "&&=&"]),
        )
    )
    return {
        "method": draw(METHODS),
        "path": path.encode("utf-8", "surrogatepass").decode("latin-1"),
        "query": query.encode("utf-8", "surrogatepass").decode("latin-1"),
        "content_type": draw(CONTENT_TYPES),
        "body": draw(BODIES),
        "headers": draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=5)),
        "length": draw(st.sampled_from(["exact", "none", "chunked"])),
    }


def environ_for(req: dict[str, Any]) -> dict[str, Any]:
    environ = EnvironBuilder(method="GET").get_environ()
    environ["REQUEST_METHOD"] = req["method"]
    environ["PATH_INFO"] = req["path"]
    environ["QUERY_STRING"] = req["query"]
    body: bytes = req["body"]
    environ["wsgi.input"] = io.BytesIO(body)
    if req["content_type"] is not None:
        environ["CONTENT_TYPE"] = req["content_type"]
    for name, value in req["headers"]:
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):
            continue
        environ[key] = value
    if req["length"] == "exact":
        environ["CONTENT_LENGTH"] = str(len(body))
    elif req["length"] == "chunked":
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    return environ


def call(app: Flask, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
    seen: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append((status, headers))
        return lambda data: None

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    status, headers = seen[-1]
    return status, list(headers), data


def test_responses_are_byte_identical_with_and_without_the_extension(
    tmp_path: Path, records: Records, clock: Any
) -> None:
    plain = make_app("plain", tmp_path / "unused")
    monitored = make_app("monitored", tmp_path / "reports")
    events: list[SlowRequestEvent] = []

    def receiver(sender: Flask, event: SlowRequestEvent, **extra: Any) -> None:
        events.append(event)

    perf_slow_request.connect(receiver, sender=monitored)
    # Every request is slow, and every one starts a new alert window: the whole
    # slow path (event, redaction, report, retention) runs for each example.
    PerfAlert(monitored, threshold_seconds=1e-9, alert_window_days=0.001, clock=clock)

    @FUZZ
    @given(wsgi_requests())
    def check(req: dict[str, Any]) -> None:
        records.records.clear()
        clock.advance(100.0)  # past the shortest window (86 s)
        expected = call(plain, environ_for(req))
        got = call(monitored, environ_for(req))
        assert got == expected
        assert EVENTS.wait_idle(10)
        errors = [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]
        assert not errors

    try:
        check()
    finally:
        perf_slow_request.disconnect(receiver, sender=monitored)
    assert len(events) >= 150
    for event in events[:20]:
        assert event.html is not None
        json.dumps([event.url, event.params, event.headers], ensure_ascii=False).encode()
    assert len(list((tmp_path / "reports").glob("perfalert-*.html"))) >= 100


def test_random_app_config_never_breaks_the_app(
    tmp_path: Path, records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative FILE_DIR values land here
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # and the default FILE_DIR too
    plain = make_app("plain", tmp_path / "unused")
    expected = {path: call(plain, environ_for(_get(path))) for path in ("/", "/echo/a?b=1")}
    (tmp_path / "a-file").write_text("")
    folders = [
        str(tmp_path / "r"),
        str(tmp_path / "r\x00x"),
        str(tmp_path / "a-file" / "sub"),
        "relative/dir",
        "",
        None,
        42,
        ["x"],
        str(tmp_path / ("é" * 300)),
    ]

    @FUZZ_HEAVY
    @given(setting_sources(), st.sampled_from(folders), st.sampled_from(folders))
    def check(
        sources: tuple[dict[Any, Any], dict[str, Any], dict[str, str]], one: Any, other: Any
    ) -> None:
        config, options, _ = sources
        config.pop("PERFALERT_MATTERMOST_ENABLED", None)  # no posting to random places
        options.pop("mattermost_enabled", None)
        for key in FOLDER_KEYS:  # no folders made in random places
            if key in config:
                config[key] = one
            if KEYS[key] in options:
                options[KEYS[key]] = other
        records.records.clear()
        app = make_app("fuzzed", tmp_path / "reports")
        app.config.update(config)
        perf = PerfAlert(app, **options)
        for path, response in expected.items():
            assert call(app, environ_for(_get(path))) == response
        assert EVENTS.wait_idle(10)
        assert not [r.getMessage() for r in records.records if r.levelno >= logging.ERROR]
        assert perf.settings(app).threshold_seconds > 0

    check()


def _get(target: str) -> dict[str, Any]:
    path, _, query = target.partition("?")
    return {
        "method": "GET",
        "path": path,
        "query": query,
        "content_type": None,
        "body": b"",
        "headers": [],
        "length": "none",
    }


def test_any_endpoint_name_gives_a_safe_report_name(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from flask_perfalert.alerts.file import _OWN_NAME

    folder = tmp_path / "reports"
    app = make_app("names", folder)
    alerts = PerfAlert(app, profiler="none")._monitor(app).file_alerts
    assert alerts is not None
    written: set[str] = set()

    @FUZZ_HEAVY
    @given(
        st.one_of(
            st.none(),
            st.text(max_size=300),
            st.sampled_from(["..", "../../etc/passwd", "a/b", "<x>", "\x00", "ä.视图", "/"]),
        )
    )
    def check(endpoint: str | None) -> None:
        event = SlowRequestEvent(
            kind="request",
            endpoint=endpoint,
            url="http://localhost/",
            method="GET",
            params={},
            headers={},
            status_code=200,
            duration=2.0,
            threshold=1.0,
            timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc),
            duplicate=False,
            profile=None,
            profile_note="",
            host="host",
            pid=1,
        )
        path = alerts.write(event)
        assert path is not None and path.parent == folder.resolve()
        assert _OWN_NAME.match(path.name) and path.name not in written
        written.add(path.name)

    check()
    assert sorted(p.name for p in folder.iterdir()) == sorted([*written, "index.html"])
