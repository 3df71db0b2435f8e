"""SQLiteStore: the Store operations, each one statement or one write transaction on this process's connection."""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ClassVar, TypeVar

from ..._clock import Clock
from ..._errors import ConfigurationError, NotSupported, StoreUnavailable
from ..._lease import Lease
from ..._store import Store, labelled
from ..._txn import Op
from ..._types import Event, KVPair
from ..._url import Location, flag
from ..._watch import WatchFeed
from . import _host, _reads
from ._access import Access
from ._boundary import Gate
from ._db import Db
from ._files import Files, Owner
from ._inotify import Inotify
from ._schema import open_database
from ._watcher import Watcher
from ._writes import Limits, Write, listening

__all__ = ["HISTORY", "HISTORY_BYTES", "SQLiteStore"]

#: The change log keeps the last HISTORY changes, and at most HISTORY_BYTES of them (keys, values, overhead).
HISTORY = 100_000
HISTORY_BYTES = 16 << 20
#: The watch thread's poll (seconds): a safety net where the kernel wakes it, the way it finds changes elsewhere.
POLL_INTERVAL = 0.1
POLL_INTERVAL_UNWOKEN = 0.005
POLL_BOUNDS = (0.001, 60.0)
#: Revisions are SQLite integers.
MAX_REVISION = 2**63 - 1

T = TypeVar("T")


