"""The settings model: the single source of every ``PERFALERT_*`` key.

Each field of :class:`PerfAlertSettings` is one key: its name (upper-cased,
with the ``PERFALERT_`` prefix), its type, its default and its description.
The configuration reference in the docs, the ``flask perfalert config``
command and the unknown-key check are all generated from this model.

Values come from four places, highest precedence first: keyword options given
to :class:`~flask_perfalert.PerfAlert`, ``app.config``, environment variables,
and the defaults. A bad value never stops the app: it is replaced by the
default and a warning naming the key and the value is logged.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .storage import masked_uri

logger = logging.getLogger("flask_perfalert")

PREFIX = "PERFALERT_"
MASK = "**********"

#: Where a value came from, as reported by :func:`load_settings`.
Source = Literal["option", "app.config", "environment", "default"]


def _default_file_dir() -> Path:
    return Path(tempfile.gettempdir()) / "flask-perfalert"


class PerfAlertSettings(BaseSettings):
    """Every setting of Flask-PerfAlert.

    A field ``threshold_seconds`` is the key ``PERFALERT_THRESHOLD_SECONDS`` in
    ``app.config`` and in the environment, and the keyword option
    ``threshold_seconds`` of :class:`~flask_perfalert.PerfAlert`.
    """

    # enable_decoding=False: environment strings reach the validators below, which
    # accept JSON *and* the comma-separated lists people type in a shell. The
    # default decoding would raise on "static,/health*" before any validator ran.
    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        extra="ignore",
        enable_decoding=False,
        validate_default=True,
        frozen=True,
    )

    # -- core -------------------------------------------------------------
    enabled: bool = Field(
        True,
        description="Monitor requests at all. False means no timing, no profiling and "
        "no hooks doing work.",
    )
    threshold_seconds: float = Field(
        1.0,
        gt=0,
        description="A request or watched function slower than this many seconds is slow.",
    )
    endpoint_thresholds: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="Per-endpoint thresholds in seconds, by Flask endpoint name (for a "
        "watched function, its module-qualified name). Overrides the global threshold.",
    )
    exclude: list[str] = Field(
        default_factory=list,
        description='Never monitored: Flask endpoint names (``"static"``, matched exactly) '
        'and URL path glob patterns, which start with ``/`` (``"/health*"`` matches '
        "``/healthz`` and ``/health/db``).",
    )
    alert_window_days: float = Field(
        10.0,
        gt=0,
        le=3650,
        description="De-duplication window: one alert per method and endpoint per window.",
    )

    # -- profiling --------------------------------------------------------
    profiler: Literal["sampling", "pyinstrument", "none"] = Field(
        "sampling",
        description='How a profile is taken. ``"sampling"``: a low-overhead sampler that '
        "starts once a request has run past ``SAMPLE_AFTER`` of its threshold; "
        '``"pyinstrument"``: pyinstrument\'s Profiler around every monitored request '
        '(exact, but costly); ``"none"``: timing only, alerts without a call tree.',
    )
    sample_interval: float = Field(
        0.005,
        gt=0,
        le=1.0,
        description="Seconds between two samples of the sampling profiler.",
    )
    sample_after: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Fraction of the threshold after which the sampling profiler starts "
        "sampling a request (0 samples from the start).",
    )
    max_overhead: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Largest share of the process's time the sampler may use; above it "
        "the sampler backs off (samples less often) and logs once.",
    )

    # -- file alerts --------------------------------------------------------
    file_enabled: bool = Field(True, description="Write an HTML report for each new slow event.")
    file_dir: Path = Field(
        default_factory=_default_file_dir,
        description="Folder for HTML reports (created, mode 0700, if missing). Default: "
        "``flask-perfalert`` in the system temporary directory.",
    )
    file_max_files: int = Field(
        1000,
        ge=1,
        le=1_000_000_000,
        description="Keep at most this many reports in ``FILE_DIR``; the oldest of the "
        "extension's own reports are removed first.",
    )
    file_max_age_days: float = Field(
        30.0,
        gt=0,
        description="Remove the extension's own reports older than this many days.",
    )

    # -- Mattermost alerts --------------------------------------------------
    mattermost_enabled: bool = Field(
        False, description="Post each new slow event to a Mattermost channel."
    )
    mattermost_url: str | None = Field(
        None,
        description="The Mattermost server as copied from the browser, e.g. "
        '``"https://chat.example.com"`` or ``"http://127.0.0.1:8065/mattermost"``.',
    )
    mattermost_token: SecretStr | None = Field(
        None,
        description="Bot or personal access token. Secret: masked in every output.",
    )
    mattermost_channel_id: str | None = Field(
        None, description="Id of the channel to post to (not its name)."
    )
    mattermost_max_retries: int = Field(
        3,
        ge=0,
        le=100,
        description="Retries of one delivery on connection errors, timeouts, 5xx and 429.",
    )
    mattermost_timeout: float = Field(
        10.0,
        gt=0,
        le=600,
        description="Seconds each HTTP call to Mattermost may take.",
    )
    spool_dir: Path | None = Field(
        None,
        description="Folder where alerts whose delivery failed wait to be sent again. "
        "Default: ``spool`` inside ``FILE_DIR``.",
    )

    # -- shared de-duplication store -----------------------------------------
    storage_uri: str = Field(
        "memory://",
        description='Where the de-duplication window is kept: ``"memory://"`` (per '
        'process), ``"sqlite:///path/to/perfalert.db"`` (all workers of one host), '
        '``"redis://host:port/db"`` or ``"rediss://..."`` (several hosts).',
    )
    storage_prefix: str = Field(
        "perfalert:",
        description="Prefix of every key in the store, so several apps can share one.",
    )

    # -- privacy ------------------------------------------------------------
    redact_keys: list[str] = Field(
        default_factory=list,
        description="More parameter and header names whose values are replaced with "
        '``"[Filtered]"``, matched case-insensitively as substrings, in addition to the '
        'built-in list (see :doc:`/security`). ``"*"`` hides every value.',
    )

    @field_validator("endpoint_thresholds", mode="before")
    @classmethod
    def _parse_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _json(value) if value.strip() else {}
        return value

    @field_validator("exclude", "redact_keys", mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return _json(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        if isinstance(value, tuple | set | frozenset):
            return list(value)
        return value

    @classmethod
    def keys(cls) -> dict[str, str]:
        """Map each ``PERFALERT_*`` key to its field name."""
        return {PREFIX + name.upper(): name for name in cls.model_fields}

    def __repr_args__(self) -> Any:
        # repr() and str() hide what masked() hides: a password inside a URI too
        # (SecretStr fields mask themselves).
        for name, value in super().__repr_args__():
            if isinstance(value, str) and "://" in value:
                value = masked_uri(value)
            yield name, value

    def masked(self) -> dict[str, Any]:
        """The effective settings by key, with secrets masked; safe to print or log."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = MASK if value.get_secret_value() else ""
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, str) and "://" in value:
                value = masked_uri(value)  # redis://:password@host, https://bot:pw@chat
            out[PREFIX + name.upper()] = value
        return out


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:  # not a ValueError: pydantic would not turn it into an error
        raise ValueError("JSON nested too deeply") from None


