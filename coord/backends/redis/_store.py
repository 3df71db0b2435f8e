"""``redis://host:port[/db]`` (``rediss://`` for TLS): the Store on one Redis primary.

Layout. Everything lives under one hash tag, ``{coord}`` by default (option
``namespace``), so a store fits in one Redis Cluster slot:

- ``{ns}:kv``      hash, key -> ``"revision:created:lease:" + value``
- ``{ns}:idx``     sorted set of every key (score 0), read with ZRANGEBYLEX for ``list``
- ``{ns}:ttl``     sorted set, key -> deadline (server ms) of ``put(ttl=)`` keys
- ``{ns}:leases``  sorted set, lease id -> deadline (server ms)
- ``{ns}:lkeys``   sorted set of ``"<lease>/<key>"`` (score 0): the keys of each lease
- ``{ns}:rev``     the global counter: every change takes the next revision
- ``{ns}:log``     stream, one entry ``<revision>-0`` per change, trimmed to about
  ``history`` entries (default 100 000): what watches read and replay
- ``{ns}:leaseid`` the counter of lease ids; ``{ns}:req:<id>`` the replies of
  recent mutations (see *Retries*)

Every operation is one Lua script (EVALSHA), so it is atomic, and every
script first deletes the leases and ttl keys whose deadline has passed, with
their delete events. Deadlines are on the server's clock (``TIME``), so
client clocks do not matter. A Store with open watches also runs that reaper
every 0.5 s. A dead lease's keys therefore vanish at its deadline for anyone
reading them through coord, and a watcher sees their delete events within
0.5 s of it: inside the contract's ttl + 1 s.

Watches. One thread and one connection per Store read the change log with
XREAD BLOCK for all of its watches; each watch remembers the next revision
it needs. A watch opens with a script that reads the state and the current
revision atomically. If the revisions a watch needs were trimmed, it
re-syncs by emitting the current state. After a lost connection the reader
checks the log still holds what it last read; a server that came back
without its last writes (AOF ``everysec`` loses up to one second) makes
every watch re-sync instead of skipping the revisions now used again.

Retries. Connection errors and timeouts are retried (tenacity) within
``timeout``, then ``StoreUnavailable``. A mutation whose reply was lost may
have been applied, so each carries a random request id and its script stores
its reply under ``{ns}:req:<id>`` for ``timeout`` + 10 s: a retry returns
that reply instead of applying the change twice, so a create-only write that
succeeded is never reported as ``KeyExists``. A mutation that still ends in
``StoreUnavailable`` has an unknown outcome: it may have been applied, or be
applied later by a server that was frozen rather than gone.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from ..._clock import Clock
from ..._errors import (
    ConfigurationError,
    CoordError,
    LeaseExpired,
    StoreUnavailable,
)
from ..._lease import Lease
from ..._store import Store, check_revision, matches
from ..._types import Event, KVPair
from ..._url import Location
from ..._watch import WatchFeed

__all__ = ["RedisStore"]

log = logging.getLogger("coord.redis")

T = TypeVar("T")

#: How often a Store with open watches deletes expired leases and ttl keys.
REAP_INTERVAL = 0.5
#: Stream entries read per XREAD / XRANGE.
BATCH = 1000

# Failures after which the same request may succeed: retried within the timeout.
_TRANSIENT = (ConnectionError, TimeoutError, ReadOnlyError, TryAgainError)
_FATAL = (AuthenticationError, AuthorizationError, NoPermissionError)

_KEYS = ("kv", "idx", "ttl", "leases", "lkeys", "rev", "log", "leaseid")

# Shared by every script. ARGV[1] is the stream length, ARGV[2] how long (ms)
# a mutation's reply is kept for retries; KEYS[9], when given, holds it.
_PRELUDE = """
local KV, IDX, TTL, LEASES, LKEYS, REV, LOG, LEASEID = unpack(KEYS, 1, 8)
local clock = redis.call('TIME')
local NOW = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000

local function int(n) return string.format('%d', n) end
local function fail(code) error({err = code}) end

-- a record is "revision:created:lease:value"
local function fields(rec)
  local a = string.find(rec, ':', 1, true)
  local b = string.find(rec, ':', a + 1, true)
  local c = string.find(rec, ':', b + 1, true)
  return tonumber(string.sub(rec, 1, a - 1)), string.sub(rec, a + 1, b - 1), string.sub(rec, b + 1, c - 1)
