"""``sqlite:///path/to/file.db``: the embedded store, shared by the processes of one host.

Every mutation is one ``BEGIN IMMEDIATE`` transaction that bumps a global
revision counter and appends each change to a change log, so a crash
mid-write leaves nothing half-written: SQLite's WAL rolls the transaction
back as a whole. Leases and ttl keys carry wall-clock deadlines in the file;
whichever process touches the store next (a read, a write, a lease renewal,
or the watch poller of any process) reaps what has expired, with delete
events in the log. Watches are fed by one poller thread per Store that
checks ``PRAGMA data_version`` every few milliseconds: an idle poll reads no
table and costs microseconds.

Limits: one host (SQLite's locking is not safe on network file systems);
writers are serialised; expiry follows the wall clock, so a clock step moves
deadlines with it; the change log keeps the last ``HISTORY`` changes, and a
watch that falls further behind re-syncs from the current state.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import ClassVar

from .._clock import Clock
from .._errors import ConfigurationError, LeaseExpired, NotSupported, StoreUnavailable
from .._lease import Lease
from .._store import Store, check_revision, labelled, matches
from .._txn import Op
from .._types import Event, KVPair
from .._url import Location
from .._watch import WatchFeed

__all__ = ["SQLiteStore"]

#: Changes kept in the log for watches that resume or replay; older ones are trimmed.
HISTORY = 100_000
#: How often the watch poller looks for new changes (seconds), while changes flow and when idle.
POLL_INTERVAL = 0.005
IDLE_POLL = 0.01

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compacted', 0);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL, created INTEGER NOT NULL,
    lease INTEGER, expires REAL
);
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS changes (revision INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, value BLOB);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_expires ON leases (expires);
"""

_UNDER = "key > :lo AND key < :hi"  # strictly under a prefix: see _bounds


def _bounds(prefix: str) -> dict[str, str]:
    # "a/b" covers "a/b/..." : every key between "a/b/" and "a/b0" ("0" sorts right after "/").
    return {"lo": f"{prefix}/", "hi": f"{prefix}0"} if prefix else {"lo": "", "hi": "\U0010ffff"}


def _pair(row: sqlite3.Row | tuple[str, bytes, int, int, int | None]) -> KVPair:
    return KVPair(row[0], bytes(row[1]), row[2], row[3], row[4])


