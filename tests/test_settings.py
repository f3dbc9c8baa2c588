"""Settings: one model, four sources, forgiving parsing, warnings that say what to fix."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_perfalert import PerfAlert, PerfAlertOptions, PerfAlertSettings
from flask_perfalert.settings import load_settings


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_perfalert" and r.levelno == logging.WARNING
    ]


def serves(app: Flask) -> bool:
    """The app still answers (a bad setting never stops it)."""
    if "ping" not in app.view_functions:
        app.add_url_rule("/ping", "ping", lambda: "pong")
    response = app.test_client().get("/ping")
    return response.status_code == 200 and response.data == b"pong"


# -- the model -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("PERFALERT_ENABLED", True),
        ("PERFALERT_THRESHOLD_SECONDS", 1.0),
        ("PERFALERT_ENDPOINT_THRESHOLDS", {}),
        ("PERFALERT_EXCLUDE", []),
        ("PERFALERT_ALERT_WINDOW_DAYS", 10.0),
        ("PERFALERT_FILE_ENABLED", True),
    ],
)
def test_the_defaults_of_the_core_keys(key: str, default: Any) -> None:
    settings = load_settings({}, environ={}).settings
    assert settings.masked()[key] == default
    assert type(settings.masked()[key]) is type(default)


def test_without_an_app_the_folders_are_this_users_in_the_temporary_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PERFALERT_DATA_DIR")
    settings = PerfAlertSettings.model_validate({})
    root = Path(tempfile.gettempdir()) / f"flask-perfalert-{os.geteuid()}"
    assert settings.data_dir == root
    assert settings.file_dir == root / "app" / "reports"
    assert settings.spool_dir == root / "app" / "spool"
    assert settings.storage_uri == f"sqlite://{root}/app/perfalert.db"


def test_every_key_has_a_description_and_is_its_field_name_upper_cased() -> None:
    keys = PerfAlertSettings.keys()
    assert len(keys) == len(PerfAlertSettings.model_fields) >= 7
    for key, name in keys.items():
        assert key == "PERFALERT_" + name.upper()
        description = PerfAlertSettings.model_fields[name].description
        assert description and len(description) > 15, key


def test_effective_settings_list_every_key_of_the_model(app: Flask) -> None:
    perf = PerfAlert(app)
    assert list(perf.effective_settings(app)) == list(PerfAlertSettings.keys())


# -- precedence ------------------------------------------------------------------------------------
def test_each_source_wins_over_the_ones_below_it(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four keys; each is set in the sources from the environment up to one level.
    monkeypatch.setenv("PERFALERT_THRESHOLD_SECONDS", "0.4")
    monkeypatch.setenv("PERFALERT_ALERT_WINDOW_DAYS", "4")
    monkeypatch.setenv("PERFALERT_SAMPLE_INTERVAL", "0.004")
    app.config["PERFALERT_THRESHOLD_SECONDS"] = 0.3
    app.config["PERFALERT_ALERT_WINDOW_DAYS"] = 3
    perf = PerfAlert(app, threshold_seconds=0.2)
    settings = perf.settings(app)
    assert settings.threshold_seconds == 0.2  # option
    assert settings.alert_window_days == 3.0  # app.config
    assert settings.sample_interval == 0.004  # environment
    assert settings.max_overhead == 0.05  # default


def test_where_each_value_came_from() -> None:
    loaded = load_settings(
        {"PERFALERT_ALERT_WINDOW_DAYS": 3, "PERFALERT_THRESHOLD_SECONDS": 0.3},
        {"threshold_seconds": 0.2},
        environ={"PERFALERT_EXCLUDE": "static", "PERFALERT_ALERT_WINDOW_DAYS": "4"},
    )
    assert loaded.sources["threshold_seconds"] == "option"
    assert loaded.sources["alert_window_days"] == "app.config"
    assert loaded.sources["exclude"] == "environment"
    assert loaded.sources["enabled"] == "default"
    assert loaded.settings.exclude == ["static"]


def test_a_false_option_beats_a_true_config_value(app: Flask) -> None:
    app.config["PERFALERT_FILE_ENABLED"] = True
    perf = PerfAlert(app, file_enabled=False)
    assert perf.settings(app).file_enabled is False


def test_a_value_set_in_config_of_none_is_still_config_not_environment(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERFALERT_MATTERMOST_CHANNEL_ID", "from-env")
    app.config["PERFALERT_MATTERMOST_CHANNEL_ID"] = None
    assert PerfAlert(app).settings(app).mattermost_channel_id is None


# -- parsing environment strings -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "text", "field", "expected"),
    [
        ("PERFALERT_THRESHOLD_SECONDS", "0.5", "threshold_seconds", 0.5),
        ("PERFALERT_THRESHOLD_SECONDS", " 2 ", "threshold_seconds", 2.0),
        ("PERFALERT_ALERT_WINDOW_DAYS", "0.25", "alert_window_days", 0.25),
        ("PERFALERT_ENABLED", "false", "enabled", False),
        ("PERFALERT_ENABLED", "False", "enabled", False),
        ("PERFALERT_ENABLED", "0", "enabled", False),
        ("PERFALERT_ENABLED", "no", "enabled", False),
        ("PERFALERT_ENABLED", "true", "enabled", True),
        ("PERFALERT_ENABLED", "1", "enabled", True),
        ("PERFALERT_ENABLED", "yes", "enabled", True),
        ("PERFALERT_FILE_ENABLED", "off", "file_enabled", False),
        (
            "PERFALERT_ENDPOINT_THRESHOLDS",
            '{"reports.export": 5, "index": 0.25}',
            "endpoint_thresholds",
            {"reports.export": 5.0, "index": 0.25},
        ),
        ("PERFALERT_ENDPOINT_THRESHOLDS", "", "endpoint_thresholds", {}),
        ("PERFALERT_EXCLUDE", '["static", "/health*"]', "exclude", ["static", "/health*"]),
        ("PERFALERT_EXCLUDE", "static,/health*", "exclude", ["static", "/health*"]),
        ("PERFALERT_EXCLUDE", " static , /health* ,", "exclude", ["static", "/health*"]),
        ("PERFALERT_EXCLUDE", "static", "exclude", ["static"]),
        ("PERFALERT_EXCLUDE", "", "exclude", []),
        ("PERFALERT_FILE_DIR", "/var/tmp/perf reports", "file_dir", Path("/var/tmp/perf reports")),
    ],
)
def test_environment_strings_are_parsed(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    key: str,
    text: str,
    field: str,
    expected: Any,
) -> None:
    monkeypatch.setenv(key, text)
    perf = PerfAlert(app) if key != "PERFALERT_FILE_DIR" else None
    settings = perf.settings(app) if perf else load_settings({}).settings
    assert getattr(settings, field) == expected
    assert warnings_of(caplog) == []


def test_strings_in_app_config_are_parsed_like_the_environment(app: Flask) -> None:
    app.config.update(
        PERFALERT_EXCLUDE="static,/health*",
        PERFALERT_ENDPOINT_THRESHOLDS='{"export": 3}',
        PERFALERT_THRESHOLD_SECONDS="0.75",
        PERFALERT_ENABLED="true",
    )
    settings = PerfAlert(app).settings(app)
    assert settings.exclude == ["static", "/health*"]
    assert settings.endpoint_thresholds == {"export": 3.0}
    assert settings.threshold_seconds == 0.75
    assert settings.enabled is True


def test_python_values_in_app_config_are_taken_as_they_are(app: Flask) -> None:
    app.config.update(
        PERFALERT_EXCLUDE=("static", "/health*"),
        PERFALERT_ENDPOINT_THRESHOLDS={"export": 3},
        PERFALERT_FILE_DIR=Path("/var/tmp/x"),
        PERFALERT_ALERT_WINDOW_DAYS=1,
    )
    settings = PerfAlert(app).settings(app)
    assert settings.exclude == ["static", "/health*"]
    assert settings.endpoint_thresholds == {"export": 3.0}
    assert settings.file_dir == Path("/var/tmp/x")
    assert settings.alert_window_days == 1.0


# -- invalid values --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("where", "key", "value", "field", "default"),
    [
        ("environment", "PERFALERT_THRESHOLD_SECONDS", "abc", "threshold_seconds", 1.0),
        ("environment", "PERFALERT_THRESHOLD_SECONDS", "0", "threshold_seconds", 1.0),
        ("app.config", "PERFALERT_THRESHOLD_SECONDS", -0.5, "threshold_seconds", 1.0),
        ("app.config", "PERFALERT_ALERT_WINDOW_DAYS", -1, "alert_window_days", 10.0),
        ("environment", "PERFALERT_ALERT_WINDOW_DAYS", "-3", "alert_window_days", 10.0),
        ("environment", "PERFALERT_ENABLED", "maybe", "enabled", True),
        ("app.config", "PERFALERT_FILE_ENABLED", "sometimes", "file_enabled", True),
        ("environment", "PERFALERT_ENDPOINT_THRESHOLDS", "{not json", "endpoint_thresholds", {}),
        ("app.config", "PERFALERT_ENDPOINT_THRESHOLDS", ["x"], "endpoint_thresholds", {}),
        ("environment", "PERFALERT_EXCLUDE", '["static", ', "exclude", []),
        ("app.config", "PERFALERT_EXCLUDE", 42, "exclude", []),
    ],
)
def test_an_invalid_value_is_replaced_by_the_default_with_a_warning(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
    key: str,
    value: Any,
    field: str,
    default: Any,
) -> None:
    if where == "environment":
        monkeypatch.setenv(key, value)
    else:
        app.config[key] = value
    app.config["PERFALERT_ALERT_WINDOW_DAYS" if field != "alert_window_days" else "X"] = 2
    with caplog.at_level(logging.WARNING, "flask_perfalert"):
        perf = PerfAlert(app)
    assert serves(app)
    settings = perf.settings(app)
    assert getattr(settings, field) == default
    if field != "alert_window_days":
        assert settings.alert_window_days == 2.0  # a good value next to it is kept
    (message,) = warnings_of(caplog)
    assert key in message
    assert repr(value) in message
    assert f"default {default!r}" in message
    assert where in message


def test_a_bad_entry_of_a_mapping_or_a_list_is_named(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PERFALERT_ENDPOINT_THRESHOLDS", '{"ok": 1, "x": -1, "y": "abc"}')
    app.config["PERFALERT_EXCLUDE"] = ["static", 3]
    perf = PerfAlert(app)
    assert serves(app)
    assert perf.settings(app).endpoint_thresholds == {}
    assert perf.settings(app).exclude == []
    assert sorted(warnings_of(caplog)) == [
        "Invalid value for PERFALERT_ENDPOINT_THRESHOLDS['x'] from environment: -1 "
        "(Input should be greater than 0); using the default {} instead.",
        "Invalid value for PERFALERT_ENDPOINT_THRESHOLDS['y'] from environment: 'abc' "
        "(Input should be a valid number, unable to parse string as a number); "
        "using the default {} instead.",
        "Invalid value for PERFALERT_EXCLUDE[1] from app.config: 3 "
        "(Input should be a valid string); using the default [] instead.",
    ]


def test_an_invalid_option_is_replaced_by_the_default_with_a_warning(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    perf = PerfAlert(app, threshold_seconds="fast")
    assert serves(app)
    assert perf.settings(app).threshold_seconds == 1.0
    (message,) = warnings_of(caplog)
    assert "PERFALERT_THRESHOLD_SECONDS" in message and "'fast'" in message
    assert "default 1.0" in message


def test_several_invalid_values_each_get_their_warning(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PERFALERT_THRESHOLD_SECONDS", "abc")
    app.config["PERFALERT_ALERT_WINDOW_DAYS"] = -1
    app.config["PERFALERT_EXCLUDE"] = {"not": "a list"}
    perf = PerfAlert(app)
    assert serves(app)
    messages = warnings_of(caplog)
    assert len(messages) == 3
    for key in ("THRESHOLD_SECONDS", "ALERT_WINDOW_DAYS", "EXCLUDE"):
        assert sum(f"PERFALERT_{key} " in m for m in messages) == 1
    assert perf.settings(app).exclude == []


# -- unknown keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typo", "closest"),
    [
        ("PERFALERT_TRESHOLD_SECONDS", "PERFALERT_THRESHOLD_SECONDS"),
        ("PERFALERT_EXCLUDES", "PERFALERT_EXCLUDE"),
        ("PERFALERT_ENABLE", "PERFALERT_ENABLED"),
        ("PERFALERT_ALERT_WINDOW", "PERFALERT_ALERT_WINDOW_DAYS"),
    ],
)
@pytest.mark.parametrize("where", ["app.config", "environment"])
def test_an_unknown_key_names_the_closest_known_key(
    app: Flask,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    typo: str,
    closest: str,
    where: str,
) -> None:
    if where == "environment":
        monkeypatch.setenv(typo, "0.3")
    else:
        app.config[typo] = "0.3"
    perf = PerfAlert(app)
    assert serves(app)
    (message,) = warnings_of(caplog)
    assert typo in message and where.split(".")[0] in message
    assert message.endswith(f"did you mean {closest}?")
    assert perf.effective_settings(app)[closest] != 0.3  # ignored, not guessed


def test_an_unknown_key_far_from_any_known_one_is_still_reported(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["PERFALERT_XYZZY"] = 1
    PerfAlert(app)
    (message,) = warnings_of(caplog)
    assert "PERFALERT_XYZZY" in message and "is ignored" in message


def test_keys_of_other_extensions_are_not_reported(
    app: Flask, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PERF_THRESHOLD", "1")
    app.config.update(SECRET_KEY="x", SQLALCHEMY_DATABASE_URI="sqlite://", PERFALERT=1)
    PerfAlert(app)
    assert warnings_of(caplog) == []


def test_a_misspelled_constructor_option_raises_type_error(app: Flask) -> None:
    # Like any Python function (and Flask-SQLAlchemy's options): a typo in code fails loudly.
    with pytest.raises(TypeError) as info:
        PerfAlert(app, treshold_seconds=0.3)  # type: ignore[call-arg]
    assert str(info.value) == (
        "PerfAlert() got an unexpected keyword argument 'treshold_seconds'; "
        "did you mean 'threshold_seconds'?"
    )
    assert "perfalert" not in app.extensions  # nothing was set up
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'$"):
        PerfAlert(colour="red")  # type: ignore[call-arg]


def test_the_typed_options_are_exactly_the_settings() -> None:
    # PerfAlertOptions is written out for type checkers; the model stays the one list.
    assert list(PerfAlertOptions.__annotations__) == list(PerfAlertSettings.model_fields)
    assert PerfAlertOptions.__total__ is False


def test_every_setting_can_be_given_as_an_option(app: Flask, tmp_path: Path) -> None:
    options: PerfAlertOptions = {
        "threshold_seconds": 0.5,
        "exclude": ("static",),
        "data_dir": tmp_path / "data",
        "mattermost_token": "t0ken",
        "storage_uri": "memory://",
    }
    settings = PerfAlert(app, **options).settings(app)
    assert settings.threshold_seconds == 0.5
    assert settings.exclude == ["static"]
    assert settings.data_dir == tmp_path / "data"


# -- secrets ---------------------------------------------------------------------------------------
SECRET = "s3cr3t-V4lue"


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("PERFALERT_MATTERMOST_TOKEN", SECRET, "**********"),
        (
            "PERFALERT_STORAGE_URI",
            f"redis://:{SECRET}@127.0.0.1:1/0",
            "redis://:**********@127.0.0.1:1/0",
        ),
        (
            "PERFALERT_STORAGE_URI",
            f"redis://default:{SECRET}@127.0.0.1:1/0",
            "redis://default:**********@127.0.0.1:1/0",
        ),
        (
            "PERFALERT_STORAGE_URI",
            f"redis://127.0.0.1:1/0?password={SECRET}",
            "redis://127.0.0.1:1/0?password=**********",
        ),
        (
            "PERFALERT_MATTERMOST_URL",
            f"https://bot:{SECRET}@chat.example.com/",
            "https://bot:**********@chat.example.com/",
        ),
    ],
)
def test_secrets_are_masked_when_the_settings_are_read_back(
    app: Flask, caplog: pytest.LogCaptureFixture, key: str, value: str, shown: str
) -> None:
    app.config[key] = value
    with caplog.at_level(logging.DEBUG, "flask_perfalert"):
        perf = PerfAlert(app)
    effective = perf.effective_settings(app)
    assert effective[key] == shown
    assert SECRET not in repr(effective)
    assert SECRET not in repr(perf.settings(app))
    assert SECRET not in str(perf.settings(app))
    assert SECRET not in caplog.text  # the set-up's debug line included


def test_the_secret_itself_is_still_usable_from_python(app: Flask) -> None:
    app.config["PERFALERT_MATTERMOST_TOKEN"] = SECRET
    token = PerfAlert(app).settings(app).mattermost_token
    assert token is not None and token.get_secret_value() == SECRET


def test_an_invalid_secret_is_not_quoted_in_the_warning(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["PERFALERT_MATTERMOST_TOKEN"] = [SECRET]
    perf = PerfAlert(app)
    (message,) = warnings_of(caplog)
    assert "PERFALERT_MATTERMOST_TOKEN" in message
    assert SECRET not in caplog.text
    assert perf.settings(app).mattermost_token is None


# -- bounds: no value can hurt the app ----------------------------------------------------------
@pytest.fixture
def from_environment(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str, str], dict[str, Any]]:
    """Set one environment variable, set the app up: its effective settings (it still serves)."""
    app.config.pop("PERFALERT_FILE_DIR")  # the fixture's: the environment's is the one tested

    def load(key: str, value: str) -> dict[str, Any]:
        monkeypatch.setenv(key, value)
        perf = PerfAlert(app)
        assert serves(app)
        return perf.effective_settings(app)

    return load


@pytest.mark.parametrize(
    ("key", "value", "default"),
    [
        # 1e-5 s between samples turned a 0.5 s request into more than 30 s.
        ("PERFALERT_SAMPLE_INTERVAL", "1e-5", 0.005),
        ("PERFALERT_SAMPLE_INTERVAL", "5", 0.005),
        ("PERFALERT_THRESHOLD_SECONDS", "inf", 1.0),
        ("PERFALERT_THRESHOLD_SECONDS", "nan", 1.0),
        ("PERFALERT_THRESHOLD_SECONDS", "1e9", 1.0),
        ("PERFALERT_ENDPOINT_THRESHOLDS", '{"index": 1e9}', {}),
        # A window is a length of time: any positive one (seconds, to try things out).
        ("PERFALERT_ALERT_WINDOW_DAYS", "0", 10.0),
        ("PERFALERT_ALERT_WINDOW_DAYS", "-1", 10.0),
        ("PERFALERT_ALERT_WINDOW_DAYS", "1e6", 10.0),
        # The sampler could take all of the process's time.
        ("PERFALERT_MAX_OVERHEAD", "1", 0.05),
        ("PERFALERT_MAX_OVERHEAD", "1e-9", 0.05),
        ("PERFALERT_SAMPLE_AFTER", "1", 0.1),
        # Each report written lists the whole folder.
        ("PERFALERT_FILE_MAX_FILES", "1000000000", 1000),
        ("PERFALERT_FILE_MAX_AGE_DAYS", "1e-9", 30.0),
        ("PERFALERT_FILE_MAX_AGE_DAYS", "inf", 30.0),
        # One delivery could hold the delivery thread, and the exit, for hours.
        ("PERFALERT_MATTERMOST_MAX_RETRIES", "100", 3),
        ("PERFALERT_MATTERMOST_TIMEOUT", "600", 10.0),
        ("PERFALERT_MATTERMOST_TIMEOUT", "1e-6", 10.0),
    ],
)
def test_a_number_out_of_bounds_is_refused_naming_key_and_default(
    from_environment: Callable[[str, str], dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    key: str,
    value: str,
    default: Any,
) -> None:
    assert from_environment(key, value)[key] == default
    (message,) = warnings_of(caplog)
    assert message.startswith(f"Invalid value for {key}")
    assert f"using the default {default!r} instead" in message


def test_every_number_has_a_lower_and_an_upper_bound() -> None:
    # A new numeric setting without bounds fails here: add them to the model.
    def bounds(metadata: list[Any]) -> set[str]:
        return {
            op
            for item in metadata
            for op in ("gt", "ge", "lt", "le")
            if getattr(item, op, None) is not None
        }

    for name, field in PerfAlertSettings.model_fields.items():
        annotation = field.annotation
        metadata = list(field.metadata)
        if name == "endpoint_thresholds":
            annotation = float
            metadata = list(PerfAlertSettings.model_fields["threshold_seconds"].metadata)
        if annotation in (int, float):
            found = bounds(metadata)
            assert found & {"gt", "ge"} and found & {"lt", "le"}, name


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PERFALERT_SAMPLE_INTERVAL", "0.001"),
        ("PERFALERT_ALERT_WINDOW_DAYS", "0.001"),
        ("PERFALERT_MAX_OVERHEAD", "0.25"),
        ("PERFALERT_THRESHOLD_SECONDS", "86400"),
        ("PERFALERT_FILE_MAX_FILES", "100000"),
        ("PERFALERT_MATTERMOST_TIMEOUT", "60"),
    ],
)
def test_the_bounds_themselves_are_accepted(
    from_environment: Callable[[str, str], dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    key: str,
    value: str,
) -> None:
    assert from_environment(key, value)[key] == float(value)
    assert warnings_of(caplog) == []


# -- empty strings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "PERFALERT_FILE_DIR",
        "PERFALERT_DATA_DIR",
        "PERFALERT_SPOOL_DIR",
        "PERFALERT_STORAGE_URI",
        "PERFALERT_STORAGE_PREFIX",
        "PERFALERT_MATTERMOST_URL",
        "PERFALERT_MATTERMOST_TOKEN",
        "PERFALERT_MATTERMOST_CHANNEL_ID",
        "PERFALERT_PROFILER",
    ],
)
@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_string_is_refused_naming_the_key(
    from_environment: Callable[[str, str], dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
    key: str,
    value: str,
) -> None:
    assert from_environment(key, value)[key] not in ("", value, ".")
    (message,) = [m for m in warnings_of(caplog) if key in m]
    assert message.startswith(f"Invalid value for {key} from environment: ")
    assert "empty; leave the key unset to get the default" in message


def test_an_empty_file_dir_is_not_the_working_directory(
    app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, wait_delivery: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    app.config["PERFALERT_FILE_DIR"] = ""

    @app.get("/slow")
    def slow() -> str:
        return "slow"

    perf = PerfAlert(app, threshold_seconds=1e-6, profiler="none")
    app.test_client().get("/slow")
    wait_delivery()
    assert list(tmp_path.glob("perfalert-*.html")) == []
    folder = perf.settings(app).file_dir
    assert folder.is_absolute() and len(list(folder.glob("perfalert-*.html"))) == 1


@pytest.mark.parametrize("key", ["PERFALERT_EXCLUDE", "PERFALERT_REDACT_KEYS"])
def test_an_empty_entry_of_a_list_is_refused(
    app: Flask, caplog: pytest.LogCaptureFixture, key: str
) -> None:
    # An empty redaction name would match every parameter as a substring.
    app.config[key] = ["ok", ""]
    perf = PerfAlert(app)
    assert perf.effective_settings(app)[key] == []
    (message,) = warnings_of(caplog)
    assert message.startswith(f"Invalid value for {key}[1] from app.config: ''")
