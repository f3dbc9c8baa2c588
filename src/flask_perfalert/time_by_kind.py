"""What kind of time it was: a profile's time grouped by where it was spent.

Read off the profile after the response, never on the request path. Each
sample (one stack, with the time it stands for) goes to one kind:

* the first library the app's own code called decides: the app called
  ``sqlalchemy`` (which called ``socket``): database; the app called
  ``requests``: outgoing HTTP; Flask's ``render_template``: templates;
* a sample whose deepest frame is the app's own code is the app's, unless
  that line calls a C function of a known kind (``cursor.execute(...)`` of
  ``sqlite3``, ``time.sleep(...)``, a lock's ``acquire()``), whose time a
  sampler sees on the calling line; the library named is the one of that
  kind the file imports (``database (sqlite3)``);
* time outside the app's code (Flask routing the request) is the framework's
  or another library's.

The app's code is what is neither in the standard library nor in
site-packages (pyinstrument's rule), and compiled templates count as
templates wherever their files are.
"""

from __future__ import annotations

import linecache
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyinstrument.session import Session

#: The kinds, in the order a tie is shown.
APP = "app code"
DATABASE = "database"
HTTP = "outgoing HTTP"
TEMPLATES = "templates"
SERIALIZATION = "JSON and serialization"
WAITING = "waiting (locks, sleep)"
FRAMEWORK = "framework"
OTHER = "other libraries"

#: Top-level modules (or packages) and their kind.
LIBRARY_KINDS: dict[str, str] = {
    **dict.fromkeys(
        (
            "sqlalchemy flask_sqlalchemy sqlite3 _sqlite3 psycopg psycopg2 psycopg_pool "
            "pymysql MySQLdb mysql asyncpg aiosqlite pymongo motor redis peewee pony "
            "oracledb cx_Oracle pyodbc sqlmodel tortoise mongoengine elasticsearch "
            "cassandra clickhouse_driver duckdb"
        ).split(),
        DATABASE,
    ),
    **dict.fromkeys(
        (
            "requests urllib3 httpx httpcore aiohttp urllib http socket ssl "
            "botocore boto3 grpc h11 h2 websocket websockets"
        ).split(),
        HTTP,
    ),
    **dict.fromkeys("jinja2 mako chameleon markupsafe".split(), TEMPLATES),
    **dict.fromkeys(
        (
            "json simplejson orjson ujson rapidjson pickle copyreg marshmallow pydantic "
            "pydantic_core msgpack yaml xml csv base64 zlib gzip"
        ).split(),
        SERIALIZATION,
    ),
    **dict.fromkeys(
        "threading queue asyncio selectors concurrent multiprocessing time gevent eventlet "
        "greenlet".split(),
        WAITING,
    ),
    **dict.fromkeys(
        "flask werkzeug blinker itsdangerous click flask_perfalert asgiref".split(),
        FRAMEWORK,
    ),
}

#: Parts of Flask whose time is of another kind.
_MODULE_KINDS = {"flask.templating": TEMPLATES, "flask.json": SERIALIZATION}

#: C functions called from the app's own lines: the sampler sees their time there.
_C_CALLS = {
    **dict.fromkeys(
        "execute executemany executescript fetchone fetchall fetchmany commit rollback".split(),
        DATABASE,
    ),
    **dict.fromkeys("sleep acquire wait join select poll".split(), WAITING),
    **dict.fromkeys("recv recv_into recvfrom send sendall connect getaddrinfo".split(), HTTP),
    **dict.fromkeys("dumps loads dump load".split(), SERIALIZATION),
}
_CALL = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_TEMPLATE_SUFFIXES = (".html", ".htm", ".jinja", ".jinja2", ".j2", ".xml", ".txt", ".tmpl")
_SEP, _ATTR = "\x00", "\x01"


@dataclass(frozen=True)
class KindFrame:
    """One of the hottest functions of a kind."""

    function: str
    #: ``file:line`` of the function, shortened.
    location: str
    #: Share of the profiled time spent in it, 0..1.
    share: float


