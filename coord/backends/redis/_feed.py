"""The watch feed of a RedisStore: one thread and one connection read the change log for all its watches."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.exceptions import RedisError

from ..._errors import CoordError, StoreUnavailable
from ..._store import matches
from ..._types import Event, KVPair
from ..._watch import WatchFeed
from ._scripts import KEYS

if TYPE_CHECKING:
    from ._store import RedisStore

log = logging.getLogger("coord.redis")

#: How often a Store with open watches deletes expired leases and ttl keys.
REAP_INTERVAL = 0.5
#: Stream entries read per XREAD / XRANGE.
BATCH = 1000

_Entries = list[tuple[bytes, dict[bytes, bytes]]]


@dataclass
class _Sub:
    """What one watch wants: a key or a tree, from revision ``next`` on."""

    key: str
    tree: bool
    next: int


class Feed:
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
        self._log = store._keys[KEYS.index("log")]

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
