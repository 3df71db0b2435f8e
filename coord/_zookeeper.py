"""``zookeeper://host:port[,host:port...][/chroot]`` (alias ``zk://``): the Store on ZooKeeper, through kazoo.

Layout, under the ``root`` option (default ``/coord``) inside the URL's chroot
(which must exist, as for any ZooKeeper client)::

    ROOT/kv/a/b/=c      key "a/b/c": a small header, then the value
    ROOT/kv/a/b/~c      its guard, created and deleted with it (see below)
    ROOT/kv/a/b         bare directories: never keys, so "a/b" and "a/b/c" coexist
    ROOT/log/e<seq>     the change log that feeds watches (the last ``history`` writes)
    ROOT/blob/<id>.<n>  chunks of values over 400 KiB (a value and its log copy must fit
                        one 1 MiB packet); such a value is written in several steps, the
                        key last, and its chunks are never reclaimed (a known gap)

Key segments are percent-escaped where ZooKeeper refuses a character (and for
``%``, ``=`` and ``~``), so a name starting with ``=`` is always a key.

Revisions: ``revision`` = mzxid, ``created`` = czxid, both ZooKeeper
transaction ids, so ``created`` strictly increases in creation order.
Every write is one ZooKeeper multi-op (one round trip) that also appends its
event to the log; the log entry's czxid is the write's zxid. A plain ``put``
is one round trip; a compare-and-swap is two: read the stat, compare its
mzxid, then write conditionally on that stat's version. A key deleted and
re-created to the same version between those two steps (well under a
millisecond here) would pass the version check: that is the one window
where CAS is not exact.

Watches never miss, repeat or reorder: they read the log, not the znodes
(ZooKeeper's one-shot watches coalesce changes). One worker thread per Store
tails the log (a child watch on ROOT/log, re-armed on every read and after
every reconnect) and feeds every watch of the Store. Writers trim the log to
``history`` entries (every 64th write) and record in ROOT/log's data the
zxid up to which entries may be gone. ``start_revision`` replays
from the log while it still holds that revision; older than its history, a
watch re-syncs by emitting the current state.

Leases are ephemeral znodes. A Store opens one extra ZooKeeper session per
distinct lease ttl (its session timeout *is* the ttl; the server's
``minSessionTimeout``, 1 s here, is the minimum), shared by every lease of
that ttl: a lost session loses all of them. A session that expires deletes
its ephemerals without a log entry; the key's guard, left behind, stops
anyone re-creating the key until some client logs that delete (every Store
watching the key does so at once; a writer that hits the guard does too).

ttl keys are persistent znodes whose header carries the ttl; they expire at
the server's mtime + ttl, are invisible to every read once expired, and are
deleted (with a logged delete) by the Store that wrote them and by every
Store watching them, at expiry. A ttl key whose writer and watchers are all
gone stays on the server, invisible, until some write or watch reaps it.
"""

from __future__ import annotations

import builtins
import contextlib
import heapq
import itertools
import logging
import math
import os
import queue
import random
import struct
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    OperationTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
    SessionMovedError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType
from kazoo.retry import KazooRetry
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from ._clock import Clock
from ._connect import Location
from ._errors import (
    ConfigurationError,
    CoordError,
    KeyExists,
    KeyModified,
    KeyNotFound,
    LeaseExpired,
    StoreClosed,
    StoreUnavailable,
)
from ._lease import Lease
from ._store import Store, matches
from ._types import Event, KVPair
from ._watch import Watch

__all__ = ["ZooKeeperStore"]

log = logging.getLogger("coord.zookeeper")
T = TypeVar("T")

_TRANSIENT = (ConnectionLoss, OperationTimeoutError, SessionExpiredError, SessionMovedError, KazooTimeoutError)
# Header: magic, flags, nonce (a retried write recognises itself by it); then ttl ms and lease id if flagged.
_HEAD = struct.Struct(">BBQ")
_MAGIC, _TTL, _LEASE, _BLOB = 0xC0, 1, 2, 4
# A value, its log copy and the rest of a multi-op must fit one packet (jute.maxbuffer, 1 MiB - 1).
_INLINE = 400 * 1024
_CHUNK = 900 * 1024
_TRIM_EVERY = 64
_BATCH = 100  # deletes per multi-op in delete_tree


def _escape(segment: str) -> str:
    out = []
    for ch in segment:
        o = ord(ch)
        if ch in "%=~" or o < 0x20 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xF8FF or o >= 0xFFF0:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


@dataclass(frozen=True)
class _Node:
    value: bytes
    ttl_ms: int = 0
    lease: int | None = None
    nonce: int = 0
    blob: tuple[str, int] | None = None  # (blob id, chunk count) when the value lives in ROOT/blob