@dataclass(frozen=True)
class LoadedSettings:
    """The validated settings and where each value came from."""

    settings: PerfAlertSettings
    sources: dict[str, Source]


def _describe(value: Any, secret: bool) -> str:
    if secret:
        return MASK
    try:
        text = masked_uri(repr(value))  # a password in a URI, even inside a list
    except Exception:  # a huge int (beyond int->str limits), an object whose repr fails
        return f"<unprintable {type(value).__name__}>"
    return text if len(text) <= 200 else text[:200] + "..."


def _is_secret(name: str) -> bool:
    annotation = PerfAlertSettings.model_fields[name].annotation
    return annotation is not None and "SecretStr" in str(annotation)


def load_settings(
    config: Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Validate the settings from ``options``, then ``config``, then ``environ``.

    Never raises on user input: every invalid value is logged as a warning
    naming its key and is replaced by the default; every unknown
    ``PERFALERT_*`` key is logged with the closest known key.
    """
    environ = os.environ if environ is None else environ
    options = dict(options or {})
    keys = PerfAlertSettings.keys()
    fields = set(keys.values())

    for name in list(options):
        if name not in fields:
            _warn_unknown(f"option {name!r}", name.upper(), keys, prefix="")
            del options[name]
    for key in config:
        if isinstance(key, str) and key.startswith(PREFIX) and key not in keys:
            _warn_unknown(f"app.config key {key}", key, keys)
    for key in environ:
        if key.startswith(PREFIX) and key not in keys:
            _warn_unknown(f"environment variable {key}", key, keys)

    # Build the init values by precedence; the model reads what is left from the
    # environment itself (pydantic-settings puts init values above it).
    init: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for key, name in keys.items():
        if name in options:
            init[name], sources[name] = options[name], "option"
        elif key in config:
            init[name], sources[name] = config[key], "app.config"
        elif key in environ:
            sources[name] = "environment"
        else:
            sources[name] = "default"

    env_subset = {k: v for k, v in environ.items() if k in keys}
    for _ in range(len(keys) + 1):
        try:
            settings = _build(init, env_subset)
        except ValidationError as exc:
            origins = dict(sources)  # several errors of one key: all from the same place
            for error in exc.errors():
                name = str(error["loc"][0]) if error["loc"] else ""
                if name not in fields:  # pragma: no cover - a model-level error
                    raise
                default = PerfAlertSettings.model_fields[name].get_default(
                    call_default_factory=True
                )
                secret = _is_secret(name)
                # An entry of a mapping or list: say which one ("x" of {"x": -1}).
                where = "".join(
                    f"[{_describe(part, secret)}]" for part in error["loc"][1:2] if not secret
                )
                logger.warning(
                    "Invalid value for %s%s from %s: %s (%s); using the default %s instead.",
                    PREFIX + name.upper(),
                    where,
                    origins[name],
                    _describe(error.get("input"), secret),
                    error["msg"],
                    _describe(default, secret),
                )
                init[name] = default
                sources[name] = "default"
            continue
        return LoadedSettings(settings=settings, sources=sources)
    raise RuntimeError("settings did not converge")  # pragma: no cover


def _build(init: dict[str, Any], environ: Mapping[str, str]) -> PerfAlertSettings:
    # The environment is passed explicitly (not read from os.environ) so that
    # tests and load_settings(environ=...) see exactly what they pass.
    values = {
        name: environ[key] for key, name in PerfAlertSettings.keys().items() if key in environ
    }
    values.update(init)
    return PerfAlertSettings.model_validate(values)


def _warn_unknown(what: str, key: str, keys: Mapping[str, str], prefix: str = PREFIX) -> None:
    candidates = list(keys) if prefix else [k[len(PREFIX) :] for k in keys]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0].lower() if not prefix else close[0]}?" if close else ""
    logger.warning("Unknown Flask-PerfAlert %s is ignored%s", what, hint)
