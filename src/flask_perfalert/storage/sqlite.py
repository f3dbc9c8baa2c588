"""The one-host store: an SQLite file shared by every worker process of a host.

The claim is one statement, ``INSERT ... ON CONFLICT DO UPDATE ... WHERE
expires <= now``, run as its own transaction: SQLite takes the write lock
before the statement reads the row, so of several processes racing on one key
exactly one inserts or renews it (one changed row) and every other sees no
change. The write lock is held only while that one statement runs. Rows carry
their expiry; expired rows are deleted at most once per ``PURGE_INTERVAL``
per process, so the file holds only the keys of the current window.

The file is opened lazily, once per process (a connection never crosses a
``fork``, e.g. gunicorn ``--preload``), in WAL mode with a short busy timeout:
a file locked for longer makes ``claim`` raise, and the fallback wrapper keeps
the window in memory meanwhile.

Counters (``add_counters``, ``counters``) are rows ``(app, name, value)`` of
``perfalert_counters``, the app being the prefix and the app's name; a batch
is one ``BEGIN IMMEDIATE`` transaction of one upsert per counter, applied at
most once per sender and batch number (``perfalert_counter_senders``).

A key's state (``settle``: the worst alerted, the suppressed) is a row of
``perfalert_keys``, read and written in one ``BEGIN IMMEDIATE`` transaction;
sampled latencies are rows ``(app, endpoint, hour, bucket, count)`` of
``perfalert_latencies``, older than two days deleted with the expired claims.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .._fork import renew_locks_after_fork
from .base import (
    SENDER_TTL,
    SINCE,
    WORKERS_RECENT,
    WORKERS_SEEN,
    Batch,
    Deltas,
    Histograms,
    KeyState,
    Later,
    Settled,
    settle_state,
    state_ttl,
)

T = TypeVar("T")

#: Seconds a claim waits for another process's write lock before giving up.
BUSY_TIMEOUT = 0.05
#: Seconds the first set-up of the file (WAL mode, table) may wait for a lock.
PREPARE_TIMEOUT = 2.0
#: Seconds between two deletions of expired rows by one process.
PURGE_INTERVAL = 60.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS perfalert_claims ("
    " key TEXT PRIMARY KEY NOT NULL,"
    " expires REAL NOT NULL,"
    " owner TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS perfalert_claims_expires ON perfalert_claims (expires)",
    "CREATE TABLE IF NOT EXISTS perfalert_counters ("
    " app TEXT NOT NULL,"
    " name TEXT NOT NULL,"
    " value REAL NOT NULL,"
    " PRIMARY KEY (app, name))",
    "CREATE TABLE IF NOT EXISTS perfalert_counter_senders ("
    " app TEXT NOT NULL,"
    " sender TEXT NOT NULL,"
    " batch INTEGER NOT NULL,"
    " seen REAL NOT NULL,"
    " PRIMARY KEY (app, sender))",
    "CREATE TABLE IF NOT EXISTS perfalert_keys ("
    " key TEXT PRIMARY KEY NOT NULL,"
    " worst REAL NOT NULL, since INTEGER NOT NULL, suppressed INTEGER NOT NULL,"
    " alerts INTEGER NOT NULL, expires REAL NOT NULL, alerted_end REAL NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS perfalert_latencies ("
    " app TEXT NOT NULL, endpoint TEXT NOT NULL, hour INTEGER NOT NULL,"
    " bucket INTEGER NOT NULL, count INTEGER NOT NULL,"
    " PRIMARY KEY (app, endpoint, hour, bucket))",
)
_STATE = (
    "SELECT worst, since, suppressed, alerts, alerted_end FROM perfalert_keys "
    "WHERE key = ? AND expires > ?"
)
#: Files made before a key's state kept when its last alerted request ended.
_ADD_ALERTED_END = "ALTER TABLE perfalert_keys ADD COLUMN alerted_end REAL NOT NULL DEFAULT 0"
_SET_STATE = (
    "INSERT OR REPLACE INTO perfalert_keys "
    "(key, worst, since, suppressed, alerts, alerted_end, expires) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_STATES = (
    "SELECT key, worst, since, suppressed, alerts, alerted_end FROM perfalert_keys "
    "WHERE key >= ? AND key < ? AND expires > ?"
)
_ADD_LATENCY = (
    "INSERT INTO perfalert_latencies (app, endpoint, hour, bucket, count) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (app, endpoint, hour, bucket) DO UPDATE SET count = count + excluded.count"
)
_LATENCIES = (
    "SELECT bucket, sum(count) FROM perfalert_latencies WHERE app = ? AND endpoint = ? "
    "AND hour >= ? AND hour <= ? GROUP BY bucket"
)
_PURGE_LATENCIES = "DELETE FROM perfalert_latencies WHERE hour < ?"
_PURGE_KEYS = "DELETE FROM perfalert_keys WHERE expires <= ?"
_CLAIM = (
    "INSERT INTO perfalert_claims (key, expires, owner) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET expires = excluded.expires, owner = excluded.owner "
    "WHERE perfalert_claims.expires <= ?"
)
_PURGE = "DELETE FROM perfalert_claims WHERE expires <= ?"
_ADD = (
    "INSERT INTO perfalert_counters (app, name, value) VALUES (?, ?, ?) "
    "ON CONFLICT (app, name) DO UPDATE SET value = value + excluded.value"
)
_SINCE = "INSERT OR IGNORE INTO perfalert_counters (app, name, value) VALUES (?, ?, ?)"
_LAST_BATCH = "SELECT batch FROM perfalert_counter_senders WHERE app = ? AND sender = ?"
_SENDER = (
    "INSERT INTO perfalert_counter_senders (app, sender, batch, seen) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (app, sender) DO UPDATE SET batch = max(batch, excluded.batch), "
    "seen = excluded.seen"
)
_FORGET_SENDERS = "DELETE FROM perfalert_counter_senders WHERE app = ? AND seen < ?"
_COUNTERS = "SELECT name, value FROM perfalert_counters WHERE app = ?"
_WORKERS = "SELECT count(*) FROM perfalert_counter_senders WHERE app = ? AND seen >= ?"


def sqlite_path(uri: str) -> Path:
    """The file of ``sqlite:///path/to/file.db``; raises ValueError with the reason.

    Everything after ``sqlite://`` is the path: ``sqlite:///var/lib/app/perfalert.db``
    is absolute (so is SQLAlchemy's four-slash form), ``sqlite://perfalert.db`` is
    relative to the working directory.
    """
    scheme, _, rest = uri.partition("://")
    if scheme.lower() != "sqlite":
        raise ValueError(f"not an sqlite:// URI: {uri!r}")
    path = rest.split("?", 1)[0]
    if not path:
        raise ValueError(
            "PERFALERT_STORAGE_URI sqlite:// needs a file, e.g. sqlite:///var/lib/app/perfalert.db"
        )
    if path in (":memory:", "/:memory:") or path.startswith("file:"):
        raise ValueError(
            "PERFALERT_STORAGE_URI must name an SQLite file shared by the workers; "
            'for a per-process window use "memory://"'
        )
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    file = Path(path)
    folder = file.parent
    if not folder.is_dir():
        raise ValueError(
            f"the folder {str(folder)!r} of PERFALERT_STORAGE_URI does not exist; "
            "create it (writable by the app) or choose another path"
        )
    if file.is_dir():
        raise ValueError(f"PERFALERT_STORAGE_URI names a folder, not a file: {str(file)!r}")
    return file


class SQLiteStore:
    """Claims kept in one SQLite file; every process of the host sees them."""

    shared = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        prefix: str = "",
        clock: Callable[[], float] = time.time,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.prefix = prefix
        self.clock = clock
        self.busy_timeout = busy_timeout
        self.description = f"sqlite://{self.path}"
        self._owner = f"{os.getpid()}"
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._next_purge = 0.0
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")

    @classmethod
    def from_uri(
        cls, uri: str, prefix: str = "", clock: Callable[[], float] = time.time
    ) -> SQLiteStore:
        return cls(sqlite_path(uri), prefix=prefix, clock=clock)

    # -- the store protocol -------------------------------------------------------
    def claim(self, key: str, window_seconds: float, later: Later | None = None) -> bool:
        now = self.clock()
        with self._lock:
            conn = self._connection()
            try:
                changed = conn.execute(
                    _CLAIM, (self.prefix + key, now + window_seconds, self._owner, now)
                ).rowcount
            except sqlite3.Error:
                self._drop()
                raise
            if now >= self._next_purge:
                self._next_purge = now + PURGE_INTERVAL
                try:
                    conn.execute(_PURGE, (now,))
                    conn.execute(_PURGE_KEYS, (now,))
                    conn.execute(_PURGE_LATENCIES, (int(now // 3600) - 48,))
                except sqlite3.Error:
                    pass  # the claim stands; expired rows go next time
        return changed == 1

    def add_counters(
        self, app_key: str, deltas: Deltas, batch: Batch | None = None, *, retry_now: bool = False
    ) -> bool:
        """Add ``deltas`` to the app's counters, in one transaction; raises on failure.

        A ``batch`` already applied for its sender is not added again.
        """
        app = self.prefix + app_key
        now = self.clock()
        self._transaction(lambda conn: self._add(conn, app, deltas, batch, now))
        return True

    def settle(
        self,
        key: str,
        seconds: float,
        first: bool,
        factor: float,
        window_seconds: float,
        started: float,
    ) -> Settled:
        """Apply the settle rule to ``key``'s state in one transaction; raises on failure."""
        key = self.prefix + key
        now = self.clock()

        def change(conn: sqlite3.Connection) -> Settled:
            row = conn.execute(_STATE, (key, now)).fetchone()
            state = KeyState(*row) if row is not None else None
            new, settled = settle_state(state, seconds, first, factor, started)
            conn.execute(_SET_STATE, (key, *new, now + state_ttl(window_seconds)))
            return settled

        return self._transaction(change)

    def key_states(self) -> dict[str, KeyState]:
        size = len(self.prefix)
        # Every key of the prefix: from the prefix up to (not including) its successor.
        upper = self.prefix[:-1] + chr(ord(self.prefix[-1]) + 1) if self.prefix else "\U0010ffff"
        rows = self._read(lambda conn: conn.execute(_STATES, (self.prefix, upper, self.clock())))
        return {row[0][size:]: KeyState(*row[1:]) for row in rows}

    def add_latencies(self, app_key: str, slot: int, histograms: Histograms) -> bool:
        app = self.prefix + app_key
        rows = [
            (app, endpoint, slot, index, int(count))
            for endpoint, counts in histograms.items()
            for index, count in counts.items()
        ]
        self._transaction(lambda conn: conn.executemany(_ADD_LATENCY, rows))
        return True

    def latencies(self, app_key: str, endpoint: str, slots: Iterable[int]) -> dict[int, int]:
        hours = list(slots)
        if not hours:
            return {}
        args = (self.prefix + app_key, endpoint, min(hours), max(hours))
        return {int(b): int(n) for b, n in self._read(lambda conn: conn.execute(_LATENCIES, args))}

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction; raises on failure."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = work(conn)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error:
                self._drop()
                raise
        return result

    def _read(self, query: Callable[[sqlite3.Connection], sqlite3.Cursor]) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                return list(query(conn))
            except sqlite3.Error:
                self._drop()
                raise

    @staticmethod
    def _add(
        conn: sqlite3.Connection,
        app: str,
        deltas: Mapping[str, float],
        batch: Batch | None,
        now: float,
    ) -> None:
        if batch is not None:
            sender, number = batch
            row = conn.execute(_LAST_BATCH, (app, sender)).fetchone()
            conn.execute(_SENDER, (app, sender, number, now))
            conn.execute(_FORGET_SENDERS, (app, now - SENDER_TTL))
            if row is not None and row[0] >= number:
                return  # applied before; its reply was lost
        conn.executemany(_ADD, [(app, name, float(value)) for name, value in deltas.items()])
        conn.execute(_SINCE, (app, SINCE, now))

    def counters(self, app_key: str) -> dict[str, float]:
        """Every process's counters of the app, summed; ``{}`` if none were added."""
        app = self.prefix + app_key
        now = self.clock()
        with self._lock:
            conn = self._connection()
            try:
                values = {name: float(value) for name, value in conn.execute(_COUNTERS, (app,))}
                seen = conn.execute(_WORKERS, (app, now - WORKERS_RECENT)).fetchone()[0]
            except sqlite3.Error:
                self._drop()
                raise
        if values:
            values[WORKERS_SEEN] = float(seen)
        return values

    def prepare(self) -> None:
        """Create the file and its table now (at start-up), then close it again.

        Raises when the file cannot be opened or written; the connection is not
        kept, so nothing opened here is inherited by forked workers.
        """
        conn = self._open(PREPARE_TIMEOUT)
        conn.close()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # -- connections ------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._pid != pid:
            # Inherited across fork: never touch the parent's connection.
            self._conn = None
            self._pid = pid
        if self._conn is None:
            self._owner = str(pid)
            self._conn = conn = self._open(self.busy_timeout)
            # Closed when the store goes (an app built per test), not left to the
            # connection's own collection, which Python 3.13 reports as a ResourceWarning.
            # Not at exit: the last counters are sent then.
            weakref.finalize(self, _close_in, pid, conn).atexit = False
        return self._conn

    def _open(self, timeout: float) -> sqlite3.Connection:
        if not self.path.exists():
            # Created private to the app's user; its -wal and -shm files inherit the mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                conn.execute(statement)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(perfalert_keys)")}
            if "alerted_end" not in columns:
                try:
                    conn.execute(_ADD_ALERTED_END)
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise  # not another worker adding it at the same time
        except BaseException:
            conn.close()
            raise
        if timeout != self.busy_timeout:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        return conn

    def _drop(self) -> None:
        # After an error the connection may be in any state: open a fresh one next time.
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass


def _close_in(pid: int, conn: sqlite3.Connection) -> None:
    """Close ``conn`` if this is the process that opened it (a fork child leaves it)."""
    if os.getpid() == pid:
        try:
            conn.close()
        except sqlite3.Error:
            pass
