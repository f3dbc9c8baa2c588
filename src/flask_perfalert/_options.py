"""The keyword options of :class:`~flask_perfalert.PerfAlert`, for type checkers."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Literal, TypedDict

from pydantic import SecretStr


class PerfAlertOptions(TypedDict, total=False):
    """The keyword options of :class:`~flask_perfalert.PerfAlert`: one per setting.

    Written out because a type checker cannot read the settings model; the
    model stays the one source of the names: the test suite checks that these
    keys are exactly its fields, and ``PerfAlert(...)`` raises TypeError for a
    name that is not one, type checker or not. The value types are what a
    caller may pass; the model validates and converts them.
    """

    enabled: bool
    threshold_seconds: float
    endpoint_thresholds: Mapping[str, float]
    exclude: Sequence[str]
    alert_window_days: float
    escalation_factor: float
    data_dir: str | os.PathLike[str]
    profiler: Literal["sampling", "pyinstrument", "none"]
    sample_interval: float
    sample_after: float
    max_overhead: float
    file_enabled: bool
    file_dir: str | os.PathLike[str]
    file_max_files: int
    file_max_age_days: float
    mattermost_enabled: bool
    mattermost_url: str | None
    mattermost_token: str | SecretStr | None
    mattermost_channel_id: str | None
    mattermost_max_retries: int
    mattermost_timeout: float
    spool_dir: str | os.PathLike[str]
    storage_uri: str
    storage_prefix: str
    redact_keys: Sequence[str]