end

-- every change takes the next revision and appends one entry to the log
local function append(kind, key, value)
  local rev = int(redis.call('INCR', REV))
  local entry = {'XADD', LOG, 'MAXLEN', '~', ARGV[1], rev .. '-0', 't', kind, 'k', key, 'v', value}
  redis.call(unpack(entry, 1, value and 12 or 10))
  return rev
end

local function remove(key)
  local rec = redis.call('HGET', KV, key)
  if not rec then return false end
  local _, _, lease = fields(rec)
  redis.call('HDEL', KV, key)
  redis.call('ZREM', IDX, key)
  redis.call('ZREM', TTL, key)
  if lease ~= '' then redis.call('ZREM', LKEYS, lease .. '/' .. key) end
  append('d', key)
  return true
end

-- a conditional write finding rec: expected is '' (any), 'new' (absent) or a revision
local function check(rec, expected)
  if expected == '' then return end
  local rev = rec and fields(rec)
  if expected == 'new' and not rec or rec and rev == tonumber(expected) then return end
  fail('REVISION ' .. (rec and int(rev) or '-') .. ' ' .. expected)
end

-- the ZRANGEBYLEX bounds of the keys strictly under prefix ('0' follows '/')
local function under(prefix)
  if prefix == '' then return '-', '+' end
  return '[' .. prefix .. '/', '(' .. prefix .. '0'
end

local function drop_lease(lease)
  redis.call('ZREM', LEASES, lease)
  for _, member in ipairs(redis.call('ZRANGEBYLEX', LKEYS, under(lease))) do
    remove(string.sub(member, #lease + 2))
  end
end

-- reply from an earlier attempt of the same request, if it got through
local function once(body)
  local done = redis.call('GET', KEYS[9])
  if done then return done end
  local reply = body()
  redis.call('SET', KEYS[9], reply, 'PX', ARGV[2])
  return reply
end

for _, lease in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', NOW)) do drop_lease(lease) end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', TTL, '-inf', NOW)) do remove(key) end
"""

_SCRIPTS = {
    # ARGV: key, value, expected ('' any, 'new' absent, else a revision), ttl ms or '', lease or ''
    "put": """
return once(function()
  local key, value, expected, ttl, lease = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  local rec = redis.call('HGET', KV, key)
  local rev, created, old_lease
  if rec then rev, created, old_lease = fields(rec) end
  check(rec, expected)
  if lease ~= '' and not redis.call('ZSCORE', LEASES, lease) then fail('LEASE') end
  local new = append('p', key, value)
  created = created or new
  redis.call('HSET', KV, key, new .. ':' .. created .. ':' .. lease .. ':' .. value)
  redis.call('ZADD', IDX, 0, key)
  if ttl ~= '' then redis.call('ZADD', TTL, NOW + tonumber(ttl), key) else redis.call('ZREM', TTL, key) end
  if old_lease and old_lease ~= '' and old_lease ~= lease then redis.call('ZREM', LKEYS, old_lease .. '/' .. key) end
  if lease ~= '' then redis.call('ZADD', LKEYS, 0, lease .. '/' .. key) end
  return new .. ':' .. created .. ':' .. lease
end)
""",
    # ARGV: key, expected revision or '' -> '1' deleted, '0' absent
    "delete": """
return once(function()
  local rec = redis.call('HGET', KV, ARGV[3])
  check(rec, ARGV[4])
  if not rec then return '0' end
  remove(ARGV[3])
  return '1'
end)
""",
    # ARGV: prefix
    "delete_tree": """
