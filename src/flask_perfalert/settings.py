"""The settings model: the single source of every ``PERFALERT_*`` key.

Each field of :class:`PerfAlertSettings` is one key: its name (upper-cased,
with the ``PERFALERT_`` prefix), its type, its default and its description.
The configuration reference in the docs, the ``flask perfalert config``
command and the unknown-key check are all generated from this model.

Values come from four places, highest precedence first: keyword options given
to :class:`~flask_perfalert.PerfAlert`, ``app.config``, environment variables,
and the defaults. A bad value never stops the app: it is replaced by the
default and a warning naming the key, the value and the default is logged.

The folders and the store default to places of the app's own: the data
folder that ``_folders`` chooses for the app, and inside it.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._folders import FolderDefaults, app_folder, in_app_folder
from .storage import masked_uri

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_perfalert")

PREFIX = "PERFALERT_"
MASK = "**********"

#: Where a value came from, as reported by :func:`load_settings`.
Source = Literal["option", "app.config", "environment", "default"]

#: Bounds of the numbers: beyond them a value costs the app time or disk, or
#: means nothing (a threshold of a week). Each is named in the reference.
MAX_THRESHOLD = 86_400.0
#: A shorter window turns every slow request into a report and a post.
MAX_DAYS = 3650.0
#: pyinstrument's own default interval; every sample costs the app a stack walk.
MIN_SAMPLE_INTERVAL = 0.001
#: The sampler may use at most this share of the process's time.
MAX_OVERHEAD_LIMIT = 0.25
#: Every report written lists the folder to prune it.
MAX_FILES = 100_000
#: A Mattermost call holds the delivery thread (and the exit) for this long at most.
MAX_TIMEOUT = 60.0
MAX_RETRIES = 10

#: Fields where an empty string means an empty collection, not a mistake.
_EMPTY_IS_EMPTY = frozenset({"endpoint_thresholds", "exclude", "redact_keys"})
_DATA_DIR = PREFIX + "DATA_DIR"
_IN_APP_FOLDER = frozenset(in_app_folder(Path()))

Threshold = Annotated[float, Field(gt=0, le=MAX_THRESHOLD)]
Name = Annotated[str, Field(min_length=1)]


# Without an app (``PerfAlertSettings()`` alone): this user's folder in the temp directory.
def _no_app_data_dir() -> Path:
    return FolderDefaults().data_dir


def _no_app(name: str) -> Any:
    return in_app_folder(app_folder(_no_app_data_dir(), None))[name]


def _no_app_file_dir() -> Path:
    return Path(_no_app("file_dir"))


def _no_app_spool_dir() -> Path:
    return Path(_no_app("spool_dir"))


def _no_app_storage_uri() -> str:
    return str(_no_app("storage_uri"))


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
    threshold_seconds: Threshold = Field(
        1.0,
        description="A request or watched function slower than this many seconds is slow.",
    )
    endpoint_thresholds: dict[Name, Threshold] = Field(
        default_factory=dict,
        description="Per-endpoint thresholds in seconds, overriding the global threshold. "
        'A key is a Flask endpoint name (``"reports.export"``), a URL rule as registered '
        '(``"/user/<int:id>"``; ``"/user/<id>"`` matches it too) or a watched function\'s '
        "module-qualified name. A key that matches none of them is reported once the "
        "routes are known (at the first request, and by ``flask perfalert config``).",
    )
    exclude: list[Name] = Field(
        default_factory=list,
        description='Never monitored: Flask endpoint names (``"static"``, matched exactly) '
        'and URL path glob patterns, which start with ``/`` (``"/health*"`` matches '
        "``/healthz`` and ``/health/db``).",
    )
    alert_window_days: float = Field(
        10.0,
        gt=0,
        le=MAX_DAYS,
        description="De-duplication window: one alert per method and endpoint per window. "
        "Any positive length: ``1/24`` is an hour, ``60/86400`` a minute (short windows are "
        "for trying the extension out; every store honours them to the millisecond).",
    )
    escalation_factor: float = Field(
        2.0,
        ge=1.1,
        le=100.0,
        description="Within the window, a slow request (or call) this many times slower than "
        "the worst one alerted so far for its endpoint alerts again, marked as an escalation; "
        "so an endpoint escalates at most once per doubling (by default).",
    )
    data_dir: Path = Field(
        default_factory=_no_app_data_dir,
        description="Folder of this app's own data: the SQLite file of the default "
        "``STORAGE_URI``, and the default ``FILE_DIR`` (``reports``) and ``SPOOL_DIR`` "
        "(``spool``) inside it. Created with mode 0700 at start-up if missing; a folder "
        "that cannot be written is reported then. Shared by every worker of the app on one "
        "host, kept across restarts.",
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
        ge=MIN_SAMPLE_INTERVAL,
        le=1.0,
        description="Seconds between two samples of the sampling profiler. At least "
        "0.001: each sample costs the sampled request a stack walk.",
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
        ge=0.001,
        le=MAX_OVERHEAD_LIMIT,
        description="Largest share of one CPU core the sampler may use, counted in its "
        "thread's CPU time (time it waits for the interpreter lock, which the app uses "
        "meanwhile, is not counted); above it the sampler backs off (samples less often, "
        "down to every 100 ms) and logs once. At most 0.25.",
    )

    # -- file alerts --------------------------------------------------------
    file_enabled: bool = Field(True, description="Write an HTML report for each new slow event.")
    file_dir: Path = Field(
        default_factory=_no_app_file_dir,
        description="Folder for HTML reports (created, mode 0700, when the first is "
        "written). ``flask perfalert reports`` lists them.",
    )
    file_max_files: int = Field(
        1000,
        ge=1,
        le=MAX_FILES,
        description="Keep at most this many reports in ``FILE_DIR``; the oldest of the "
        "extension's own reports are removed first.",
    )
    file_max_age_days: float = Field(
        30.0,
        ge=0.01,
        le=MAX_DAYS,
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
        le=MAX_RETRIES,
        description="Retries of one delivery on connection errors, timeouts, 408, 425, 429, 5xx.",
    )
    mattermost_timeout: float = Field(
        10.0,
        ge=0.1,
        le=MAX_TIMEOUT,
        description="Seconds each HTTP call to Mattermost may take.",
    )
    spool_dir: Path = Field(
        default_factory=_no_app_spool_dir,
        description="Folder where Mattermost alerts wait until they are delivered.",
    )

    # -- shared de-duplication store -----------------------------------------
    storage_uri: str = Field(
        default_factory=_no_app_storage_uri,
        description="Where the de-duplication window (and the counters of ``flask "
        'perfalert stats``) is kept: ``"sqlite:///path/to/perfalert.db"`` (every worker '
        'of one host, across restarts), ``"redis://host:port/db"`` or ``"rediss://..."`` '
        '(several hosts), or ``"memory://"`` (each process on its own, forgotten at exit).',
    )
    storage_prefix: str = Field(
        "perfalert:",
        description="Prefix of every key in the store, so several apps can share one.",
    )

    # -- privacy ------------------------------------------------------------
    redact_keys: list[Name] = Field(
        default_factory=list,
        description="More parameter and header names whose values are replaced with "
        '``"[Filtered]"``, matched case-insensitively as substrings, in addition to the '
        'built-in list (see :doc:`/security`). ``"*"`` hides every value.',
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_in_the_data_folder(cls, data: Any) -> Any:
        # The report folder, spool and store not given (or None) live in the app's
        # folder under DATA_DIR (load_settings names the app; alone, it is "app").
        if not isinstance(data, dict):
            return data
        data = dict(data)
        given = data.get("data_dir")
        if given is None:
            data["data_dir"] = given = _no_app_data_dir()
        # Derived from a given folder as typed; a bad one is reported as itself.
        base = Path(given) if isinstance(given, str | os.PathLike) else _no_app_data_dir()
        for name, default in in_app_folder(app_folder(base, None)).items():
            if data.get(name) is None:
                data[name] = default
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_empty_strings(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if isinstance(value, str | SecretStr) and name not in _EMPTY_IS_EMPTY:
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if not text.strip():
                # An empty PERFALERT_FILE_DIR would be the working directory.
                raise ValueError("empty; leave the key unset to get the default")
        return value

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


def check_options(options: Mapping[str, Any], caller: str = "PerfAlert()") -> None:
    """Raise TypeError for an option that is not a setting, naming the closest one.

    A misspelled keyword argument is a mistake in code, found when it runs,
    the way Python reports one for any function.
    """
    fields = PerfAlertSettings.model_fields
    for name in options:
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{caller} got an unexpected keyword argument {name!r}{hint}")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:  # not a ValueError: pydantic would not turn it into an error
        raise ValueError("JSON nested too deeply") from None


@dataclass(frozen=True)
class LoadedSettings:
    """The validated settings, where each value came from, and the app's default folders."""

    settings: PerfAlertSettings
    sources: dict[str, Source]
    folders: FolderDefaults | None = None