class SQLiteStore(Store):
    backend = "sqlite"
    OPTIONS: ClassVar[Mapping[str, Callable[[str], object]]] = {"poll_interval": float}

    def __init__(
        self,
        location: Location,
        *,
        timeout: float = 5.0,
        prefix: str = "",
        clock: Clock | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        if clock is not None:
            raise NotSupported(
                "the sqlite store expires keys by the host's clock; a clock cannot be injected", backend=self.backend
            )
        super().__init__(prefix=prefix)
        if not location.path:
            raise ConfigurationError("sqlite:// needs a file: sqlite:///path/to/file.db")
        self.path = Path(location.path).expanduser()
        self._timeout = timeout
        self._poll_interval = poll_interval
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the directory of {self.path}: {exc}") from exc
        self._conn = self._connect()
        with self._translate():
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        self._watchers: dict[WatchFeed, tuple[str, bool]] = {}
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()

    def describe(self) -> str:
        return f"sqlite://{self.path}"

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ConfigurationError(f"cannot open {self.path}: {exc}") from exc
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        return conn

    # -- one boundary for SQLite's errors --------------------------------

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite failed: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction: reap what has expired, then the caller's change, atomically."""
        with self._lock, self._translate():
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                self._reap(db)
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent read; first reaps, in a write, if something has expired."""
        with self._lock, self._translate():
            if self._expiry_due(self._conn):
                with self._write():
                    pass
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    # -- changes ------------------------------------------------------------

    def _next_revision(self, db: sqlite3.Connection) -> int:
        row = db.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value").fetchone()
        revision: int = row[0]
        if revision % 1000 == 0:  # trim the log now and then, not on every write
            db.execute("DELETE FROM changes WHERE revision <= ?", (revision - HISTORY,))
            db.execute("UPDATE meta SET value = max(value, ?) WHERE name = 'compacted'", (revision - HISTORY,))
        return revision

    def _write_key(
        self, db: sqlite3.Connection, key: str, value: bytes, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        lease_id = None
        if lease is not None:
            lease_id = lease.id
            if db.execute("SELECT 1 FROM leases WHERE id = ?", (lease_id,)).fetchone() is None:
                raise LeaseExpired(f"lease {lease_id} has expired")
        revision = self._next_revision(db)
        expires = None if ttl is None else time.time() + ttl
        row = db.execute(
            "INSERT INTO kv VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " revision = excluded.revision, lease = excluded.lease, expires = excluded.expires RETURNING created",
            (key, value, revision, revision, lease_id, expires),
        ).fetchone()
        db.execute("INSERT INTO changes VALUES (?, 'put', ?, ?)", (revision, key, value))
        return KVPair(key, value, revision, row[0], lease_id)

    def _remove(self, db: sqlite3.Connection, keys: list[str]) -> None:
        for key in keys:
            db.execute("DELETE FROM kv WHERE key = ?", (key,))
            db.execute("INSERT INTO changes VALUES (?, 'delete', ?, NULL)", (self._next_revision(db), key))

    def _expiry_due(self, db: sqlite3.Connection) -> bool:
        row = db.execute(
            "SELECT min(e) FROM (SELECT min(expires) AS e FROM leases UNION ALL SELECT min(expires) FROM kv)"
        ).fetchone()
        return row[0] is not None and row[0] <= time.time()

    def _reap(self, db: sqlite3.Connection) -> None:
        """Delete expired leases, their keys and expired ttl keys (inside a write transaction)."""
        now = time.time()
        dead = [row[0] for row in db.execute("SELECT id FROM leases WHERE expires <= ?", (now,))]
        keys = [row[0] for row in db.execute("SELECT key FROM kv WHERE expires <= ? ORDER BY key", (now,))]
        for lease_id in dead:
            keys += [row[0] for row in db.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease_id,))]
            db.execute("DELETE FROM leases WHERE id = ?", (lease_id,))
        self._remove(db, keys)

    # -- the Store operations -------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        with self._read() as db:
            row = db.execute("SELECT key, value, revision, created, lease FROM kv WHERE key = ?", (key,)).fetchone()
        return _pair(row) if row else None

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        with self._write() as db:
            return self._write_key(db, key, value, ttl, lease)

    def _delete(self, key: str) -> bool:
        with self._write() as db:
            if db.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone() is None:
                return False
            self._remove(db, [key])
            return True

    def _list(self, prefix: str) -> list[KVPair]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT key, value, revision, created, lease FROM kv WHERE {_UNDER} ORDER BY key", _bounds(prefix)
            ).fetchall()
        return [_pair(row) for row in rows]

    def _delete_tree(self, prefix: str) -> None:
        with self._write() as db:
            keys = [row[0] for row in db.execute(f"SELECT key FROM kv WHERE {_UNDER} ORDER BY key", _bounds(prefix))]
            self._remove(db, keys)

    def _check(self, db: sqlite3.Connection, key: str, revision: int | None) -> None:
        row = db.execute("SELECT revision FROM kv WHERE key = ?", (key,)).fetchone()
        check_revision(None if row is None else row[0], revision)

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        with self._write() as db:
            self._check(db, key, revision)
            return self._write_key(db, key, value, ttl, lease)

    def _atomic_delete(self, key: str, revision: int) -> None:
        with self._write() as db:
            self._check(db, key, revision)
            self._remove(db, [key])

    def _transaction(self, ops: list[Op]) -> list[object]:
        with self._write() as db:
            for op in ops:
                if op.conditional:
                    with labelled(op.key):
                        self._check(db, op.key, op.expect)
            return [self._apply(db, op) for op in ops]

    def _apply(self, db: sqlite3.Connection, op: Op) -> object:
        if op.kind == "put":
            with labelled(op.key):
                return self._write_key(db, op.key, op.value, op.ttl, op.lease)
        if op.kind == "delete":
            existed = db.execute("SELECT 1 FROM kv WHERE key = ?", (op.key,)).fetchone() is not None
            if existed:
                self._remove(db, [op.key])
            return existed
        if op.kind == "get":
            row = db.execute("SELECT key, value, revision, created, lease FROM kv WHERE key = ?", (op.key,)).fetchone()
            return _pair(row) if row else None
        if op.kind == "list":
            rows = db.execute(f"SELECT key, value, revision, created, lease FROM kv WHERE {_UNDER}", _bounds(op.key))
            return [_pair(row) for row in rows.fetchall()]
        return None

    # -- leases ---------------------------------------------------------------

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        with self._write() as db:
            row = db.execute(
                "INSERT INTO leases (ttl, expires) VALUES (?, ?) RETURNING id", (ttl, time.time() + ttl)
            ).fetchone()
        return int(row[0]), ttl

    def _lease_keepalive(self, lease: Lease) -> bool:
        with self._write() as db:
            cursor = db.execute("UPDATE leases SET expires = ? WHERE id = ?", (time.time() + lease.ttl, lease.id))
            return cursor.rowcount == 1

    def _lease_revoke(self, lease: Lease) -> None:
        with self._write() as db:
            db.execute("DELETE FROM leases WHERE id = ?", (lease.id,))
            keys = [row[0] for row in db.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease.id,))]
            self._remove(db, keys)

    # -- watches ------------------------------------------------------------

    def _watch(self, watch: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        with self._read() as db:
            revision, compacted = (row[0] for row in db.execute("SELECT value FROM meta ORDER BY name DESC"))
            if start_revision is None or start_revision <= compacted:
                self._emit_state(db, watch, key, tree)
                watch.revision = revision
            else:
                watch.revision = start_revision - 1  # the poller replays from the log
        with self._lock:
            self._watchers[watch] = (key, tree)
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll, name="coord-sqlite-watch", daemon=True)
                self._poller.start()

    def _emit_state(self, db: sqlite3.Connection, watch: WatchFeed, key: str, tree: bool) -> None:
        if tree:
            rows = db.execute(f"SELECT key, value, revision FROM kv WHERE {_UNDER} ORDER BY key", _bounds(key))
        else:
            rows = db.execute("SELECT key, value, revision FROM kv WHERE key = ?", (key,))
        for name, value, revision in rows.fetchall():
            watch.emit(Event("put", name, bytes(value), revision))

    def _unwatch(self, watch: WatchFeed) -> None:
        with self._lock:
            self._watchers.pop(watch, None)

    def _poll(self) -> None:
        """Feed every watch of this Store from the change log; reap expired keys when due."""
        conn = self._connect()
        seen = -1
        next_reap = 0.0
        last_change = 0.0
        try:
            # Poll fast while changes flow, and at the 10 ms bound when idle.
            while not self._stop.wait(self._poll_interval if time.monotonic() - last_change < 2 else IDLE_POLL):
                with self._lock:
                    watchers = dict(self._watchers)
                if not watchers:
                    continue
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen or time.time() >= next_reap:
                        seen, last_change = version, time.monotonic()
                        next_reap = self._poll_once(conn, watchers)
                except (sqlite3.Error, StoreUnavailable):
                    continue  # locked or busy: try again on the next tick
        finally:
            conn.close()

    def _poll_once(self, conn: sqlite3.Connection, watchers: dict[WatchFeed, tuple[str, bool]]) -> float:
        """Deliver new changes; return when the next expiry falls due."""
        if self._expiry_due(conn):
            with self._write():
                pass
        conn.execute("BEGIN")
        try:
            start = min(watch.revision for watch in watchers)
            rows = conn.execute(
                "SELECT revision, type, key, value FROM changes WHERE revision > ? ORDER BY revision", (start,)
            ).fetchall()
            revision, compacted = (row[0] for row in conn.execute("SELECT value FROM meta ORDER BY name DESC"))
            for watch, (key, tree) in watchers.items():
                if watch.revision < compacted:
                    # The log no longer reaches back that far: re-sync from the current state.
                    self._emit_state(conn, watch, key, tree)
                    watch.revision = revision
                    continue
                for rev, kind, name, value in rows:
                    if rev > watch.revision and matches(name, key, tree):
                        watch.emit(Event(kind, name, None if value is None else bytes(value), rev))
                watch.revision = max(watch.revision, revision)
            row = conn.execute(
                "SELECT min(e) FROM (SELECT min(expires) AS e FROM leases UNION ALL SELECT min(expires) FROM kv)"
            ).fetchone()
        finally:
            conn.execute("COMMIT")
        return float("inf") if row[0] is None else float(row[0])

    def _close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=2)
        with self._lock:
            self._conn.close()
