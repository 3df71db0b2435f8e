"""The file's tables, created on first open, migrated from the previous layout, and reset after a reboot.

::

    state    one row: revision, the log's bounds (compacted, logged, trimmed),
             next_expiry (no deadline is earlier), the boot and the highest
             clock reading the deadlines count from, and ``listened``: a bit
             per wake-up bucket that some process ever listened to (writers
             touch only those, see ``_files``)
    kv       key, value, revision, created, lease, expires (ttl keys);
             WITHOUT ROWID: one b-tree, so a write touches fewer pages
    changes  revision, kind, key, value, position (bytes logged before it):
             the change log that feeds watches
    leases   id (never reused), ttl, expires, owner (its lock file's name)

Deadlines (``kv.expires``, ``leases.expires``) are readings of the host
clock (``_host``). ``PRAGMA user_version`` holds the layout's version;
version 0 with a ``meta`` table is the first layout (wall-clock deadlines,
a log bounded by count only), migrated in place: its deadlines are carried
over to the host clock, and its change log is dropped (a watch resuming
from before the upgrade re-syncs).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

from ..._errors import ConfigurationError, StoreUnavailable
from . import _host
from ._boundary import Gate, connect, is_busy
from ._files import BUCKETS
from ._writes import Limits, Write

__all__ = ["VERSION", "open_database"]

VERSION = 2

_TABLES = """
CREATE TABLE state (
    id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL, compacted INTEGER NOT NULL,
    logged INTEGER NOT NULL, trimmed INTEGER NOT NULL, next_expiry REAL NOT NULL, boot TEXT NOT NULL,
    clock REAL NOT NULL, listened BLOB NOT NULL
);
CREATE TABLE kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL, created INTEGER NOT NULL,
    lease INTEGER, expires REAL
) WITHOUT ROWID;
CREATE INDEX kv_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE INDEX kv_expires ON kv (expires) WHERE expires IS NOT NULL;
CREATE TABLE changes (
    revision INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, value BLOB, position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL, expires REAL NOT NULL);
ALTER TABLE leases ADD COLUMN owner TEXT;
CREATE INDEX IF NOT EXISTS leases_expires ON leases (expires);
CREATE INDEX leases_owner ON leases (owner) WHERE owner IS NOT NULL;
"""


def open_database(path: Path, gate: Gate, timeout: float, limits: Limits, owners: Path) -> sqlite3.Connection:
    """A connection to a store in the current layout, after a reboot's reset if one happened.

    ``ConfigurationError`` if the file is not a database, or is one of a
    newer coord; nothing stays open then. Several processes may open a new
    file at once: the one that creates it makes the others' first steps
    find it busy (SQLite does not always wait then), so they start again.
    """
    deadline = _host.now() + timeout
    while True:
        conn = connect(path, timeout)
        try:
            _prepare(conn, gate, limits, owners)
            return conn
        except sqlite3.Error as exc:
            conn.close()
            if not (isinstance(exc, sqlite3.OperationalError) and is_busy(exc)):
                raise ConfigurationError(f"{path} is not a coord sqlite store: {exc}") from exc
            if _host.now() >= deadline:
                raise StoreUnavailable(f"sqlite: {path} stayed locked: {exc}") from exc
            time.sleep(0.002)
        except BaseException:
            conn.close()
            raise


def _prepare(conn: sqlite3.Connection, gate: Gate, limits: Limits, owners: Path) -> None:
    # Small rows: 1 KiB pages halve what a commit writes to the WAL. Both pragmas only take on a new
    # file (before WAL mode and the first table); on an existing one they do nothing.
    conn.execute("PRAGMA page_size=1024")
    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute("PRAGMA journal_mode=WAL").fetchone()
    if conn.execute("PRAGMA user_version").fetchone()[0] != VERSION:
        _create(conn, gate)
    _check_boot(conn, gate, limits, owners)
    conn.execute("PRAGMA busy_timeout=0")  # from now on the gate waits


def _create(conn: sqlite3.Connection, gate: Gate) -> None:
    fresh = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    gate.run(lambda: conn.execute("BEGIN IMMEDIATE"))
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise ConfigurationError(
                f"the store was written by a newer coord (layout {version}, this one reads {VERSION})"
            )
        if version < VERSION:  # nobody did it meanwhile
            _migrate(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if not fresh:  # the first layout had no incremental vacuum: rebuild once, if nobody is using the file
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")


def _migrate(conn: sqlite3.Connection) -> None:
    old = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None
    revision = 0
    if old:
        revision = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]
        shift = _host.now() - time.time()  # wall-clock deadlines onto the host clock
        conn.execute("UPDATE leases SET expires = expires + ?", (shift,))
        conn.execute("UPDATE kv SET expires = expires + ? WHERE expires IS NOT NULL", (shift,))
        conn.execute("DROP TABLE meta")
        conn.execute("DROP TABLE changes")
        conn.execute("DROP INDEX kv_lease")
        conn.execute("DROP INDEX kv_expires")
        conn.execute("ALTER TABLE kv RENAME TO kv_first")
    for statement in _TABLES.split(";"):
        if statement.strip():
            conn.execute(statement)
    if old:
        conn.execute("INSERT INTO kv SELECT * FROM kv_first")
        conn.execute("DROP TABLE kv_first")
    conn.execute(
        "INSERT INTO state VALUES (0, ?, ?, 0, 0, 0, ?, ?, zeroblob(?))",
        (revision, revision, _host.BOOT_ID, _host.now(), BUCKETS // 8),
    )  # next_expiry 0: the first write computes it
    conn.execute(f"PRAGMA user_version={VERSION}")


def _check_boot(conn: sqlite3.Connection, gate: Gate, limits: Limits, owners: Path) -> None:
    """After a reboot (another boot id, or the clock behind the file's), every deadline is void: expire them all."""
    if not _rebooted(conn):
        return
    gate.run(lambda: conn.execute("BEGIN IMMEDIATE"))
    try:
        if _rebooted(conn):
            write = Write(conn, limits, 0.0, owners, None)
            write.reap_all()
            write.finish()
            conn.execute("UPDATE state SET boot = ?, clock = ?", (_host.BOOT_ID, _host.now()))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _rebooted(conn: sqlite3.Connection) -> bool:
    boot, clock = conn.execute("SELECT boot, clock FROM state").fetchone()
    if _host.BOOT_ID:
        return bool(boot != _host.BOOT_ID)
    # No boot id: a clock reading below one the file saw means the clock restarted. Read after the
    # row, so that every reading the row holds was taken before this one.
    return bool(_host.now() < clock)
