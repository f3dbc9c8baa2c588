"""Flask's source distribution for the Flask installed here: its own tests and examples.

The invisibility tests run Flask's test suite and the Flask tutorial's tests,
which only the sdist ships, and they must be those of the installed version.
``.ci/run`` fetches it before the tests (``python tests/flask_sdist.py``, once
per virtual environment), so CI's test run makes no network call; a test run
by hand fetches it on first use with the same ``pip download`` into the same
cache folder.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "flask-sdist"


def installed_flask_version() -> str:
    return importlib.metadata.version("flask")


def _find(cache: Path, version: str) -> Path | None:
    # The file is "Flask-2.3.0.tar.gz" for older releases, "flask-3.1.3.tar.gz" for newer.
    wanted = f"flask-{version}.tar.gz"
    if cache.is_dir():
        for path in cache.iterdir():
            if path.name.lower() == wanted:
                return path
    return None


def flask_sdist(version: str | None = None, cache: Path = CACHE) -> Path:
    """The sdist of ``version`` (default: the installed one), downloaded once into ``cache``."""
    version = version or installed_flask_version()
    found = _find(cache, version)
    if found is not None:
        return found
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-binary",
            ":all:",
            "--no-deps",
            "--dest",
            str(cache),
            f"flask=={version}",
        ],
        check=True,
        timeout=600,
    )
    found = _find(cache, version)
    if found is None:
        raise FileNotFoundError(f"pip download put no flask-{version}.tar.gz into {cache}")
    return found


def extract(sdist: Path, dest: Path) -> Path:
    """Unpack ``sdist`` into ``dest``; the folder holding its ``tests`` and ``examples``."""
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(dest, filter="data")
        else:  # Python without the extraction filters (3.10 before 3.10.12)
            for member in archive.getmembers():
                target = (dest / member.name).resolve()
                if not target.is_relative_to(dest.resolve()) or member.issym() or member.islnk():
                    raise ValueError(f"unsafe member in {sdist}: {member.name}")
            archive.extractall(dest)
    [top] = [path for path in dest.iterdir() if path.is_dir()]
    return top


if __name__ == "__main__":
    print(flask_sdist())