def _encode(value: bytes, ttl_ms: int, lease: int | None, nonce: int) -> bytes:
    flags = (_TTL if ttl_ms else 0) | (_LEASE if lease is not None else 0)
    head = _HEAD.pack(_MAGIC, flags, nonce)
    if ttl_ms:
        head += struct.pack(">I", ttl_ms)
    if lease is not None:
        head += struct.pack(">Q", lease)
    return head + value


def _decode(data: bytes) -> _Node:
    if len(data) < _HEAD.size or data[0] != _MAGIC:
        return _Node(data)  # written by something other than coord: all value
    _, flags, nonce = _HEAD.unpack_from(data)
    at, ttl_ms, lease = _HEAD.size, 0, None
    if flags & _TTL:
        (ttl_ms,) = struct.unpack_from(">I", data, at)
        at += 4
    if flags & _LEASE:
        (lease,) = struct.unpack_from(">Q", data, at)
        at += 8
    if flags & _BLOB:
        (count,) = struct.unpack_from(">I", data, at)
        return _Node(b"", ttl_ms, lease, nonce, (data[at + 4 :].decode(), count))
    return _Node(data[at:], ttl_ms, lease, nonce)


def _entry(kind: bytes, key: str, data: bytes = b"") -> bytes:
    raw = key.encode()
    return kind + struct.pack(">I", len(raw)) + raw + data


def _expired(node: _Node, stat: Any) -> bool:
    return bool(node.ttl_ms) and (stat.mtime + node.ttl_ms) / 1000 <= time.time()


