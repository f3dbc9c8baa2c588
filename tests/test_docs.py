"""The configuration reference is generated from the settings model: check what it renders.

The Sphinx build itself (tox -e docs, .ci/run) fails on any warning; these
tests run with the test extra alone and pin what the generator promises.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from flask_perfalert import PerfAlertSettings

EXTENSION = Path(__file__).resolve().parent.parent / "docs" / "_ext" / "perfalert_settings.py"


def load_extension() -> ModuleType:
    spec = importlib.util.spec_from_file_location("perfalert_settings_ext", EXTENSION)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_every_setting_has_an_entry_with_type_default_environment_and_description() -> None:
    ext = load_extension()
    text = ext.settings_rst()
    table = ext.settings_table_rst()
    for key, name in PerfAlertSettings.keys().items():
        entry = text.split(f".. confval:: {key}\n", 1)[1].split(".. confval::", 1)[0]
        assert ":Type: " in entry
        assert ":Default: " in entry
        assert f":Environment: ``{key}``" in entry
        assert f":Option: ``PerfAlert({name}=...)``" in entry
        description = PerfAlertSettings.model_fields[name].description or ""
        assert description.split()[0] in entry
        assert f":confval:`{key}`" in table
    assert text.count(".. confval::") == len(PerfAlertSettings.model_fields)


def test_no_path_of_the_building_machine_in_the_reference() -> None:
    ext = load_extension()
    text = ext.settings_rst() + ext.settings_table_rst()
    assert tempfile.gettempdir() + "/" not in text
    entry = text.split(".. confval:: PERFALERT_DATA_DIR\n", 1)[1]
    assert ":Default: ``perfalert`` in the app's instance folder" in entry
    entry = text.split(".. confval:: PERFALERT_FILE_DIR\n", 1)[1]
    assert ":Default: ``<DATA_DIR>/<app name>/reports``" in entry
