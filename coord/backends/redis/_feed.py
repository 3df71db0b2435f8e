"""The watch feed of a RedisStore: one thread and one connection read the change log for all its watches."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ..._errors import CoordError, StoreUnavailable
from ..._store import matches
from ..._types import Event, KVPair
from ..._watch import WatchFeed

if TYPE_CHECKING:
    from ..._clock import Timer
    from ._store import RedisStore
    from ._wire import Connection

log = logging.getLogger("coord.redis")

#: How often the reader asks the server for its earliest lease or ttl deadline (and deletes what is
#: due); a timer then reaps at that deadline itself.
REAP_INTERVAL = 0.5
#: Stream entries read per XREAD / XRANGE.
BATCH = 1000
#: One reap in this many also sweeps a few registrations of Stores that died (``_scripts.sweep``).
SWEEP_EVERY = 10

_Entry = tuple[int, dict[bytes, bytes]]


@dataclass
class _Sub:
    """What one watch wants: a key or a tree, from revision ``next`` on; ``seen`` is the revision of
    every key it was last told is present, so a re-sync can tell what changed and what is gone."""

    key: str
    tree: bool
    next: int
    token: str = ""  # its registration for the Store's bell
    seen: dict[str, int] = field(default_factory=dict)


class Feed:
    """The one thread and connection per Store that read the change log for all its watches.

    ``_pos`` is the last revision the thread dispatched. A watch opened
    behind it is caught up (XRANGE) by its opener under ``_lock``, and the
    thread dispatches under ``_lock`` too, so each watch gets every revision
    once and in order.

    The reader blocks on the Store's *bell* rather than on the log: a stream
    of one entry that scripts ring (``_scripts.ring``) when a key that one of
    the Store's watches covers changes, so a change wakes the Stores that
    watch it, not every Store with a watch. The bell's XREAD and the log's go
    in one send: the server runs the second as soon as the first returns, so
    a wake costs one round trip. The log stays what events come from: every
    wake reads it from ``_pos``, and the reader wakes at least every
    ``REAP_INTERVAL``, so a ring that went missing (a registration lost with
    the server's writes, say) delays events but loses none.

    While it has watches, the Store also reaps due leases and ttl keys at
    their deadline, so a dead holder's keys are deleted, and their delete
    events read, within a round trip or two of it: every reap reports the
    earliest deadline left (on the server's clock), and a timer (the
    ``redis-reap`` lane of the Store's clock) reaps again then. Not the
    reader's XREAD timeout: Redis ends those only at its ``hz`` tick (100 ms
    by default). The reader also reaps every ``REAP_INTERVAL``, to learn of
    deadlines that other clients set.
    """

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._lock = threading.Condition()
        self._subs: dict[WatchFeed, _Sub] = {}
        self._pos: int | None = None
        self._last: tuple[bytes, bytes] | None = None  # type and key of the entry at _pos
        self._closed = False
        self._thread: threading.Thread | None = None
        self._client_id: int | None = None
        self._timeout = max(store._timeout / 2, 0.1)
        # Its own connection, used by the thread alone: CLIENT ID and XREAD must share it.
        self._conn: Connection = store._wire.connection(socket_timeout=REAP_INTERVAL + self._timeout)
        self._log = store._wire.key("log")
        self._reaper = store.clock.timers("redis-reap")
        self._reap_timer: Timer | None = None
        self._bell = os.urandom(6).hex()
        self._bell_key = store._wire.key(f"bell:{self._bell}")
        self._bell_pos = "0-0"
        self._tokens = itertools.count()
        # Registrations of closed watches, dropped along with the next registration or reap.
        self._stale: list[str] = []
        self._reaps = 0

    def add(self, watch: WatchFeed, key: str, tree: bool, start: int | None) -> None:
        # Registered for the bell in the same script that reads the state: every later change rings.
        token = str(next(self._tokens))
        mode = "none" if start is not None else "tree" if tree else "key"
        with self._lock:
            stale, self._stale = self._stale, []
        try:
            revision, pairs = self._store._read(key, mode, listen=[self._bell, "+", _target(key, tree), token, *stale])
        except BaseException:
            with self._lock:  # whether they were applied is not known: drop them (again) later
                self._stale += [*stale, "-", _target(key, tree), token]
            raise
        sub = _Sub(key, tree, revision + 1 if start is None else max(start, 1), token)  # revisions start at 1
        if start is None:
            self._emit_state(watch, sub, revision, pairs)
        with self._lock:
            if self._pos is None or (not self._subs and self._pos < revision):
                # No other watch needs what came before: the reader may start from here. (Never move
                # it back: a ring it already took may be for the revisions after `revision`.)
                self._pos, self._last = revision, None
            upto = self._pos
        # Catch up with the reader without holding the lock across round trips (Watch.close takes
        # it, on an asyncio loop too); the watch is the reader's once nothing is left between.
        while True:
            self._catch_up(watch, sub, upto, None)
            with self._lock:
                if sub.next <= self._pos:
                    upto = self._pos
                    continue
                self._subs[watch] = sub
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="coord-redis-watch", daemon=True)
                    self._thread.start()
                self._lock.notify_all()
                return

    def remove(self, watch: WatchFeed) -> None:
        with self._lock:
            sub = self._subs.pop(watch, None)
            if sub is not None:  # until then, it only rings in vain
                self._stale += ["-", _target(sub.key, sub.tree), sub.token]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            gone = [*self._stale]
            for sub in self._subs.values():
                gone += ["-", _target(sub.key, sub.tree), sub.token]
            self._subs.clear()
            self._stale = []
            self._lock.notify_all()
            thread, client_id = self._thread, self._client_id
            if self._reap_timer is not None:
                self._reap_timer.cancel()
        if gone:  # one try: a Store that cannot reach the server leaves them to the sweep
            with contextlib.suppress(RedisError, OSError):
                self._store._wire.run("listen", ["", self._bell, *gone])
        if thread is not None:
            if client_id is not None:
                with contextlib.suppress(RedisError, OSError):  # wake the blocked XREAD now
                    self._store._wire.call("CLIENT", "UNBLOCK", str(client_id))
            thread.join(timeout=REAP_INTERVAL + 1)
        self._conn.disconnect()

    # -- delivery, always under _lock; conn None = the Store's pool, with retries ---------

    def _emit_state(self, watch: WatchFeed, sub: _Sub, revision: int, pairs: list[KVPair]) -> None:
        for pair in sorted(pairs, key=lambda p: p.key):
            watch.emit(Event("put", pair.key, pair.value, pair.revision))
        sub.seen = {pair.key: pair.revision for pair in pairs}
        watch.revision = revision
        sub.next = revision + 1

    def _resync(self, watch: WatchFeed, sub: _Sub, conn: Connection | None) -> None:
        """The history ``watch`` needs is gone (trimmed, or lost by the server): emit what differs
        from what it was told, rather than skip. A put for each key whose revision is not the one it
        last saw (in revision order), then a delete for each key it saw that is gone, at the
        snapshot's revision (when exactly it went is no longer known)."""
        revision, pairs = self._store._read(sub.key, "tree" if sub.tree else "key", conn)
        log.info("watch of %r re-synced at revision %d: the change log no longer reaches back", sub.key, revision)
        watch.resynced()
        current = {pair.key: pair for pair in pairs}
        for pair in sorted(pairs, key=lambda p: p.revision):
            if sub.seen.get(pair.key) != pair.revision:
                watch.emit(Event("put", pair.key, pair.value, pair.revision))
        for key in sorted(sub.seen.keys() - current.keys()):
            watch.emit(Event("delete", key, None, revision))
        sub.seen = {pair.key: pair.revision for pair in pairs}
        watch.revision = revision
        sub.next = revision + 1

    def _catch_up(self, watch: WatchFeed, sub: _Sub, upto: int, conn: Connection | None) -> None:
        """Deliver revisions ``sub.next`` .. ``upto`` to ``watch``: every one is in the log unless trimmed."""
        while sub.next <= upto:
            low = sub.next
            entries = self._store._call(functools.partial(self._xrange, low, upto, conn), retry=conn is None)
            if not entries or not _follows(entries[0], sub.next - 1):
                self._resync(watch, sub, conn)
                return
            for revision, data in entries:
                self._deliver(watch, sub, revision, data)

    def _deliver(self, watch: WatchFeed, sub: _Sub, revision: int, data: dict[bytes, bytes]) -> None:
        if revision < sub.next:
            return
        sub.next = revision + 1
        kind = data[b"t"]
        if kind == b"e":  # a new epoch (see _dispatch)
            return
        key = data[b"k"].decode()
        if matches(key, sub.key, sub.tree):
            if kind == b"p":
                sub.seen[key] = revision
                watch.emit(Event("put", key, data[b"v"], revision))
            else:
                sub.seen.pop(key, None)
                watch.emit(Event("delete", key, None, revision))

    def _dispatch(self, entries: list[_Entry]) -> None:
        for revision, data in entries:
            assert self._pos is not None
            if not _follows((revision, data), self._pos):
                # Trimmed before this thread read it, or (an epoch entry that starts below _pos)
                # the server lost writes that were delivered: re-sync every watch.
                if data[b"t"] == b"e" and int(data[b"v"]) < self._pos:
                    log.warning("%s lost writes its watches saw: re-syncing them", self._store.describe())
                for watch, sub in self._subs.items():
                    self._resync(watch, sub, self._conn)
            for watch, sub in self._subs.items():
                self._deliver(watch, sub, revision, data)
            self._pos, self._last = revision, (data[b"t"], data[b"k"])

    # -- the thread ----------------------------------------------------------------------

    def _xrange(self, low: int, high: int, conn: Connection | None) -> list[_Entry]:
        reply = self._store._wire.call("XRANGE", self._log, f"{low}-0", f"{high}-0", "COUNT", str(BATCH), conn=conn)
        return [_entry(item) for item in reply]

    def _xread(self, pos: int, block: float) -> list[_Entry]:
        """Wait for the bell (at most ``block`` seconds; 0: not at all), then read the log from ``pos``."""
        read = ("XREAD", "COUNT", str(BATCH), "STREAMS", self._log, f"{pos}-0")
        if not block:
            return [_entry(item) for item in _stream(self._store._wire.call(*read, conn=self._conn))]
        ms = str(max(1, math.ceil(block * 1000)))
        bell, log = self._store._wire.pipeline(
            [("XREAD", "BLOCK", ms, "STREAMS", self._bell_key, self._bell_pos), read], self._conn
        )
        rung = _stream(bell)
        if rung:
            self._bell_pos = rung[-1][0].decode()
        return [_entry(item) for item in _stream(log)]

    def _listen(self) -> None:
        """Register every watch of this Store for its bell again: after a reconnect, or when the
        bell went missing (expired, or lost with the server's writes)."""
        with self._lock:
            args = [arg for sub in self._subs.values() for arg in ("+", _target(sub.key, sub.tree), sub.token)]
        self._store._run("listen", self._bell, *args, conn=self._conn)

    def _connect(self) -> int:
        client_id: int = self._store._wire.call("CLIENT", "ID", conn=self._conn)
        return client_id

    def _reap(self, conn: Connection | None) -> None:
        """Delete what is due, and set the timer for the next deadline the server reports; on the
        reader's connection, keep the bell alive too."""
        stale: list[str] = []
        sweep = ""
        if conn is not None:
            with self._lock:
                stale, self._stale = self._stale, []
            self._reaps = (self._reaps + 1) % SWEEP_EVERY
            sweep = "" if self._reaps else "sweep"
        try:
            now, due, bell = self._store._run("reap", self._bell if conn is not None else "", sweep, *stale, conn=conn)
        except BaseException:
            with self._lock:
                self._stale += stale
            raise
        if not bell:
            self._listen()
        if not due:
            return
        # The server read its clock at most a round trip before now: counting from now, the
        # timer fires no earlier than the deadline, and at most a round trip after it.
        at = self._store.clock.now() + max(float(due) - float(now), 0.0) / 1000 + 0.001
        with self._lock:
            timer = self._reap_timer
            if self._closed or not self._subs or (timer is not None and timer.pending and timer.when <= at):
                return
            if timer is not None:
                timer.cancel()
            self._reap_timer = self._reaper.call_at(at, self._reap_due)

    def _reap_due(self) -> None:
        with self._lock:
            self._reap_timer = None
        try:
            self._reap(None)
        except CoordError as exc:  # the reader reaps again within REAP_INTERVAL
            log.info("reaping %s failed: %s", self._store.describe(), exc)

    def _loop(self) -> None:
        reaped = 0.0
        full = False
        failing_since: float | None = None
        while True:
            with self._lock:
                while not self._subs and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
            try:
                if self._client_id is None:  # (re)connecting
                    self._client_id = self._store._call(self._connect, retry=False)
                    if failing_since is not None:
                        self._listen()
                        self._check_position()
                if time.monotonic() - reaped >= REAP_INTERVAL:
                    self._reap(self._conn)
                    reaped = time.monotonic()
                pos = self._pos
                entries = []
                if pos is not None:
                    block = 0.0 if full else REAP_INTERVAL  # more may wait in the log, rung already
                    entries = self._store._call(functools.partial(self._xread, pos, block), retry=False)
                full = len(entries) >= BATCH
                with self._lock:
                    # A watch added meanwhile may have moved _pos on (see add): what is past it is new.
                    fresh = [entry for entry in entries if self._pos is None or entry[0] > self._pos]
                    if fresh and not self._closed:
                        self._dispatch(fresh)
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
        """After a reconnect: re-sync every watch if the log no longer holds what was delivered
        (its revisions rolled back without a new epoch, say by a backup restored into the server)."""
        with self._lock:
            if not self._pos:
                return
            reply = self._store._run("position", str(self._pos), conn=self._conn)
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


def _target(key: str, tree: bool) -> str:
    """How the scripts name what a watch covers (see ``_scripts.ring``)."""
    return ("/" if tree else "=") + key


def _stream(reply: Any) -> list[Any]:
    """The entries of the one stream an XREAD read (RESP3 gives a map, RESP2 a list), or []."""
    if not reply:
        return []
    streams = list(reply.values()) if isinstance(reply, dict) else [item[1] for item in reply]
    return list(streams[0])


def _revision(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])


def _entry(item: Any) -> _Entry:
    entry_id, fields = item
    data = fields if isinstance(fields, dict) else dict(zip(fields[::2], fields[1::2], strict=True))
    return _revision(entry_id), data


def _follows(entry: _Entry, previous: int) -> bool:
    """Whether ``entry`` comes right after revision ``previous`` in the log: the next revision, or
    the entry that starts an epoch where the last one ended at ``previous``."""
    revision, data = entry
    if data[b"t"] == b"e":
        return int(data[b"v"]) == previous
    return revision == previous + 1
