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
from typing import Any

from . import _host
from ._boundary import Gate, translate
from ._files import Files
from ._writes import Limits, Write

__all__ = ["Db", "abandon"]

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

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    @contextlib.contextmanager
    def write(self) -> Iterator[Write]:
        """One ``BEGIN IMMEDIATE`` transaction, committed if the block returns, rolled back if it raises."""
        db = self.conn
        with translate():
            self.gate.run(self._begin)
            try:
                write = Write(db, self._limits, _host.now(), self._files.owners, self._me())
                yield write
                write.finish()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
        self._files.committed(write.changed)

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
