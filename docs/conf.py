"""Sphinx configuration of the Flask-PerfAlert documentation.

Built by ``tox -e docs`` and ``.ci/run`` with warnings as errors:
``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from importlib.metadata import version as _version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "Flask-PerfAlert"
author = "Flask-PerfAlert developers"
copyright = "Flask-PerfAlert developers"
release = _version("flask-perfalert")
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "perfalert_settings",
]

# Everything the docs need is in this repository: no inventories fetched
# from the network (CI has none), so no intersphinx.
exclude_patterns = ["_build"]
default_role = "code"
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_preserve_defaults = True
autoclass_content = "class"

try:
    import furo  # noqa: F401
except ImportError:  # pragma: no cover - the docs extra installs furo
    html_theme = "alabaster"
else:
    html_theme = "furo"
html_title = f"Flask-PerfAlert {release}"
html_static_path = ["_static"]