class SQLiteStore(Store):
    backend = "sqlite"
    OPTIONS: ClassVar[Mapping[str, Callable[[str], object]]] = {
        "poll_interval": float,
        "history": int,
        "history_bytes": int,
        "shared": flag,
    }

    def __init__(
        self,
        location: Location,
        *,
        timeout: float = 5.0,
        prefix: str = "",
        clock: Clock | None = None,
        poll_interval: float | None = None,
        history: int = HISTORY,
        history_bytes: int = HISTORY_BYTES,
        shared: bool = False,
    ) -> None:
        if clock is not None:
            raise NotSupported(
                "the sqlite store expires keys by the host's clock; a clock cannot be injected", backend=self.backend
            )
        super().__init__(prefix=prefix)
        self._timeout = _number("timeout", timeout, 0.0, 1e6)
        default_poll = POLL_INTERVAL if _wakes() else POLL_INTERVAL_UNWOKEN
        self._poll = _number("poll_interval", default_poll if poll_interval is None else poll_interval, *POLL_BOUNDS)
        self._limits = Limits(_count("history", history), _count("history_bytes", history_bytes))
        if not location.path:
            raise ConfigurationError("sqlite:// needs a file: sqlite:///path/to/file.db")
        if location.path == ":memory:" or location.path.startswith("file:"):
            raise ConfigurationError(
                f"sqlite://{location.path} is not a file that several connections share (the watch thread has its"
                " own): use memory:// for a store inside one process, or sqlite:///path/to/file.db"
            )
        if not isinstance(shared, bool):
            raise ConfigurationError(f"shared must be true or false, not {shared!r}")
        self.path = Path(location.path).expanduser()
        access = Access(shared)
        try:
            access.make_dirs(self.path.parent)
            if self.path.parent == _default_path().parent:  # coord's own directory: private too
                access.check([self.path.parent])
            self._files = Files(self.path, access)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the files of {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        self._owner = Owner(self._files.owners, access)
        try:
            self._db: Db | None = self._open()
        except BaseException:
            self._files.close()
            raise
        access.announce(self.path)
        self._watcher: Watcher | None = None
        _STORES.add(self)

    def describe(self) -> str:
        return f"sqlite://{self.path}"

    # -- this process's connection --------------------------------------------

    def _open(self) -> Db:
        gate = Gate(self._files.gate, self._timeout)
        conn = open_database(self.path, gate, self._timeout, self._limits, self._files.owners)
        return Db(conn, gate, self._files, self._limits, self._me)

    def _me(self) -> str | None:
        return self._owner.name

    def _here(self) -> Db:
        """The connection of this process (a forked child opens its own on first use); under ``_lock``."""
        if self._db is None:
            self._db = self._open()
        return self._db

    def _write(self, fn: Callable[[Write], T]) -> T:
        with self._lock:
            return self._here().write(fn)

    def _read(self, fn: Callable[..., object], *args: object) -> object:
        with self._lock:
            return self._here().run(lambda db: fn(db, *args, _host.now()))

    # -- the Store operations -------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        pair = self._read(_reads.get, key)
        assert pair is None or isinstance(pair, KVPair)
        return pair

    def _exists(self, key: str) -> bool:
        return bool(self._read(_reads.exists, key))

    def _list(self, prefix: str) -> list[KVPair]:
        pairs = self._read(_reads.listing, prefix)
        assert isinstance(pairs, list)
        return pairs

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        return self._write(lambda write: write.put(key, value, ttl, None if lease is None else lease.id))

    def _delete(self, key: str) -> bool:
        return self._write(lambda write: write.remove(key))

    def _delete_tree(self, prefix: str) -> None:
        self._write(lambda write: write.remove_all(_reads.keys_under(write.db, prefix)))

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        def run(write: Write) -> KVPair:
            write.check(key, revision)
            return write.put(key, value, ttl, None if lease is None else lease.id)

        return self._write(run)

    def _atomic_delete(self, key: str, revision: int) -> None:
        def run(write: Write) -> None:
            write.check(key, revision)
            write.remove(key)

        self._write(run)

    def _transaction(self, ops: list[Op]) -> list[object]:
        def run(write: Write) -> list[object]:
            for op in ops:
                if op.conditional:
                    with labelled(op.key):
                        write.check(op.key, op.expect)
            return [_apply(write, op) for op in ops]

        return self._write(run)

    # -- leases: a lease belongs to the process that granted it ---------------

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        with self._lock:
            try:
                owner = self._owner.ensure()
            except OSError as exc:
                raise StoreUnavailable(f"cannot create a lock file in {self._files.owners}: {exc}") from exc
            return self._write(lambda write: write.grant(ttl, owner)), ttl

    def _lease_keepalive(self, lease: Lease) -> bool:
        return self._write(lambda write: write.renew(lease.id, lease.ttl))

    def _lease_revoke(self, lease: Lease) -> None:
        self._write(lambda write: write.revoke(lease.id))

    # -- watches --------------------------------------------------------------

    def _watch(self, feed: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        with self._lock:
            watcher = self._watching()
            # Listen before reading where the watch starts, so that no commit after that read goes unheard.
            number = watcher.listen(key, tree)
            db = self._here()
            if number is not None and not listening(db.listened, number):
                db.write(lambda write: write.listen(number))
            if tree:
                with db.snapshot() as conn:
                    revision, compacted = conn.execute("SELECT revision, compacted FROM state").fetchone()
                    rows = _reads.current(conn, key, True, _host.now())
            else:
                revision, compacted, rows = db.run(lambda conn: _reads.start(conn, key, _host.now()))
            if start_revision is None or start_revision <= compacted:
                if start_revision is not None:
                    feed.resynced()  # the history it asked for is gone: the current state stands in
                for name, value, rev in sorted(rows):
                    feed.emit(Event("put", name, value, rev))
                feed.revision = revision
            else:
                feed.revision = min(start_revision - 1, MAX_REVISION)  # the thread replays from the log
            if watcher.add(feed, key, tree, {row[0] for row in rows}):
                watcher.poke()

    def _watching(self) -> Watcher:
        if self._watcher is None:
            self._watcher = Watcher(self._open, self._files, self._poll, self._me)
        return self._watcher

    def _unwatch(self, feed: WatchFeed) -> None:
        watcher = self._watcher
        if watcher is not None:
            watcher.remove(feed)

    # -- the end, and fork ----------------------------------------------------

    def _close(self) -> None:
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.close()
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._owner.release()
            self._files.close()
        _STORES.discard(self)

    def _forked(self) -> None:
        """In a forked child: let go of the parent's lock file and thread (the connections are closed by ``_db``).

        The Store itself is closed in the child (``Store._forsake``, which runs
        first); what is left here is what the backend holds besides.
        """
        self._lock = threading.RLock()
        self._db = None
        self._owner.forget()  # the parent keeps its lock; our copy must not outlive it
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            feeds = watcher.feeds()
            watcher.forget()
            if feeds and not self.closed:  # a Store that lives on in the child: its watches carry on
                fresh = self._watching()
                for feed, key, tree, present in feeds:
                    fresh.listen(key, tree)  # marked in the file already: the parent listened to them
                    fresh.add(feed, key, tree, present)
                fresh.poke()
        if self.closed:
            self._files.close()
            _STORES.discard(self)


def _apply(write: Write, op: Op) -> object:
    if op.kind == "put":
        with labelled(op.key):
            return write.put(op.key, op.value, op.ttl, None if op.lease is None else op.lease.id)
    if op.kind == "delete":
        return write.remove(op.key)
    if op.kind == "get":
        return _reads.get(write.db, op.key, write.now)
    if op.kind == "list":
        return _reads.listing(write.db, op.key, write.now)
    return None


def _default_path() -> Path:
    from ..._connect import default_path

    return default_path().expanduser()


def _wakes() -> bool:
    inotify = Inotify.open()
    if inotify is None:
        return False
    inotify.close()
    return True


def _number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number of seconds, not {value!r}")
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low:g} and {high:g} seconds, not {value!r}")
    return float(value)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REVISION:
        raise ConfigurationError(f"{name} must be a positive integer, not {value!r}")
    return value


_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
