"""The several-hosts store: Redis (any version from 6 on).

One claim is one command, ``SET key owner NX PX window``: Redis runs it
atomically, so of any number of workers on any number of hosts exactly one gets
``OK`` per key per window, and the key expires by itself on the server.

Calls are short-fused: the connection and each reply may take at most
``CONNECT_TIMEOUT`` and ``READ_TIMEOUT`` seconds, and a failed call is never
retried on the calling thread (the fallback wrapper retries later). Query
options of the URI (``?socket_timeout=1.5``, ``ssl_ca_certs=...``) are passed
to redis-py and win over these defaults.

The client (and its connection pool) is made per process: after a ``fork``
(gunicorn ``--preload``) the child makes its own and never uses the parent's.

Counters of an app are one hash, ``<prefix>counters:<app>``; a batch of them
is one Lua script (one round trip, run atomically): ``HINCRBYFLOAT`` per
counter, unless the sender's batch number shows it was applied before, and an
``EXPIRE`` of ``COUNTER_TTL`` on every key it touched, so the counters of an
app that stopped reporting go away by themselves.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._fork import renew_locks_after_fork
from .base import (
    COUNTER_TTL,
    SENDER_TTL,
    WORKERS_RECENT,
    WORKERS_SEEN,
    Batch,
    Deltas,
    Histograms,
    KeyState,
    Later,
    Settled,
    masked_uri,
    settle_state,
    state_ttl,
)

#: Tries of one settle when other workers change the same key meanwhile.
SETTLE_TRIES = 20
#: Seconds an hour's latency histogram outlives its hour.
LATENCY_TTL = 49 * 3600

if TYPE_CHECKING:
    import redis as redis_module

#: Seconds to open a connection to Redis.
CONNECT_TIMEOUT = 0.25
#: Seconds to wait for one reply.
READ_TIMEOUT = 0.25

INSTALL_HINT = "pip install 'flask-perfalert[redis]'"

# KEYS: the counters hash, the senders' last batch numbers (hash), the senders
# by time of their last batch (sorted set). ARGV: sender ("" without a batch),
# batch number, now, TTL, forget senders before, then counter name, delta, ...
_ADD_COUNTERS = """
local sender = ARGV[1]
local apply = true
if sender ~= '' then
  local last = tonumber(redis.call('HGET', KEYS[2], sender) or '0')
  local number = tonumber(ARGV[2])
  if last >= number then
    apply = false
  else
    redis.call('HSET', KEYS[2], sender, ARGV[2])
  end
  redis.call('ZADD', KEYS[3], ARGV[3], sender)
  local old = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[5], 'LIMIT', 0, 100)
  if #old > 0 then
    redis.call('HDEL', KEYS[2], unpack(old))
    redis.call('ZREM', KEYS[3], unpack(old))
  end
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
if apply then
  for i = 6, #ARGV, 2 do
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('HSETNX', KEYS[1], 'since', ARGV[3])  -- base.SINCE
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if apply then return 1 end
return 0
"""
_ADD_COUNTERS_SHA = hashlib.sha1(_ADD_COUNTERS.encode()).hexdigest()
SCHEMES = ("redis", "rediss")


class RedisStore:
    """Claims kept in Redis, shared by every process of every host that uses it."""

    shared = True

    def __init__(
        self,
        uri: str,
        prefix: str = "",
        clock: Callable[[], float] = time.time,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        scheme = uri.partition("://")[0].lower()
        if scheme not in SCHEMES:
            raise ValueError(
                f"not a redis:// or rediss:// URI: {masked_uri(uri, address_only=True)}"
            )
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise RuntimeError(
                "PERFALERT_STORAGE_URI is a Redis URI but the redis package is not "
                f"installed; install the extra: {INSTALL_HINT}"
            ) from None
        self._redis = redis
        self._uri = uri
        self.prefix = prefix
        # Expiry is kept by the Redis server; the clock is not used.
        self.clock = clock
        self.description = masked_uri(uri, address_only=True)
        self._options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout,
            "socket_timeout": read_timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        # Checks the URI now (a bad one is a configuration error); connects to nothing.
        self._client: redis_module.Redis | None = self._make_client()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")

    def _make_client(self) -> redis_module.Redis:
        try:
            return self._redis.Redis.from_url(self._uri, **self._options)
        except ValueError as exc:
            # redis-py's message may quote the URI; name the address without credentials.
            address = masked_uri(self._uri, address_only=True)
            raise ValueError(
                f"PERFALERT_STORAGE_URI {address} is not a valid Redis URI ({type(exc).__name__})"
            ) from None

    def _client_for_process(self) -> redis_module.Redis:
        pid = os.getpid()
        with self._lock:
            if self._pid != pid or self._client is None:
                # Never the parent's pool: its sockets belong to the parent.
                self._client = self._make_client()
                self._pid = pid
            return self._client

    # -- the store protocol -------------------------------------------------------
    def claim(self, key: str, window_seconds: float, later: Later | None = None) -> bool:
        millis = max(1, math.ceil(window_seconds * 1000))
        owner = f"{socket.gethostname()}:{os.getpid()}"
        client = self._client_for_process()
        return bool(client.set(self.prefix + key, owner, nx=True, px=millis))

    def add_counters(
        self, app_key: str, deltas: Deltas, batch: Batch | None = None, *, retry_now: bool = False
    ) -> bool:
        """Add ``deltas`` to the app's counters, atomically; raises on failure.

        A ``batch`` already applied for its sender is not added again.
        """
        keys = self._counter_keys(app_key)
        now = self.clock()
        sender, number = batch if batch is not None else ("", 0)
        args: list[str | int] = [sender, number, repr(now), COUNTER_TTL, repr(now - SENDER_TTL)]
        for name, value in deltas.items():
            args += [name, format(float(value), ".17g")]
        client = self._client_for_process()
        try:
            client.evalsha(_ADD_COUNTERS_SHA, len(keys), *keys, *args)
        except self._redis.exceptions.NoScriptError:
            client.eval(_ADD_COUNTERS, len(keys), *keys, *args)  # also caches it
        return True

    def counters(self, app_key: str) -> dict[str, float]:
        """Every process's counters of the app, summed; ``{}`` if none were added."""
        total, _, seen = self._counter_keys(app_key)
        now = self.clock()
        pipe = self._client_for_process().pipeline(transaction=False)
        pipe.hgetall(total)
        pipe.zcount(seen, repr(now - WORKERS_RECENT), "+inf")
        raw, workers = pipe.execute()
        values = {name.decode(): float(value) for name, value in raw.items()}
        if values:
            values[WORKERS_SEEN] = float(workers)
        return values

    def settle(
        self,
        key: str,
        seconds: float,
        first: bool,
        factor: float,
        window_seconds: float,
        started: float,
    ) -> Settled:
        """Apply the settle rule to ``key``'s state, optimistically (WATCH, MULTI/EXEC)."""
        name = f"{self.prefix}state:{key}"
        ttl = max(1, math.ceil(state_ttl(window_seconds) * 1000))
        watch_error = self._redis.exceptions.WatchError
        with self._client_for_process().pipeline() as pipe:
            for _ in range(SETTLE_TRIES):
                try:
                    pipe.watch(name)  # type: ignore[no-untyped-call]
                    state = _state(pipe.hgetall(name))
                    new, settled = settle_state(state, seconds, first, factor, started)
                    pipe.multi()
                    pipe.hset(name, mapping={k: repr(v) for k, v in new._asdict().items()})
                    pipe.pexpire(name, ttl)
                    pipe.execute()
                    return settled
                except watch_error:
                    continue
        raise RuntimeError(f"the state of {key!r} changed {SETTLE_TRIES} times while settling")

    def key_states(self) -> dict[str, KeyState]:
        start = f"{self.prefix}state:"
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", start) + "*"
        client = self._client_for_process()
        names = [n.decode() for n in client.scan_iter(match=pattern, count=500)][:MAX_STATES]
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        states = {}
        for name, raw in zip(names, pipe.execute(), strict=True):
            state = _state(raw)
            if state is not None:
                states[name[len(start) :]] = state
        return states

    def add_latencies(self, app_key: str, slot: int, histograms: Histograms) -> bool:
        pipe = self._client_for_process().pipeline(transaction=False)
        for endpoint, counts in histograms.items():
            name = self._latency_key(app_key, endpoint, slot)
            for index, count in counts.items():
                pipe.hincrby(name, str(index), int(count))
            pipe.expire(name, LATENCY_TTL)
        pipe.execute()
        return True

    def latencies(self, app_key: str, endpoint: str, slots: Iterable[int]) -> dict[int, int]:
        pipe = self._client_for_process().pipeline(transaction=False)
        for slot in slots:
            pipe.hgetall(self._latency_key(app_key, endpoint, slot))
        out: dict[int, int] = {}
        for raw in pipe.execute():
            for index, count in raw.items():
                out[int(index)] = out.get(int(index), 0) + int(count)
        return out

    def _latency_key(self, app_key: str, endpoint: str, slot: int) -> str:
        return f"{self.prefix}latency:{app_key}:{slot}:{endpoint}"

    def _counter_keys(self, app_key: str) -> tuple[str, str, str]:
        total = f"{self.prefix}counters:{app_key}"
        return total, f"{total}:senders", f"{total}:seen"

    def prepare(self) -> None:
        """Check now (at start-up) that Redis answers; raises if it does not.

        The connection is closed again, so forked workers start without one.
        """
        client = self._client_for_process()
        try:
            client.ping()
        finally:
            client.connection_pool.disconnect()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None and self._pid == os.getpid():
                client.connection_pool.disconnect()


#: States read at most by ``key_states`` (``flask perfalert stats``).
MAX_STATES = 10_000


def _state(raw: Mapping[Any, Any]) -> KeyState | None:
    if not raw:
        return None
    fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    try:
        return KeyState(
            float(fields["worst"]),
            int(float(fields["since"])),
            int(float(fields["suppressed"])),
            int(float(fields["alerts"])),
            float(fields.get("alerted_end", 0.0)),  # absent in states of earlier versions
        )
    except (KeyError, ValueError):
        return None  # not written by us: start afresh
