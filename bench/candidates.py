"""Other revisions of the package, measured in the same run as this tree.

``--candidate NAME=REV`` takes the ``src/`` of git revision ``REV`` (``git
archive``, into a temporary folder: nothing is registered in the repository
and nothing is left behind if the run is killed); ``--candidate NAME=PATH``
takes ``PATH/src`` of a folder as it is. Benchmark children of a candidate
get its ``src/`` first on ``PYTHONPATH``, so ``import flask_perfalert`` loads
the candidate's code, while the app, the harness and every other package
stay the same. This tree is measured the same way (its own ``src/``), so
both go through the same import path.

A variant is one configuration measured side by side with the others: the
bare app, or the app monitored in one profiler mode by one candidate.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The name of this tree among the candidates.
THIS_TREE = "this tree"


@dataclass(frozen=True)
class Candidate:
    name: str
    #: What was asked for (a revision or a folder), and the commit it resolved to.
    source: str
    commit: str
    src: Path


@dataclass(frozen=True)
class Variant:
    """The bare app, or the app monitored by ``candidate`` in profiler ``mode``."""

    label: str
    mode: str
    candidate: str | None

    @property
    def bare(self) -> bool:
        return self.mode == "bare"


def this_tree() -> Candidate:
    return Candidate(THIS_TREE, "working tree", _commit("HEAD", ROOT), ROOT / "src")


def prepare(spec: str, folder: Path) -> Candidate:
    """The candidate of ``NAME=REV`` or ``NAME=PATH``, its ``src/`` ready under ``folder``."""
    name, sep, source = spec.partition("=")
    name, source = name.strip(), source.strip()
    if not sep or not name or not source or ":" in name or name == "bare":
        raise ValueError(f"--candidate wants NAME=REVISION or NAME=PATH, not {spec!r}")
    path = Path(source)
    if path.is_dir():
        src = path.resolve() / "src"
        if not (src / "flask_perfalert").is_dir():
            raise ValueError(f"--candidate {spec}: no src/flask_perfalert in {path}")
        return Candidate(name, source, _commit("HEAD", path) or "no git", src)
    commit = _commit(source, ROOT)
    if not commit:
        raise ValueError(f"--candidate {spec}: {source!r} is neither a folder nor a git revision")
    target = folder / name
    target.mkdir(parents=True)
    archive = target / "src.tar"
    subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), commit, "src"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
            tar.extractall(target, filter="data")
        else:  # pragma: no cover - our own archive of our own repository
            tar.extractall(target)  # noqa: S202
    archive.unlink()
    return Candidate(name, source, commit, target / "src")


def _commit(rev: str, where: Path) -> str:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "--verify", "--quiet", f"{rev}^{{commit}}"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def variants(modes: tuple[str, ...], candidates: dict[str, list[str]]) -> list[Variant]:
    """Bare, this tree in each of ``modes``, then each candidate in its modes."""
    out = [Variant("bare", "bare", None)]
    out += [Variant(mode, mode, THIS_TREE) for mode in modes]
    for name, its_modes in candidates.items():
        out += [Variant(f"{name}:{mode}", mode, name) for mode in its_modes]
    return out


def env_for(base: dict[str, str], candidate: Candidate) -> dict[str, str]:
    """The environment of a benchmark child importing ``candidate``'s package."""
    env = dict(base)
    parts = [str(candidate.src)]
    if base.get("PYTHONPATH"):
        parts.append(base["PYTHONPATH"])
    env["PYTHONPATH"] = ":".join(parts)
    return env


def temp_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="perfalert-bench-candidates-"))