class _Failed(Exception):
    """One operation of a multi-op failed: which one, and why."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index, self.error = index, error


@dataclass
class _Try:
    deadline: float
    retried: bool = False

    def wait(self, result: Any) -> Any:
        return result.get(timeout=max(0.001, self.deadline - time.monotonic()))


@dataclass(eq=False)
class _Session:
    """A ZooKeeper session holding the ephemeral keys of every lease of one ttl."""

    client: Any
    granted: float
    connected: threading.Event = field(default_factory=threading.Event)
    leases: dict[int, set[str]] = field(default_factory=dict)  # lease id -> keys written with it
    closing: bool = False


@dataclass(eq=False)
class _Live:
    """A running watch, and (just after its snapshot) what the snapshot already reflects."""

    key: str
    tree: bool
    marks: dict[str, int] | None = None  # key -> mzxid it was read at
    dirs: dict[str, int] = field(default_factory=dict)  # directory -> pzxid it was listed at
    until: int = 0  # log entries after this zxid are all news

    def seen(self, key: str, zxid: int) -> bool:
        if self.marks is None:
            return False
        if zxid > self.until:
            self.marks = None
            return False
        if key in self.marks:
            return zxid <= self.marks[key]
        parent = key
        while parent:
            parent = parent.rpartition("/")[0]
            if parent in self.dirs:
                return zxid <= self.dirs[parent]
        return False


class ZooKeeperStore(Store):
    backend = "zookeeper"
    OPTIONS: ClassVar[dict[str, Callable[[str], object]]] = {"root": str, "session_timeout": float, "history": int}

    def __init__(
        self,
        location: Location,
        *,
        timeout: float = 5.0,
        prefix: str = "",
        clock: Clock | None = None,
        root: str = "/coord",
        session_timeout: float = 10.0,
        history: int = 1000,
    ) -> None:
        super().__init__(prefix=prefix, clock=clock)
        root = "/" + root.strip("/")
        if root == "/" or history < 1:
            raise ConfigurationError("root must not be '/', and history must be at least 1")
        chroot = "/" + location.path.strip("/") if location.path.strip("/") else ""
        self._hosts = ",".join(f"{h}:{p}" for h, p in location.endpoints(2181)) + chroot
        self._url = f"zookeeper://{self._hosts}"
        self._timeout = timeout
        self._history = history
        self._kv, self._log, self._blob = f"{root}/kv", f"{root}/log", f"{root}/blob"
        self._lock = threading.RLock()
        self._writes = itertools.count(1)
        self._sessions: dict[int, _Session] = {}  # requested ttl in ms -> session
        self._lease_of: dict[int, tuple[_Session, int]] = {}  # lease id -> (session, its session id)
        self._lease_objects: dict[int, Lease] = {}
        # The worker thread: tails the log for watches, reaps ttl keys, trims the log.
        self._tasks: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._live: dict[Watch, _Live] = {}
        self._seq: int | None = None  # last log entry delivered
        self._ephemerals: dict[str, str] = {}  # watched lease keys: path -> key
        self._reaps: list[tuple[float, str, int]] = []  # (due, key, mzxid)
        self._retry_tail: float | None = None
        self._client = self._connect(session_timeout)
        self._client.add_listener(self._on_state)
        try:
            self._call(lambda t: [t.wait(self._client.ensure_path_async(p)) for p in (self._kv, self._log, self._blob)])
        except BaseException:
            self._stop_client(self._client)
            raise

    def describe(self) -> str:
        return self._url

    # -- the one boundary between kazoo and coord --------------------------------------

    def _call(self, fn: Callable[[_Try], T], timeout: float | None = None) -> T:
        """Run ``fn``, retrying transient failures within the timeout; translate kazoo's errors."""
        limit = self._timeout if timeout is None else timeout
        attempt = _Try(time.monotonic() + limit)
        try:
            for round_ in Retrying(
                stop=stop_after_delay(limit),
                wait=wait_exponential(multiplier=0.02, max=0.5),
                retry=retry_if_exception_type(_TRANSIENT),
                reraise=True,
            ):
                with round_:
                    try:
                        return fn(attempt)
                    finally:
                        attempt.retried = True
        except _TRANSIENT as exc:
            raise StoreUnavailable(f"ZooKeeper at {self._hosts} did not answer within {limit}s: {exc!r}") from exc
        except ConnectionClosedError as exc:
            raise StoreClosed("the ZooKeeper connection is closed") from exc
        except _Failed as exc:
            raise StoreUnavailable(f"ZooKeeper refused a write: {exc.error!r}") from exc.error
        except KazooException as exc:
            raise StoreUnavailable(f"ZooKeeper refused the request: {exc!r}") from exc
        raise AssertionError("unreachable")

    def _connect(self, ttl: float) -> Any:
        client = KazooClient(
            hosts=self._hosts,
            timeout=ttl,
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0),
            command_retry=None,
            logger=log,
        )
        try:
            client.start(timeout=self._timeout)
        except KazooTimeoutError as exc:
            raise StoreUnavailable(f"cannot reach ZooKeeper at {self._hosts}") from exc
        return client

    @staticmethod
    def _stop_client(client: Any) -> None:
        try:
            client.stop()
            client.close()
        except Exception:  # closing is best effort: the server expires what is left
            log.debug("closing a kazoo client failed", exc_info=True)

    def _commit(self, t: _Try, client: Any, ops: Iterable[tuple[Any, ...]]) -> list[Any]:
        """One multi-op; raise ``_Failed`` naming the operation that failed."""
        tx = client.transaction()
        for op, *args in ops:
            if op == "create":
                tx.create(args[0], args[1], ephemeral=args[2] if len(args) > 2 else False)
            elif op == "log":
                tx.create(f"{self._log}/e", args[0], sequence=True)
            elif op == "set":
                tx.set_data(args[0], args[1], args[2] if len(args) > 2 else -1)
            else:
                tx.delete(args[0], args[1] if len(args) > 1 else -1)
        results: list[Any] = t.wait(tx.commit_async())
        for index, result in enumerate(results):
            if isinstance(result, Exception) and not isinstance(result, (RolledBackError, RuntimeInconsistency)):
                if isinstance(result, _TRANSIENT):
                    raise result
                raise _Failed(index, result)
        if next(self._writes) % _TRIM_EVERY == 0:
            self._submit("trim")
        return results

    # -- paths and values ---------------------------------------------------------------

    def _dir(self, prefix: str) -> str:
        return self._kv + "".join("/" + _escape(s) for s in prefix.split("/") if s)

    def _paths(self, key: str) -> tuple[str, str, str]:
        parent, _, name = key.rpartition("/")
        folder = self._dir(parent)
        return folder, f"{folder}/={_escape(name)}", f"{folder}/~{_escape(name)}"

    def _value(self, t: _Try, node: _Node) -> bytes:
        if node.blob is None:
            return node.value
        blob, count = node.blob
        results = [self._client.get_async(f"{self._blob}/{blob}.{i}") for i in range(count)]
        return b"".join(t.wait(result)[0] for result in results)

    def _pair(self, t: _Try, key: str, data: bytes, stat: Any) -> KVPair | None:
        node = _decode(data)
        if _expired(node, stat):
            return None
        return KVPair(key, self._value(t, node), stat.mzxid, stat.czxid, node.lease)

    def _stage(self, t: _Try, value: bytes) -> bytes:
        """Store a big value in chunks (before the write that points at them); return the pointer."""
        blob = os.urandom(8).hex()
        chunks = [value[i : i + _CHUNK] for i in range(0, len(value), _CHUNK)]
        for i, chunk in enumerate(chunks):
            t.wait(self._client.create_async(f"{self._blob}/{blob}.{i}", chunk))
        return struct.pack(">I", len(chunks)) + blob.encode()

    # -- reads --------------------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        path = self._paths(key)[1]

        def attempt(t: _Try) -> KVPair | None:
            try:
                data, stat = t.wait(self._client.get_async(path))
            except NoNodeError:
                return None
            return self._pair(t, key, data, stat)

        return self._call(attempt)

    def _scan(self, t: _Try, prefix: str) -> tuple[list[tuple[str, str, bytes, Any]], dict[str, int]]:
        """Every key node under ``prefix`` (key, path, data, stat) and each directory's pzxid, a level per round trip."""
        found: list[tuple[str, str, bytes, Any]] = []
        dirs: dict[str, int] = {}
        pending: list[tuple[str, str, Any]] = []
        level = [(prefix, self._dir(prefix))]
        while level:
            listings = [(p, zp, self._client.get_children_async(zp, include_data=True)) for p, zp in level]
            level = []
            for p, zp, result in listings:
                try:
                    names, stat = t.wait(result)
                except NoNodeError:
                    continue
                dirs[p] = stat.pzxid
                for name in names:
                    if name.startswith("="):
                        path = f"{zp}/{name}"
                        pending.append((_join(p, unquote(name[1:])), path, self._client.get_async(path)))
                    elif not name.startswith("~"):
                        level.append((_join(p, unquote(name)), f"{zp}/{name}"))
        for key, path, result in pending:
            try:
                data, stat = t.wait(result)
            except NoNodeError:
                continue
            found.append((key, path, data, stat))
        return found, dirs

    def _list(self, prefix: str) -> builtins.list[KVPair]:
        def attempt(t: _Try) -> builtins.list[KVPair]:
            pairs = (self._pair(t, key, data, stat) for key, _, data, stat in self._scan(t, prefix)[0])
            return [pair for pair in pairs if pair is not None]

        return self._call(attempt)

    # -- writes -------------------------------------------------------------------------

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        return self._write(key, value, ttl, lease, "any")

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        return self._write(key, value, ttl, lease, "absent" if revision is None else revision)

    def _write(self, key: str, value: bytes, ttl: float | None, lease: Lease | None, expect: str | int) -> KVPair:
        folder, path, guard = self._paths(key)
        nonce = random.getrandbits(64)
        ttl_ms = math.ceil(ttl * 1000) if ttl is not None else 0
        session, sid = self._session_of(lease) if lease is not None else (None, 0)
        client = session.client if session is not None else self._client
        if session is not None and lease is not None:
            with self._lock:  # before sending: revoke must find it even if the reply is lost
                session.leases.setdefault(lease.id, set()).add(key)
                self._lease_objects[lease.id] = lease
        blob: list[bytes] = []

        def attempt(t: _Try) -> KVPair:
            if t.retried:
                mine = self._mine(t, key, path, nonce)
                if mine is not None:
                    return mine
            if len(value) > _INLINE and not blob:
                blob.append(self._stage(t, value))
            data = _encode(b"" if blob else value, ttl_ms, None if lease is None else lease.id, nonce)
            if blob:
                data = bytes([data[0], data[1] | _BLOB]) + data[2:] + blob[0]
            put = ("log", _entry(b"P", key, data))
            if expect == "any" and lease is None:  # the common case: overwrite in one round trip
                try:
                    stat = self._commit(t, client, [("set", path, data), put])[0]
                    if stat.ephemeralOwner == 0:
                        return self._written(key, value, stat, stat.czxid, lease, sid, ttl_ms)
                except _Failed as exc:
                    if not isinstance(exc.error, NoNodeError):
                        raise
            for _ in range(100):
                try:
                    old, stat = t.wait(client.get_async(path))
                except NoNodeError:
                    if isinstance(expect, int):
                        raise KeyNotFound("the key is gone") from None
                    try:
                        ops = [("create", path, data, lease is not None), ("create", guard, b""), ("set", guard, b"")]
                        stat = self._commit(t, client, [*ops, put])[2]
                        return self._written(key, value, stat, stat.mzxid, lease, sid, ttl_ms)
                    except _Failed as exc:
                        if isinstance(exc.error, NoNodeError) and exc.index == 0:
                            t.wait(self._client.ensure_path_async(folder))
                        elif isinstance(exc.error, NodeExistsError) and exc.index == 1:
                            self._reap_guard(t, key)  # a lease key whose session expired unlogged
                        elif not isinstance(exc.error, NodeExistsError):
                            raise
                        continue
                node = _decode(old)
                expired = _expired(node, stat)
                if expect == "absent" and not expired:
                    raise KeyExists("the key already exists")
                if isinstance(expect, int) and (expired or stat.mzxid != expect):
                    if expired:
                        raise KeyNotFound("the key is gone")
                    raise KeyModified(f"the key is at revision {stat.mzxid}, not {expect}")
                same_kind = (stat.ephemeralOwner == 0) if lease is None else (stat.ephemeralOwner == sid)
                try:
                    if same_kind and not expired:
                        stat = self._commit(t, client, [("set", path, data, stat.version), put])[0]
                        return self._written(key, value, stat, stat.czxid, lease, sid, ttl_ms)
                    # ephemeral <-> persistent, or another session: the znode is re-created
                    gone = [("log", _entry(b"D", key))] if expired else []
                    ops = [("delete", path, stat.version), ("create", path, data, lease is not None)]
                    stat = self._commit(t, client, [*gone, *ops, ("set", guard, b""), put])[2 + len(gone)]
                    return self._written(key, value, stat, stat.mzxid, lease, sid, ttl_ms)
                except _Failed as exc:
                    if not isinstance(exc.error, (BadVersionError, NoNodeError)):
                        raise
                    if isinstance(expect, int):
                        raise KeyModified("the key changed during the swap") from None
            raise StoreUnavailable("too much contention on the key")

        return self._call(attempt)

    def _written(
        self, key: str, value: bytes, stat: Any, created: int, lease: Lease | None, sid: int, ttl_ms: int
    ) -> KVPair:
        if ttl_ms:
            self._submit("reap", key, stat.mzxid, (stat.mtime + ttl_ms) / 1000)
        if lease is None:
            return KVPair(key, value, stat.mzxid, created, None)
        session = self._lease_of.get(lease.id, (None, 0))[0]
        client_id = session.client.client_id if session is not None else None
        if client_id is None or client_id[0] != sid:  # a new session may have run the write: not this lease's
            self._delete(key)
            raise LeaseExpired(f"lease {lease.id} expired")
        return KVPair(key, value, stat.mzxid, created, lease.id)

    def _mine(self, t: _Try, key: str, path: str, nonce: int) -> KVPair | None:
        """After a lost reply: the key as our write left it, if that write was applied and is still there."""
        try:
            data, stat = t.wait(self._client.get_async(path))
        except NoNodeError:
            return None
        node = _decode(data)
        return KVPair(key, self._value(t, node), stat.mzxid, stat.czxid, node.lease) if node.nonce == nonce else None

    def _delete(self, key: str) -> bool:
        _, path, guard = self._paths(key)
        gone = ("log", _entry(b"D", key))

        def attempt(t: _Try) -> bool:
            try:
                self._commit(t, self._client, [("delete", path), ("delete", guard), gone])
            except _Failed as exc:
                if not isinstance(exc.error, NoNodeError):
                    raise
                if exc.index == 1:  # a key without a guard (not written by coord)
                    self._commit(t, self._client, [("delete", path), gone])
                    return True
                self._reap_guard(t, key)
                return t.retried  # a retry that finds nothing: our first try deleted it
            return True

        return self._call(attempt)

    def _atomic_delete(self, key: str, revision: int) -> None:
        _, path, guard = self._paths(key)

        def attempt(t: _Try) -> None:
            try:
                data, stat = t.wait(self._client.get_async(path))
            except NoNodeError:
                if t.retried:
                    return
                raise KeyNotFound("the key is gone") from None
            if _expired(_decode(data), stat):
                raise KeyNotFound("the key is gone")
            if stat.mzxid != revision:
                raise KeyModified(f"the key is at revision {stat.mzxid}, not {revision}")
            try:
                self._commit(
                    t, self._client, [("delete", path, stat.version), ("delete", guard), ("log", _entry(b"D", key))]
                )
            except _Failed as exc:
                if isinstance(exc.error, BadVersionError):
                    raise KeyModified("the key changed during the delete") from None
                if isinstance(exc.error, NoNodeError):
                    raise KeyNotFound("the key is gone") from None
                raise

        self._call(attempt)

    def _delete_tree(self, prefix: str) -> None:
        def attempt(t: _Try) -> None:
            for _ in range(100):
                found, dirs = self._scan(t, prefix)
                found.sort()
                try:
                    for start in range(0, len(found), _BATCH):
                        ops: list[tuple[Any, ...]] = []
                        for key, path, _, _ in found[start : start + _BATCH]:
                            ops += [("delete", path), ("delete", self._paths(key)[2]), ("log", _entry(b"D", key))]
                        self._commit(t, self._client, ops)
                except _Failed as exc:
                    if isinstance(exc.error, NoNodeError):
                        continue  # someone deleted one meanwhile: look again
                    raise
                # Bare directories, deepest first; one that gained a key meanwhile stays.
                for folder in sorted(dirs, key=lambda d: (-d.count("/"), d)):
                    if folder.startswith(prefix):
                        with contextlib.suppress(NotEmptyError, NoNodeError):
                            t.wait(self._client.delete_async(self._dir(folder)))
                return

        self._call(attempt)

    def _reap_guard(self, t: _Try, key: str) -> bool:
        """Log the delete of a lease key its expired session removed. Exactly once: it takes the guard with it."""
        _, path, guard = self._paths(key)
        try:  # creating the key proves it absent; the guard keeps anyone from re-creating it first
            self._commit(
                t,
                self._client,
                [("create", path, b""), ("delete", path), ("delete", guard), ("log", _entry(b"D", key))],
            )
        except _Failed as exc:
            if isinstance(exc.error, (NodeExistsError, NoNodeError)):
                return False
            raise
        return True

    def _reap(self, key: str, mzxid: int) -> None:
        """Delete a ttl key at expiry, unless it was written since."""
        _, path, guard = self._paths(key)

        def attempt(t: _Try) -> None:
            try:
                data, stat = t.wait(self._client.get_async(path))
            except NoNodeError:
                return
            if stat.mzxid != mzxid or not _expired(_decode(data), stat):
                return
            try:
                self._commit(
                    t, self._client, [("delete", path, stat.version), ("delete", guard), ("log", _entry(b"D", key))]
                )
            except _Failed as exc:
                if not isinstance(exc.error, (BadVersionError, NoNodeError)):
                    raise

        self._call(attempt)

    # -- leases -------------------------------------------------------------------------

    def _session_of(self, lease: Lease) -> tuple[_Session, int]:
        with self._lock:
            entry = self._lease_of.get(lease.id)
        if entry is None or entry[0].client.client_id is None or entry[0].client.client_id[0] != entry[1]:
            raise LeaseExpired(f"lease {lease.id} expired")
        return entry

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        ms = math.ceil(ttl * 1000)
        with self._lock:
            session = self._sessions.get(ms)
            if session is None:
                session = self._open_session(ttl)
                self._sessions[ms] = session
        if not session.connected.wait(self._timeout) or session.client.client_id is None:
            raise StoreUnavailable(f"cannot reach ZooKeeper at {self._hosts}")
        lease_id = random.getrandbits(63) or 1
        with self._lock:
            session.leases[lease_id] = set()
            self._lease_of[lease_id] = (session, session.client.client_id[0])
        return lease_id, session.granted

    def _open_session(self, ttl: float) -> _Session:
        session = _Session(None, ttl)
        client = KazooClient(
            hosts=self._hosts,
            timeout=ttl,
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0),
            command_retry=None,
            logger=log,
        )
        connect = client._connection._connect

        def granted(*args: Any) -> Any:  # kazoo keeps the negotiated timeout to itself: read_timeout = 2/3 of it
            timeouts = connect(*args)
            session.granted = round(timeouts[0] * 1.5) / 1000
            return timeouts

        client._connection._connect = granted
        session.client = client
        client.add_listener(lambda state: self._on_session_state(session, state))
        try:
            client.start(timeout=self._timeout)
        except KazooTimeoutError as exc:
            raise StoreUnavailable(f"cannot reach ZooKeeper at {self._hosts}") from exc
        session.connected.set()
        return session

    def _on_session_state(self, session: _Session, state: str) -> None:
        if state == KazooState.CONNECTED:
            session.connected.set()
            return
        session.connected.clear()
        if state == KazooState.LOST and not session.closing:
            self._submit("lost", session)

    def _lease_keepalive(self, lease: Lease) -> bool:
        with self._lock:
            entry = self._lease_of.get(lease.id)
            self._lease_objects[lease.id] = lease
        if entry is None:
            return False
        session, sid = entry

        def ping(t: _Try) -> bool:  # any request renews the session, on the server's clock
            if session.client.client_id is None or session.client.client_id[0] != sid:
                return False
            t.wait(session.client.exists_async(self._kv))
            return bool(session.client.client_id and session.client.client_id[0] == sid)

        return self._call(ping, timeout=max(0.2, lease.ttl / 3))

    def _lease_revoke(self, lease: Lease) -> None:
        with self._lock:
            entry = self._lease_of.pop(lease.id, None)
        if entry is None:
            return
        session, sid = entry
        with self._lock:
            keys = session.leases.pop(lease.id, set())
            self._lease_objects.pop(lease.id, None)

        def attempt(t: _Try) -> None:
            for key in sorted(keys):
                _, path, guard = self._paths(key)
                try:
                    data, stat = t.wait(self._client.get_async(path))
                except NoNodeError:
                    self._reap_guard(t, key)
                    continue
                if stat.ephemeralOwner == sid and _decode(data).lease == lease.id:
                    try:
                        self._commit(
                            t,
                            self._client,
                            [("delete", path, stat.version), ("delete", guard), ("log", _entry(b"D", key))],
                        )
                    except _Failed as exc:
                        if not isinstance(exc.error, (BadVersionError, NoNodeError)):
                            raise

        try:
            self._call(attempt)
        finally:
            with self._lock:
                idle = not session.leases
                if idle:
                    self._sessions = {ms: s for ms, s in self._sessions.items() if s is not session}
            if idle:
                session.closing = True
                self._stop_client(session.client)

    # -- watches: the worker thread tails the log -----------------------------------

    def _watch(self, watch: Watch, key: str, tree: bool, start_revision: int | None) -> None:
        done: Future[None] = Future()
        self._submit("watch", watch, key, tree, start_revision, done)
        try:
            done.result(timeout=self._timeout * 4)
        except FutureTimeout as exc:
            raise StoreUnavailable("the watch did not start in time") from exc

    def _unwatch(self, watch: Watch) -> None:
        with self._lock:
            self._live.pop(watch, None)

    def _submit(self, *task: Any) -> None:
        with self._lock:
            if self._worker is None and not self._closed:
                self._worker = threading.Thread(target=self._work, name="coord-zookeeper", daemon=True)
                self._worker.start()
        self._tasks.put(task)

    def _on_state(self, state: str) -> None:
        if state == KazooState.CONNECTED and self._worker is not None:
            self._submit("connected")  # kazoo forgot every watch on the way: re-arm them

    def _on_event(self, event: Any) -> None:
        if event.type == EventType.NONE or event.path is None:
            return
        if event.path == self._log:
            self._submit("log")
        else:
            self._submit("key", event.path)

    def _work(self) -> None:
        while not self._closed:
            now = time.monotonic()
            due = min([now + 1.0, *(r[0] for r in self._reaps[:1]), *([self._retry_tail] if self._retry_tail else [])])
            try:
                task = self._tasks.get(timeout=max(0.0, due - now))
            except queue.Empty:
                task = ("tick",)
            try:
                self._run(task)
            except CoordError as exc:
                log.debug("zookeeper worker: %s failed: %s", task[0], exc)
                if task[0] == "watch":
                    task[-1].set_exception(exc)
                elif task[0] in ("log", "connected", "key"):
                    self._retry_tail = time.monotonic() + 0.5
            except Exception as exc:  # never let the worker die
                log.exception("zookeeper worker: %s failed", task[0])
                if task[0] == "watch":
                    task[-1].set_exception(exc)

    def _run(self, task: tuple[Any, ...]) -> None:
        kind = task[0]
        now = time.monotonic()
        while self._reaps and self._reaps[0][0] <= now:
            _, key, mzxid = heapq.heappop(self._reaps)
            self._reap(key, mzxid)
        if self._retry_tail is not None and self._retry_tail <= now:
            self._retry_tail = None
            self._run(("connected",))
        if kind in ("log", "connected") and not self._live:
            self._seq = None  # nothing to feed: stop re-arming the log's watch; the next watch starts afresh
        elif kind == "log":
            self._tail()
        elif kind == "connected":
            self._tail()
            for path, key in list(self._ephemerals.items()):
                self._check_ephemeral(path, key)
        elif kind == "key":
            watched = self._ephemerals.get(task[1])
            if watched is not None:
                self._check_ephemeral(task[1], watched)
        elif kind == "watch":
            _, watch, key, tree, start, done = task
            self._start(watch, key, tree, start)
            done.set_result(None)
        elif kind == "trim":
            self._call(self._trim)
        elif kind == "lost":
            with self._lock:
                leases = [self._lease_objects.get(lease_id) for lease_id in task[1].leases]
            for lease in leases:
                if lease is not None:
                    lease._mark_lost()
        elif kind == "reap":
            self._schedule(task[1], task[2], task[3])

    def _schedule(self, key: str, mzxid: int, expires: float) -> None:
        """Reap a ttl key at ``expires`` (server wall clock, seconds)."""
        due = time.monotonic() + max(0.0, expires - time.time()) + 0.01
        heapq.heappush(self._reaps, (due, key, mzxid))

    def _check_ephemeral(self, path: str, key: str) -> None:
        def attempt(t: _Try) -> None:
            if t.wait(self._client.exists_async(path, watch=self._on_event)) is None:
                self._ephemerals.pop(path, None)
                self._reap_guard(t, key)

        self._call(attempt)

    def _track(self, key: str, node: _Node, stat: Any) -> None:
        """What a watched put asks of this Store: watch a lease key's znode, reap a ttl key at expiry."""
        if stat.ephemeralOwner or node.lease is not None:
            path = self._paths(key)[1]
            if path not in self._ephemerals:
                self._ephemerals[path] = key
                self._check_ephemeral(path, key)
        if node.ttl_ms:
            self._schedule(key, stat.mzxid, (stat.mtime + node.ttl_ms) / 1000)

    def _tail(self) -> None:
        """Deliver the log entries written since the last call, in order."""

        def attempt(t: _Try) -> None:
            names = t.wait(self._client.get_children_async(self._log, watch=self._on_event))
            seqs = sorted(int(name[1:]) for name in names if name.startswith("e") and name[1:].isdigit())
            if self._seq is None:
                self._seq = seqs[-1] if seqs else -1
                return
            fresh = [seq for seq in seqs if seq > self._seq]
            if not fresh:
                return
            lost = self._seq >= 0 and self._seq not in seqs and seqs[0] > self._seq
            results = [(seq, self._client.get_async(f"{self._log}/e{seq:010d}")) for seq in fresh]
            for seq, result in results:
                try:
                    data, stat = t.wait(result)
                except NoNodeError:
                    lost = True
                    break
                if not lost:
                    self._deliver(t, data, stat, self._live_watches())
                self._seq = seq
            if lost:  # trimmed before we read it: re-sync every watch from the current state
                self._seq = seqs[-1]
                for watch, live in self._live_watches():
                    self._snapshot(t, watch, live)

        self._call(attempt)

    def _live_watches(self) -> list[tuple[Watch, _Live]]:
        with self._lock:
            return list(self._live.items())

    def _deliver(self, t: _Try, data: bytes, stat: Any, watches: list[tuple[Watch, _Live]]) -> None:
        kind, (size,) = data[:1], struct.unpack_from(">I", data, 1)
        key = data[5 : 5 + size].decode()
        node = _decode(data[5 + size :]) if kind == b"P" else None
        event: Event | None = None
        for watch, live in watches:
            if not matches(key, live.key, live.tree) or live.seen(key, stat.czxid):
                continue
            if event is None:
                if node is None:
                    event = Event("delete", key, None, stat.czxid)
                else:
                    try:
                        event = Event("put", key, self._value(t, node), stat.czxid)
                    except NoNodeError:  # its chunks are gone: overwritten long ago
                        continue
            watch._emit(event)
        if event is not None and node is not None:
            self._track(key, node, stat)

    def _start(self, watch: Watch, key: str, tree: bool, start: int | None) -> None:
        self._tail()  # so the new watch starts from the log's current end
        live = _Live(key, tree)

        def attempt(t: _Try) -> None:
            if start is not None:
                marker = t.wait(self._client.get_async(self._log))[0]
                if start > int(marker or b"0"):
                    self._replay(t, watch, live, start)
                    return
            self._snapshot(t, watch, live)

        self._call(attempt)
        with self._lock:
            self._live[watch] = live

    def _replay(self, t: _Try, watch: Watch, live: _Live, start: int) -> None:
        names = t.wait(self._client.get_children_async(self._log))
        seqs = sorted(int(n[1:]) for n in names if n.startswith("e") and n[1:].isdigit())
        seqs = [seq for seq in seqs if self._seq is not None and seq <= self._seq]
        stats = [(seq, self._client.exists_async(f"{self._log}/e{seq:010d}")) for seq in seqs]
        wanted = [seq for seq, result in stats if (stat := t.wait(result)) is not None and stat.czxid >= start]
        entries = [self._client.get_async(f"{self._log}/e{seq:010d}") for seq in wanted]
        for result in entries:
            try:
                data, stat = t.wait(result)
            except NoNodeError:  # trimmed meanwhile: re-sync from the current state
                self._snapshot(t, watch, live)
                return
            self._deliver(t, data, stat, [(watch, live)])
            watch.revision = max(watch.revision, stat.czxid)

    def _snapshot(self, t: _Try, watch: Watch, live: _Live) -> None:
        """Emit the current state, and remember what it reflects so the log does not repeat it."""
        key = live.key
        parts = key.split("/")
        # The directories above: where a key absent from the snapshot would have been listed.
        chain = [(a, self._client.exists_async(self._dir(a))) for a in ("/".join(parts[:i]) for i in range(len(parts)))]
        if live.tree:
            found, dirs = self._scan(t, key)
        else:
            dirs, found = {}, []
            path = self._paths(key)[1]
            try:
                data, stat = t.wait(self._client.get_async(path))
                found.append((key, path, data, stat))
            except NoNodeError:
                pass
        for a, result in chain:
            stat = t.wait(result)
            if stat is not None:
                dirs.setdefault(a, stat.pzxid)
        live.marks = {k: stat.mzxid for k, _, _, stat in found}
        live.dirs = dirs
        live.until = self._client.last_zxid
        for k, _, data, stat in sorted(found, key=lambda f: f[0]):
            node = _decode(data)
            if not _expired(node, stat):
                watch._emit(Event("put", k, self._value(t, node), stat.mzxid))
            self._track(k, node, stat)
        watch.revision = max(watch.revision, live.until)

    def _trim(self, t: _Try) -> None:
        """Keep the newest ``history`` log entries; record the zxid up to which older ones may be gone."""
        names = t.wait(self._client.get_children_async(self._log))
        seqs = sorted(int(n[1:]) for n in names if n.startswith("e") and n[1:].isdigit())
        victims = seqs[: max(0, len(seqs) - self._history)]
        if not victims:
            return
        last = t.wait(self._client.exists_async(f"{self._log}/e{victims[-1]:010d}"))
        if last is None:
            return
        marker, stat = t.wait(self._client.get_async(self._log))
        if last.czxid > int(marker or b"0"):
            try:  # before deleting anything, so a replay never trusts a log that lost entries
                t.wait(self._client.set_async(self._log, str(last.czxid).encode(), stat.version))
            except BadVersionError:
                return  # another trimmer is at it
        for result in [self._client.delete_async(f"{self._log}/e{seq:010d}") for seq in victims]:
            with contextlib.suppress(NoNodeError):
                t.wait(result)

    def _close(self) -> None:
        self._tasks.put(("tick",))
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.closing = True
            self._stop_client(session.client)
        self._stop_client(self._client)