@dataclass(frozen=True)
class TimeShare:
    """One kind of time in a profile."""

    #: ``"database"``, ``"app code"``, ... (see the module's constants).
    kind: str
    #: Share of the profiled time, 0..1.
    share: float
    seconds: float
    #: Where most of it went: the libraries (``"sqlalchemy"``) or, for app code,
    #: the modules (``"shop.orders"``), most first.
    sources: tuple[str, ...] = ()
    #: The hottest functions of this kind, hottest first.
    hot_frames: tuple[KindFrame, ...] = field(default=(), repr=False)

    def label(self) -> str:
        """``"database (sqlalchemy)"``."""
        return f"{self.kind} ({', '.join(self.sources)})" if self.sources else self.kind


@dataclass(frozen=True)
class _Frame:
    function: str
    file: str
    line: int
    module: str
    app: bool


class _Classifier:
    def __init__(self, sys_path: Sequence[str], sys_prefixes: Sequence[str]) -> None:
        roots = [os.path.abspath(p or os.getcwd()) for p in sys_path if isinstance(p, str)]
        self.roots = sorted({r for r in roots if os.path.isdir(r)}, key=len, reverse=True)
        self.prefixes = tuple(os.path.abspath(p) for p in sys_prefixes if p)
        self._frames: dict[str, _Frame] = {}

    def frame(self, identifier: str) -> _Frame:
        known = self._frames.get(identifier)
        if known is not None:
            return known
        head, *attributes = identifier.split(_ATTR)
        function, file, *_ = (head.split(_SEP) + ["", ""])[:3]
        line = 0
        for attribute in attributes:
            if attribute.startswith("l") and attribute[1:].isdigit():
                line = int(attribute[1:])
        real = bool(file) and not file.startswith("<")
        library = real and any(file.startswith(p + os.sep) for p in self.prefixes)
        module = self._module(file) if real else file
        # The extension's own frames (the request timer) are never the app's.
        app = real and not library and not module.startswith("flask_perfalert")
        frame = _Frame(function, file, line, module, app)
        if len(self._frames) < 10_000:
            self._frames[identifier] = frame
        return frame

    def _module(self, file: str) -> str:
        path = os.path.abspath(file)
        for root in self.roots:
            if path.startswith(root + os.sep):
                rel = os.path.splitext(path[len(root) + 1 :])[0]
                parts = [p for p in rel.split(os.sep) if p]
                if parts and parts[-1] == "__init__":
                    parts.pop()
                if parts and all(p.isidentifier() for p in parts):
                    return ".".join(parts)
        return os.path.splitext(os.path.basename(file))[0]

    def kind_of(self, stack: Sequence[str]) -> tuple[str, str, _Frame]:
        """The kind of one sample, where it came from, and the frame to credit."""
        frames = [self.frame(identifier) for identifier in stack if identifier]
        if not frames:
            return OTHER, "?", _Frame("?", "?", 0, "?", False)
        leaf = frames[-1]
        deepest_app = None
        for index in range(len(frames) - 1, -1, -1):
            if frames[index].app and not _is_template(frames[index]):
                deepest_app = index
                break
        if deepest_app is None:  # the framework, before or after the app's code
            return _library_kind(leaf) + (leaf,)
        if deepest_app == len(frames) - 1:
            called = _c_call_kind(leaf)
            if called is not None:
                return called[0], called[1], leaf
            return APP, leaf.module, leaf
        callee = frames[deepest_app + 1]
        below = frames[deepest_app + 1 :]
        if any(_is_template(f) for f in below):
            engines = [f.module.split(".", 1)[0] for f in below]
            engine = next((e for e in engines if LIBRARY_KINDS.get(e) == TEMPLATES), TEMPLATES)
            return TEMPLATES, engine, leaf
        kind, source = _library_kind(callee)
        if kind == FRAMEWORK:  # the app called Flask: the rest of the stack may say more
            for frame in frames[deepest_app + 2 :]:
                deeper, deeper_source = _library_kind(frame)
                if deeper not in (FRAMEWORK, OTHER):
                    return deeper, deeper_source, leaf
        return kind, source, leaf


def _is_template(frame: _Frame) -> bool:
    return frame.file.endswith(_TEMPLATE_SUFFIXES)


