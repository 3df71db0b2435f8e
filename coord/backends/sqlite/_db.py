"""A connection and its transactions: writes (``Write``), consistent snapshots, single reads.

Each thread that touches the file has its own ``Db``: the Store's callers
share one (under the Store's lock), the watch thread has another. After a
write commits, the writer touches the side files (``_files``): the gate
for writers waiting on the lock, the buckets of the keys it changed for the
watches waiting on them.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..._errors import StoreUnavailable
from . import _host
from ._boundary import Gate, is_busy, translate
from ._files import BUCKETS, Files
from ._writes import Limits, Write

__all__ = ["Db", "abandon"]

T = TypeVar("T")

#: The writer whose commit crosses a multiple of this many revisions checkpoints the WAL (about
#: 1 MiB of it). SQLite's own automatic checkpoint is off: it runs inside COMMIT, so the
#: committing writer would wake the watches of its changes only after an fsync or two.
CHECKPOINT_EVERY = 256

# Connections a forked child inherited: never used, never closed (closing one may touch the
# parent's locks and WAL; SQLite says not to carry a connection across fork()).
_ABANDONED: list[sqlite3.Connection] = []


def abandon(conn: sqlite3.Connection) -> None:
    _ABANDONED.append(conn)


class Db:
    def __init__(
        self, conn: sqlite3.Connection, gate: Gate, files: Files, limits: Limits, me: Callable[[], str | None]
    ) -> None:
        self.conn = conn
        self.gate = gate
        self._files = files
        self._limits = limits
        self._me = me
        #: The ``listened`` bits as of this connection's last write (they are only ever set).
        self.listened = bytes(BUCKETS // 8)

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def write(self, fn: Callable[[Write], T]) -> T:
        """``fn(write)`` in one ``BEGIN IMMEDIATE`` transaction, committed if it returns, rolled back if it raises.

        A plain function rather than a context manager: this is every write's
        path, and each layer of generator costs a few microseconds.
        """
        db = self.conn
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                self.gate.wait(self._begin)
            try:
                write = Write(db, self._limits, _host.now(), self._files.owners, self._me())
                result = fn(write)
                write.finish()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc
        self.listened = write.listened
        self._files.committed(write.changed, write.listened)
        if write.revision // CHECKPOINT_EVERY != write.started // CHECKPOINT_EVERY:
            self._checkpoint()
        return result

    def _checkpoint(self) -> None:
        """Copy the WAL into the database, without waiting for anyone; after the wake-ups, not before them."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement in the block sees the same state."""
        db = self.conn
        with translate():
            db.execute("BEGIN")
            try:
                yield db
            finally:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("COMMIT")

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of one read statement (its own transaction)."""
        with translate():
            return self.gate.run(lambda: self.conn.execute(sql, params).fetchall())

    def run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """``fn(conn)`` for a read of one statement, retried while the file is busy."""
        with translate():
            return self.gate.run(lambda: fn(self.conn))

    def data_version(self) -> int:
        """Changes when another connection commits (SQLite's ``PRAGMA data_version``)."""
        with translate():
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        self.gate.close()
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def abandon(self) -> None:
        """In a forked child: let go of the parent's connection without closing it."""
        self.gate.close()
        abandon(self.conn)