def _describe(value: Any, secret: bool) -> str:
    if secret:
        return MASK
    if isinstance(value, Path):
        value = str(value)
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
    *,
    app: Flask | None = None,
) -> LoadedSettings:
    """Validate the settings from ``options``, then ``config``, then ``environ``.

    With ``app``, the folders and the store default to the app's own (see
    ``_folders``). Raises TypeError for an option that is not a setting (a
    mistake in code); never raises on a value: every invalid value is logged
    as a warning naming its key and the default that replaces it; every
    unknown ``PERFALERT_*`` key is logged with the closest known key.
    """
    environ = os.environ if environ is None else environ
    options = dict(options or {})
    check_options(options)
    keys = PerfAlertSettings.keys()
    fields = set(keys.values())
    folders = FolderDefaults.of(app) if app is not None else None

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
    #: (field, which entry, where from, the value, why): logged once the defaults are known.
    rejected: list[tuple[str, str, str, Any, str]] = []
    for _ in range(len(keys) + 1):
        if folders is not None and "data_dir" not in init and _DATA_DIR not in env_subset:
            init["data_dir"] = folders.data_dir  # decided only when no source gives one
        try:
            settings = _build(init, env_subset)
        except ValidationError as exc:
            origins = dict(sources)  # several errors of one key: all from the same place
            for error in exc.errors():
                name = str(error["loc"][0]) if error["loc"] else ""
                if name not in fields:  # pragma: no cover - a model-level error
                    raise
                secret = _is_secret(name)
                # An entry of a mapping or list: say which one ("x" of {"x": -1}).
                where = "".join(
                    f"[{_describe(part, secret)}]" for part in error["loc"][1:2] if not secret
                )
                rejected.append((name, where, origins[name], error.get("input"), error["msg"]))
                init[name] = _default(name, folders)  # given: it beats the environment
                sources[name] = "default"
            continue
        if folders is not None:
            own = in_app_folder(app_folder(settings.data_dir, folders.app_name))
            update = {name: own[name] for name in own if sources[name] == "default"}
            settings = settings.model_copy(update=update)
        for name, where, origin, value, reason in rejected:
            secret = _is_secret(name)
            logger.warning(
                "Invalid value for %s%s from %s: %s (%s); using the default %s instead.",
                PREFIX + name.upper(),
                where,
                origin,
                _describe(value, secret),
                reason,
                _describe(getattr(settings, name), secret),
            )
        return LoadedSettings(settings=settings, sources=sources, folders=folders)
    raise RuntimeError("settings did not converge")  # pragma: no cover


def _default(name: str, folders: FolderDefaults | None) -> Any:
    if name == "data_dir" and folders is not None:
        return folders.data_dir
    if name in _IN_APP_FOLDER:
        return None  # the model puts it in the app's folder
    return PerfAlertSettings.model_fields[name].get_default(call_default_factory=True)


def _build(init: dict[str, Any], environ: Mapping[str, str]) -> PerfAlertSettings:
    # The environment is passed explicitly (not read from os.environ) so that
    # tests and load_settings(environ=...) see exactly what they pass.
    values = {
        name: environ[key] for key, name in PerfAlertSettings.keys().items() if key in environ
    }
    values.update(init)
    return PerfAlertSettings.model_validate(values)


def _warn_unknown(what: str, key: str, keys: Mapping[str, str]) -> None:
    close = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    logger.warning("Unknown Flask-PerfAlert %s is ignored%s", what, hint)