return once(function()
  local keys = redis.call('ZRANGEBYLEX', IDX, under(ARGV[3]))
  for _, key in ipairs(keys) do remove(key) end
  return int(#keys)
end)
""",
    # ARGV: key or prefix, 'key' | 'tree' | 'none' -> {revision, key, record, key, record, ...}
    "read": """
local keys = {}
if ARGV[4] == 'tree' then keys = redis.call('ZRANGEBYLEX', IDX, under(ARGV[3]))
elseif ARGV[4] == 'key' then keys = {ARGV[3]} end
local reply = {redis.call('GET', REV) or '0'}
for _, key in ipairs(keys) do
  local rec = redis.call('HGET', KV, key)
  if rec then reply[#reply + 1] = key; reply[#reply + 1] = rec end
end
return reply
""",
    # ARGV: ttl ms -> lease id
    "grant": """
return once(function()
  local id = int(redis.call('INCR', LEASEID))
  redis.call('ZADD', LEASES, NOW + tonumber(ARGV[3]), id)
  return id
end)
""",
    # ARGV: lease, ttl ms -> 1 renewed, 0 gone (expired leases were reaped above)
    "keepalive": """
if not redis.call('ZSCORE', LEASES, ARGV[3]) then return 0 end
redis.call('ZADD', LEASES, 'XX', NOW + tonumber(ARGV[4]), ARGV[3])
return 1
""",
    # ARGV: lease
    "revoke": "drop_lease(ARGV[3])\nreturn 1\n",
    "reap": "return 1\n",
    # ARGV: revision -> {current revision, id of the oldest entry or '', type and key of the entry at revision}
    "position": """
local first = redis.call('XRANGE', LOG, '-', '+', 'COUNT', 1)
local at = redis.call('XRANGE', LOG, ARGV[3] .. '-0', ARGV[3] .. '-0')
local reply = {redis.call('GET', REV) or '0', first[1] and first[1][1] or ''}
if at[1] then reply[3] = at[1][2][2]; reply[4] = at[1][2][4] end
return reply
""",
}


def _conflict(rest: str) -> CoordError:
    """The error of a conditional write that failed: "<actual revision or -> <expected revision or new>"."""
    actual, expected = rest.split()[:2]  # Redis appends where in the script the error was raised
    try:
        check_revision(None if actual == "-" else int(actual), None if expected == "new" else int(expected))
    except CoordError as exc:
        return exc
    return CoordError(f"redis reported a conflict that is none: {rest}")


_ERRORS: dict[str, Callable[[str], CoordError]] = {
    "REVISION": _conflict,
    "LEASE": lambda _: LeaseExpired("the lease has expired"),
}


def _parse_db(location: Location) -> int:
    path = location.path.strip("/")
    try:
        return int(path) if path else 0
    except ValueError:
        raise ConfigurationError(f"the path of a redis URL is a database number, not {path!r}") from None


def _ms(seconds: float) -> str:
    return repr(seconds * 1000.0)


def _pair(key: str, value: bytes, meta: bytes) -> KVPair:
    revision, created, lease = meta.split(b":", 2)
    return KVPair(key, value, int(revision), int(created), int(lease) if lease else None)


def _record(key: bytes, record: bytes) -> KVPair:
    revision, created, lease, value = record.split(b":", 3)
    return KVPair(key.decode(), value, int(revision), int(created), int(lease) if lease else None)


class RedisStore(Store):
    """The Store on one Redis 7 primary; see the module docstring.

    Options: ``namespace`` (default ``coord``) names the hash tag of every key;
    ``history`` (default 100 000) is how many changes watches can replay;
    ``tls_ca`` is a CA file to verify a ``rediss://`` server with. A user and
    password may be given in the URL (``redis://user:pass@host:port/db``).
    """

    backend = "redis"
    OPTIONS: ClassVar[Mapping[str, Callable[[str], object]]] = {"namespace": str, "history": int, "tls_ca": str}

    def __init__(
        self,
        location: Location,
        *,
        timeout: float = 5.0,
        prefix: str = "",
        clock: Clock | None = None,
        namespace: str = "coord",
        history: int = 100_000,
        tls_ca: str | None = None,
    ) -> None:
        super().__init__(prefix=prefix, clock=clock)
        if len(location.hosts) > 1:
            raise ConfigurationError("redis:// takes one host: coord needs the primary, not a list of nodes")
        if history < 1:
            raise ConfigurationError("history must be at least 1")
        if not namespace or any(ch in namespace for ch in "{}"):
            raise ConfigurationError(f"namespace must be non-empty and without braces, not {namespace!r}")
        host, port = location.endpoints(6379)[0]
        parts = urlsplit(location.url)
        self._where = f"{location.scheme}://{host}:{port}/{_parse_db(location)}"
        self._timeout = float(timeout)
        self._options: dict[str, Any] = {
            "host": host,
            "port": port,
            "db": _parse_db(location),
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "ssl": location.scheme == "rediss",
            "ssl_ca_certs": tls_ca,
            "socket_connect_timeout": min(self._timeout, 2.0),
            "retry": Retry(NoBackoff(), 0),  # coord retries, at one boundary (_call)
        }
        # Half the timeout per attempt, so a hung server still fails within about ``timeout``.
        self._redis = redis.Redis(**self._options, socket_timeout=max(self._timeout / 2, 0.1))
        self._keys = [f"{{{namespace}}}:{name}" for name in _KEYS]
        self._req = f"{{{namespace}}}:req:"
        self._head = [str(history), str(int((self._timeout + 10) * 1000))]
        self._scripts = {name: self._redis.register_script(_PRELUDE + body) for name, body in _SCRIPTS.items()}
        self._feed = _Feed(self, self._options)
        try:
            self._call(self._load_scripts)
        except CoordError:
            self._redis.close()
            raise

    def describe(self) -> str:
        return self._where

    def _load_scripts(self) -> None:
        """Register every script in one round trip (EVALSHA reloads them after a server restart)."""
        pipe = self._redis.pipeline(transaction=False)
        for script in self._scripts.values():
            pipe.script_load(script.script)
        pipe.execute()

    # -- the one boundary with redis-py -------------------------------------

    def _call(self, fn: Callable[[], T], client: redis.Redis | None = None) -> T:
        """Run ``fn`` and translate every redis-py error.

        Calls on the Store's pool (``client`` None) retry transient failures
        within the timeout; the watch thread passes its own connection and
        does its own retrying.
        """
        started = time.monotonic()
        try:
            try:
                return fn()  # the common case, without the cost of setting up tenacity
            except _TRANSIENT as exc:
                if client is not None or isinstance(exc, _FATAL):
                    raise
            for attempt in Retrying(
                stop=stop_after_delay(self._timeout - (time.monotonic() - started)),
                wait=wait_exponential(multiplier=0.02, max=0.5),
                retry=retry_if_exception(lambda exc: isinstance(exc, _TRANSIENT) and not isinstance(exc, _FATAL)),
                reraise=True,
            ):
                with attempt:
                    return fn()
        except RedisError as exc:
            raise _translate(exc, self._where) from exc
        except (OSError, ValueError) as exc:  # redis-py's socket code, e.g. a connection closed under it
            raise StoreUnavailable(f"redis connection failed: {exc}", backend="redis") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, name: str, *args: str | bytes, client: redis.Redis | None = None) -> Any:
        """Run one script. A mutation carries a request id, so a retry cannot apply it twice."""
        keys = self._keys
        if name in _MUTATIONS:
            keys = [*keys, self._req + os.urandom(12).hex()]
        script, argv = self._scripts[name], [*self._head, *args]
        return self._call(lambda: script(keys, argv, client=client or self._redis), client)

    def _read(self, target: str, mode: str, client: redis.Redis | None = None) -> tuple[int, list[KVPair]]:
        """The current revision and, read atomically with it, the pairs of a key (mode ``key``),
        of a tree (``tree``) or none (``none``)."""
        reply = self._run("read", target, mode, client=client)
        return int(reply[0]), [_record(reply[i], reply[i + 1]) for i in range(1, len(reply), 2)]

    # -- key/value ---------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        _, pairs = self._read(key, "key")
        return pairs[0] if pairs else None

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        return self._write(key, value, "", ttl, lease)

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        return self._write(key, value, "new" if revision is None else str(revision), ttl, lease)

    def _write(self, key: str, value: bytes, expected: str, ttl: float | None, lease: Lease | None) -> KVPair:
        ttl_ms = "" if ttl is None else _ms(ttl)
        lease_id = "" if lease is None else str(lease.id)
        return _pair(key, value, self._run("put", key, value, expected, ttl_ms, lease_id))

    def _delete(self, key: str) -> bool:
        return bool(self._run("delete", key, "") == b"1")

    def _atomic_delete(self, key: str, revision: int) -> None:
        self._run("delete", key, str(revision))

    def _list(self, prefix: str) -> builtins.list[KVPair]:
        return self._read(prefix, "tree")[1]

    def _delete_tree(self, prefix: str) -> None:
        self._run("delete_tree", prefix)

    # -- leases ----------------------------------------------------------------

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        return int(self._run("grant", _ms(ttl))), ttl

    def _lease_keepalive(self, lease: Lease) -> bool:
        return bool(self._run("keepalive", str(lease.id), _ms(lease.ttl)) == 1)

    def _lease_revoke(self, lease: Lease) -> None:
        self._run("revoke", str(lease.id))

    # -- watches and closing --------------------------------------------------------

    def _watch(self, watch: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        self._feed.add(watch, key, tree, start_revision)

    def _unwatch(self, watch: WatchFeed) -> None:
        self._feed.remove(watch)

    def _close(self) -> None:
        self._feed.close()
        self._redis.close()


_MUTATIONS = frozenset({"put", "delete", "delete_tree", "grant"})


def _translate(exc: RedisError, where: str) -> CoordError:
    if isinstance(exc, ResponseError) and not isinstance(exc, _TRANSIENT):
        code, _, rest = str(exc).partition(" ")
        if code in _ERRORS:
            return _ERRORS[code](rest)
    if isinstance(exc, _FATAL):
        return StoreUnavailable(f"{where} refused coord's credentials: {exc}")
    if isinstance(exc, _TRANSIENT):
        return StoreUnavailable(f"{where} could not be reached: {exc}")
    return StoreUnavailable(f"{where} failed: {exc}")


#: Stream entries as redis-py returns them: (id, fields).
_Entries = list[tuple[bytes, dict[bytes, bytes]]]


@dataclass
class _Sub:
    """What one watch wants: a key or a tree, from revision ``next`` on."""

    key: str
    tree: bool
    next: int


class _Feed:
    """The one thread and connection per Store that read the change log for all its watches.

    ``_pos`` is the last revision the thread dispatched. A watch opened
    behind it is caught up (XRANGE) by its opener under ``_lock``, and the
    thread dispatches under ``_lock`` too, so each watch gets every revision
    once and in order. The thread also runs the reaper every 0.5 s.
    """

    def __init__(self, store: RedisStore, options: dict[str, Any]) -> None:
        self._store = store
        self._lock = threading.Condition()
        self._subs: dict[WatchFeed, _Sub] = {}
        self._pos: int | None = None
        self._last: tuple[bytes, bytes] | None = None  # type and key of the entry at _pos
        self._closed = False
        self._thread: threading.Thread | None = None
        self._client_id: int | None = None
        block = REAP_INTERVAL + max(store._timeout / 2, 0.1)
        # Its own pool of one connection, used by the thread alone (it connects lazily, unlike
        # single_connection_client): CLIENT ID and XREAD therefore share a connection.
        self._conn = redis.Redis(**options, socket_timeout=block, max_connections=1)
        self._log = store._keys[_KEYS.index("log")]

    def add(self, watch: WatchFeed, key: str, tree: bool, start: int | None) -> None:
        revision, pairs = self._store._read(key, "none" if start is not None else "tree" if tree else "key")
        sub = _Sub(key, tree, revision + 1 if start is None else max(start, 1))  # revisions start at 1
        with self._lock:
            if start is None:
                self._emit_state(watch, sub, revision, pairs)
            if self._pos is None:
                self._pos, self._last = revision, None
            self._catch_up(watch, sub, self._pos, None)
            self._subs[watch] = sub
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="coord-redis-watch", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def remove(self, watch: WatchFeed) -> None:
        with self._lock:
            self._subs.pop(watch, None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._subs.clear()
            self._lock.notify_all()
            thread, client_id = self._thread, self._client_id
        if thread is not None:
            if client_id is not None:
                with contextlib.suppress(RedisError):  # wake the blocked XREAD now
                    self._store._redis.client_unblock(client_id)
            thread.join(timeout=REAP_INTERVAL + 1)
        self._conn.close()

    # -- delivery, always under _lock; client None = the Store's pool, with retries ---------

    def _emit_state(self, watch: WatchFeed, sub: _Sub, revision: int, pairs: list[KVPair]) -> None:
        for pair in sorted(pairs, key=lambda p: p.key):
            watch.emit(Event("put", pair.key, pair.value, pair.revision))
        watch.revision = revision
        sub.next = revision + 1

    def _resync(self, watch: WatchFeed, sub: _Sub, client: redis.Redis | None) -> None:
        """The history ``watch`` needs is gone: emit the current state rather than skip."""
        revision, pairs = self._store._read(sub.key, "tree" if sub.tree else "key", client)
        log.info("watch of %r re-synced at revision %d: the change log no longer reaches back", sub.key, revision)
        self._emit_state(watch, sub, revision, pairs)

    def _catch_up(self, watch: WatchFeed, sub: _Sub, upto: int, client: redis.Redis | None) -> None:
        """Deliver revisions ``sub.next`` .. ``upto`` to ``watch``: every one is in the log unless trimmed."""
        conn = client or self._store._redis
        while sub.next <= upto:
            entries = self._store._call(functools.partial(self._xrange, conn, sub.next, upto), client)
            if not entries or _revision(entries[0][0]) != sub.next:
                self._resync(watch, sub, client)
                return
            for entry_id, data in entries:
                self._deliver(watch, sub, _revision(entry_id), data)

    def _deliver(self, watch: WatchFeed, sub: _Sub, revision: int, data: dict[bytes, bytes]) -> None:
        if revision < sub.next:
            return
        sub.next = revision + 1
        key = data[b"k"].decode()
        if matches(key, sub.key, sub.tree):
            put = data[b"t"] == b"p"
            watch.emit(Event("put" if put else "delete", key, data[b"v"] if put else None, revision))

    def _dispatch(self, entries: _Entries) -> None:
        for entry_id, data in entries:
            revision = _revision(entry_id)
            assert self._pos is not None
            if revision > self._pos + 1:  # trimmed before this thread read it
                for watch, sub in self._subs.items():
                    if sub.next < revision:
                        self._resync(watch, sub, self._conn)
            for watch, sub in self._subs.items():
                self._deliver(watch, sub, revision, data)
            self._pos, self._last = revision, (data[b"t"], data[b"k"])

    # -- the thread ----------------------------------------------------------------------

    def _xrange(self, conn: redis.Redis, low: int, high: int) -> _Entries:
        return cast(_Entries, conn.xrange(self._log, f"{low}-0", f"{high}-0", count=BATCH))

    def _xread(self, pos: int | None) -> _Entries:
        reply = cast(Any, self._conn.xread({self._log: f"{pos}-0"}, count=BATCH, block=int(REAP_INTERVAL * 1000)))
        return cast(_Entries, reply[0][1]) if reply else []

    def _loop(self) -> None:
        reaped = 0.0
        failing_since: float | None = None
        while True:
            with self._lock:
                while not self._subs and not self._closed:
                    self._pos = None
                    self._lock.wait()
                if self._closed:
                    return
            try:
                if self._client_id is None:  # (re)connecting
                    self._client_id = self._store._call(self._conn.client_id, self._conn)
                    if failing_since is not None:
                        self._check_position()
                if time.monotonic() - reaped >= REAP_INTERVAL:
                    self._store._run("reap", client=self._conn)
                    reaped = time.monotonic()
                pos = self._pos
                entries = self._store._call(functools.partial(self._xread, pos), self._conn) if pos is not None else []
                with self._lock:
                    if entries and not self._closed and self._pos == pos:
                        self._dispatch(entries)
                failing_since = None
            except CoordError as exc:
                # Unreachable, or a re-sync failed: reconnect and go on from _pos, for up to the timeout.
                self._client_id = None
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self._store._timeout or not isinstance(exc, StoreUnavailable):
                    self._fail_all(exc)
                    failing_since = None
                time.sleep(0.05)
            except Exception as exc:  # a bug: end the watches loudly rather than leave them hanging
                log.exception("the watch reader of %s failed", self._store.describe())
                self._fail_all(CoordError(f"the watch reader failed: {exc!r}"))

    def _check_position(self) -> None:
        """After a reconnect: re-sync every watch if the server lost writes that were delivered."""
        with self._lock:
            if not self._pos:
                return
            reply = self._store._run("position", str(self._pos), client=self._conn)
            current, first = int(reply[0]), _revision(reply[1]) if reply[1] else None
            if len(reply) > 2:
                lost = self._last is not None and (reply[2], reply[3]) != self._last
            else:
                lost = current < self._pos or (first is not None and first <= self._pos)
            if not lost:
                return
            log.warning("%s lost writes its watches saw (restarted?): re-syncing them", self._store.describe())
            for watch, sub in self._subs.items():
                self._resync(watch, sub, self._conn)
            self._pos, self._last = current, None

    def _fail_all(self, error: CoordError) -> None:
        error.backend = error.backend or self._store.backend
        with self._lock:
            watches, self._subs = list(self._subs), {}
        for watch in watches:
            watch.fail(error)


def _revision(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])
