"""A password inside a URI is never shown: not in the settings, the CLI, a warning or a log.

Passwords hold any character, ``@`` included; a URI may come inside another
value (a list given where a string is expected).
"""

from __future__ import annotations

import logging

import pytest
from flask import Flask

from flask_perfalert import PerfAlert
from flask_perfalert.storage import masked_uri

SECRET = "p@ss/w?rd#x@y"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("redis://:hunter2@redis:6379/0", "redis://:**********@redis:6379/0"),
        ("redis://:p@ssw0rd@redis:6379/0", "redis://:**********@redis:6379/0"),
        ("redis://ann:p@ss@w0rd@redis/0", "redis://ann:**********@redis/0"),
        ("rediss://:a:b@redis:6380/0", "rediss://:**********@redis:6380/0"),
        ("redis://ann@redis/0", "redis://**********@redis/0"),  # alone, it may be a token
        ("redis://redis:6379/0?password=x@y&db=1", "redis://redis:6379/0?password=**********&db=1"),
        (
            "rediss://redis/0?ssl_ca_certs=/etc/ca@2.pem",
            "rediss://redis/0?ssl_ca_certs=/etc/ca@2.pem",
        ),
        ("memory://", "memory://"),
        ("sqlite:////var/lib/app/perfalert.db", "sqlite:////var/lib/app/perfalert.db"),
    ],
)
def test_the_password_is_masked_whole(uri: str, shown: str) -> None:
    assert masked_uri(uri) == shown


def test_every_uri_in_a_text_is_masked() -> None:
    text = "['redis://:first-secret@a/0', 'https://bot:second@secret@chat']"
    masked = masked_uri(text)
    assert "first-secret" not in masked and "second" not in masked and "secret@chat" not in masked
    assert "redis://:**********@a/0" in masked and "https://bot:**********@chat" in masked


def test_the_address_only_form_shows_no_credentials() -> None:
    assert masked_uri("redis://ann:p@ss@redis:6379/0?x=1", address_only=True) == (
        "redis://redis:6379/0"
    )


def test_a_password_with_an_at_sign_is_hidden_in_config_and_the_debug_log(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_perfalert")
    uri = "redis://:p@ssw0rd@127.0.0.1:1/0"
    perf = PerfAlert(app, storage_uri=uri)
    assert perf.effective_settings(app)["PERFALERT_STORAGE_URI"] == (
        "redis://:**********@127.0.0.1:1/0"
    )
    result = app.test_cli_runner().invoke(args=["perfalert", "config"])
    assert result.exit_code == 0
    assert "127.0.0.1:1" in result.output
    for where in (result.output, caplog.text, repr(perf.settings(app))):
        assert "ssw0rd" not in where


def test_an_invalid_storage_uri_is_named_without_its_password(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["PERFALERT_STORAGE_URI"] = [f"redis://:{SECRET}@redis.internal:6379/0"]
    PerfAlert(app)
    [warning] = [
        r.getMessage() for r in caplog.records if "PERFALERT_STORAGE_URI" in r.getMessage()
    ]
    assert "Invalid value for PERFALERT_STORAGE_URI" in warning
    assert "redis.internal:6379" in warning
    for part in ("p@ss", "w?rd", "x@y", "ss/w"):
        assert part not in caplog.text, part