def _library_kind(frame: _Frame) -> tuple[str, str]:
    module = frame.module
    for prefix, kind in _MODULE_KINDS.items():
        if module == prefix or module.startswith(prefix + "."):
            return kind, prefix
    top = module.split(".", 1)[0].lstrip("_") or module
    found = LIBRARY_KINDS.get(top) or LIBRARY_KINDS.get(module.split(".", 1)[0])
    return (OTHER, top) if found is None else (found, top)


def _c_call_kind(frame: _Frame) -> tuple[str, str] | None:
    """The kind of a C function the app's line calls, and the library it is from.

    A sampler sees only the calling line (``db.execute(...)``), so the library is
    the one of that kind the line's file imports (``import sqlite3``); the
    function's name when the file imports none, or several.
    """
    if not frame.line:
        return None
    text = linecache.getline(frame.file, frame.line)
    for name in _CALL.findall(text):
        kind = _C_CALLS.get(name)
        if kind is not None:
            libraries = [m for m in _imports(frame.file) if LIBRARY_KINDS.get(m) == kind]
            if kind == WAITING and name == "sleep" and "time" in libraries:
                libraries = ["time"]
            return kind, libraries[0] if len(libraries) == 1 else name
    return None


_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([A-Za-z_]\w*)|import[ \t]+([^#\n;]+))", re.MULTILINE)
_imports_cache: dict[str, tuple[str, ...]] = {}


def _imports(file: str) -> tuple[str, ...]:
    """The top-level modules ``file`` imports, in order (read once per file)."""
    known = _imports_cache.get(file)
    if known is None:
        found: list[str] = []
        for source, names in _IMPORT.findall("".join(linecache.getlines(file))):
            if source:  # from a.b import c
                found.append(source)
            else:  # import a.b as c, d
                found += [
                    n.strip().split(".", 1)[0].split()[0] for n in names.split(",") if n.strip()
                ]
        known = tuple(dict.fromkeys(name.lstrip("_") or name for name in found))
        if len(_imports_cache) < 1_000:
            _imports_cache[file] = known
    return known


def time_by_kind(session: Session | None, hot_per_kind: int = 3) -> list[TimeShare]:
    """The profile's time by kind, most first; empty without a profile."""
    if session is None:
        return []
    records: Iterable[tuple[Sequence[str], float]] = session.frame_records
    classifier = _Classifier(session.sys_path or [], session.sys_prefixes or [])
    seconds: dict[str, float] = {}
    sources: dict[str, dict[str, float]] = {}
    frames: dict[str, dict[tuple[str, str, int], float]] = {}
    total = 0.0
    for stack, time in records:
        if time <= 0:
            continue
        kind, source, credited = classifier.kind_of(stack)
        total += time
        seconds[kind] = seconds.get(kind, 0.0) + time
        by_source = sources.setdefault(kind, {})
        by_source[source] = by_source.get(source, 0.0) + time
        key = (credited.function, credited.file, credited.line)
        by_frame = frames.setdefault(kind, {})
        by_frame[key] = by_frame.get(key, 0.0) + time
    if total <= 0:
        return []
    shares = []
    for kind, spent in seconds.items():
        top_sources = sorted(sources[kind].items(), key=lambda item: -item[1])
        named = tuple(name for name, t in top_sources[:2] if t >= 0.2 * spent and name != kind)
        hot = sorted(frames[kind].items(), key=lambda item: -item[1])[:hot_per_kind]
        shares.append(
            TimeShare(
                kind=kind,
                share=spent / total,
                seconds=spent,
                sources=named,
                hot_frames=tuple(
                    KindFrame(func, f"{session.shorten_path(file)}:{line}", t / total)
                    for (func, file, line), t in hot
                ),
            )
        )
    shares.sort(key=lambda share: -share.seconds)
    return shares


def summary(shares: Sequence[TimeShare], limit: int = 4) -> str:
    """``"62 % database (sqlalchemy), 30 % app code (shop.orders), 8 % templates"``."""
    shown = [s for s in shares if round(s.share * 100) >= 1][:limit]
    return ", ".join(f"{s.share * 100:.0f} % {s.label()}" for s in shown)
