"""Sphinx directives that render the configuration reference from the settings model.

``.. perfalert-settings-table::`` is a one-line-per-key overview and
``.. perfalert-settings::`` one entry per key with its type, default,
environment variable, keyword option and description. Both read
:class:`flask_perfalert.PerfAlertSettings` at build time, so a key added to
the model is documented by the next build, and a key removed disappears.

The rendering itself (``settings_table_rst``, ``settings_rst``) is plain Python
and needs no Sphinx, so the test suite checks it too.
"""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from flask_perfalert import PerfAlertSettings
from flask_perfalert.settings import PREFIX

#: Defaults that depend on the machine building the docs, described in words.
#: A default that is a path must be listed here: the build fails otherwise, so
#: a machine's path never ends up in the published docs.
DEFAULT_TEXT = {
    "data_dir": "``perfalert`` in the app's instance folder (``app.instance_path``); if "
    "that cannot be written, ``flask-perfalert-<uid>/<hash of the instance path>`` in the "
    "system temp directory (see :ref:`app-folders`)",
    "file_dir": "``<DATA_DIR>/<app name>/reports``",
    "spool_dir": "``<DATA_DIR>/<app name>/spool``",
    "storage_uri": "``sqlite:///<DATA_DIR>/<app name>/perfalert.db``",
}

_BOUNDS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤"}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        inner = _type_name(args[0])
        bounds = " ".join(
            f"{sym} {getattr(meta, op)}"
            for info in args[1:]
            for meta in getattr(info, "metadata", [])
            for op, sym in _BOUNDS.items()
            if getattr(meta, op, None) is not None
        )
        return f"{inner} ({bounds})" if bounds else inner
    if origin is typing.Literal:
        return "one of " + ", ".join(f'``"{a}"``' for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type_name(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text}, or unset" if type(None) in args else text
    if origin is dict:
        return f"mapping of {_type_name(args[0])}s to {_type_name(args[1])}s"
    if origin is list:
        return f"list of {_type_name(args[0])}s"
    if annotation is SecretStr:
        return "string (secret)"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if annotation in names:
        return names[annotation]
    raise ValueError(f"no documentation name for the type {annotation!r}")


def _bounds(field: FieldInfo) -> str:
    found = []
    for item in field.metadata:
        for attr, sign in _BOUNDS.items():
            value = getattr(item, attr, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return f" ({', '.join(found)})" if found else ""


def _default(name: str, field: FieldInfo) -> str:
    if name in DEFAULT_TEXT:
        return DEFAULT_TEXT[name]
    value = field.get_default(call_default_factory=True)
    if isinstance(value, Path):
        raise ValueError(
            f"the default of {name} is a path on this machine; describe it in DEFAULT_TEXT"
        )
    if value is None:
        return "unset"
    return f"``{json.dumps(value)}``"


def _environment(name: str, annotation: Any) -> str:
    key = PREFIX + name.upper()
    origin = typing.get_origin(annotation)
    if origin is list:
        return f"``{key}`` (comma-separated, or a JSON list)"
    if origin is dict:
        return f"``{key}`` (a JSON object)"
    if annotation is bool:
        return f"``{key}`` (``true``/``false``, ``1``/``0``, ``yes``/``no``)"
    return f"``{key}``"


def _fields() -> list[tuple[str, FieldInfo]]:
    return list(PerfAlertSettings.model_fields.items())


def settings_table_rst() -> str:
    """An overview: key, type and default of every setting, linked to its entry."""
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 40 30 30",
        "",
        "   * - Key",
        "     - Type",
        "     - Default",
    ]
    for name, field in _fields():
        key = PREFIX + name.upper()
        lines += [
            f"   * - :confval:`{key}`",
            f"     - {_type_name(field.annotation)}",
            f"     - {_default(name, field)}",
        ]
    return "\n".join(lines) + "\n"


def settings_rst() -> str:
    """One entry per setting: type, default, environment variable, option, description."""
    lines: list[str] = []
    for name, field in _fields():
        key = PREFIX + name.upper()
        description = (field.description or "").strip()
        if not description:
            raise ValueError(f"{key} has no description in the settings model")
        lines += [
            f".. confval:: {key}",
            "",
            f"   :Type: {_type_name(field.annotation)}{_bounds(field)}",
            f"   :Default: {_default(name, field)}",
            f"   :Environment: {_environment(name, field.annotation)}",
            f"   :Option: ``PerfAlert({name}=...)``",
            "",
            *(f"   {line}" for line in description.splitlines()),
            "",
        ]
    return "\n".join(lines)


def setup(app: Any) -> dict[str, Any]:
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class _Rendered(SphinxDirective):
        render = staticmethod(settings_rst)

        def run(self) -> list[nodes.Node]:
            container = nodes.container()
            source = self.get_source_info()[0] or "perfalert_settings"
            content = StringList(self.render().splitlines(), source=source)
            self.state.nested_parse(content, self.content_offset, container)
            return list(container.children)

    class SettingsDirective(_Rendered):
        render = staticmethod(settings_rst)

    class SettingsTableDirective(_Rendered):
        render = staticmethod(settings_table_rst)

    app.add_object_type(
        "confval",
        "confval",
        objname="configuration value",
        indextemplate="pair: %s; configuration value",
    )
    app.add_directive("perfalert-settings", SettingsDirective)
    app.add_directive("perfalert-settings-table", SettingsTableDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
