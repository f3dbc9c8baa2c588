"""The guarantees pages name real tests: every ``file.py::test_name`` they cite exists.

docs/security.rst and docs/mattermost.rst list what is guaranteed and what is
not, each line with the test that proves it; a renamed or removed test must
not leave a promise without its proof.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
CITED = re.compile(r"``(test_[a-z0-9_]+\.py)::(test_[A-Za-z0-9_]+)``")


def defined_tests(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    # Tests collected under another name (``from test_canary import test_x as test_y``).
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("page", ["security.rst", "mattermost.rst"])
def test_every_cited_test_exists(page: str) -> None:
    text = (ROOT / "docs" / page).read_text()
    cited = CITED.findall(text)
    assert len(cited) >= 15, "the page lists its guarantees with their tests"
    missing = [
        f"{file}::{name}"
        for file, name in cited
        if not (ROOT / "tests" / file).exists() or name not in defined_tests(ROOT / "tests" / file)
    ]
    assert missing == []
