"""A connection and its transactions: writes (``Write``), consistent snapshots, single reads; and fork().

Each thread that touches the file has its own ``Db``: the Store's callers
share one (under the Store's lock), the watch thread has another. After a
write commits, the writer touches the side files (``_files``): the gate
for writers waiting on the lock, the buckets of the keys it changed for the
watches waiting on them.

fork(): SQLite must not be in use by another thread at the moment of the
fork (the child would inherit its mutexes held), and a child must not use
its parent's connections, nor open new ones while SQLite still counts the
inherited ones (it would believe it holds the parent's file locks, which
POSIX does not hand to a child). So every ``Db`` has a mutex around each
use; just before a fork, the forking thread takes them all; in the child,
the inherited connections are closed (with no transaction open, which the
mutexes guarantee, closing touches nothing of the parent's: its locks are
its own, and the last-connection checkpoint needs an exclusive lock that
the living parent's shared lock refuses) and each owner opens anew.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..._errors import StoreClosed, StoreUnavailable
from . import _host
from ._boundary import Gate, is_busy, translate
from ._files import BUCKETS, Files
from ._writes import Limits, Write

__all__ = ["CHECKPOINT_EVERY", "Db"]

T = TypeVar("T")

#: The writer whose commit crosses a multiple of this many revisions checkpoints the WAL (about
#: 1 MiB of it). SQLite's own automatic checkpoint is off: it runs inside COMMIT, so the
#: committing writer would wake the watches of its changes only after an fsync or two.
CHECKPOINT_EVERY = 256


class Db:
    def __init__(
        self, conn: sqlite3.Connection, gate: Gate, files: Files, limits: Limits, me: Callable[[], str | None]
    ) -> None:
        self.conn = conn
        self.gate = gate
        self._files = files
        self._limits = limits
        self._me = me
        self._mutex = threading.Lock()
        self.forked = False
        #: The ``listened`` bits as of this connection's last write (they are only ever set).
        self.listened = bytes(BUCKETS // 8)
        _LIVE.add(self)

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def write(self, fn: Callable[[Write], T]) -> T:
        """``fn(write)`` in one ``BEGIN IMMEDIATE`` transaction, committed if it returns, rolled back if it raises.

        A plain function rather than a context manager: this is every write's
        path, and each layer of generator costs a few microseconds.
        """
        with self._mutex:
            self._check()
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
        with self._mutex, translate():
            self._check()
            db = self.conn
            self.gate.run(lambda: db.execute("BEGIN"))
            try:
                yield db
            finally:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("COMMIT")

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(conn)``: a read of one statement (its own transaction), retried while the file is busy."""
        with self._mutex:
            self._check()
            try:
                try:
                    return fn(self.conn)
                except sqlite3.OperationalError as exc:
                    if not is_busy(exc):
                        raise
                return self.gate.wait(lambda: fn(self.conn))
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite: {exc}") from exc

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of one read statement."""
        return self.run(lambda conn: conn.execute(sql, params).fetchall())

    def data_version(self) -> int:
        """Changes when another connection commits (SQLite's ``PRAGMA data_version``)."""
        return self.run(lambda conn: int(conn.execute("PRAGMA data_version").fetchone()[0]))

    def close(self) -> None:
        with self._mutex:
            self._close()

    def _close(self) -> None:
        self.gate.close()
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()
        _LIVE.discard(self)

    def _check(self) -> None:
        if self.forked:
            raise StoreClosed("this connection was opened before fork(), in the parent process")


# -- fork ------------------------------------------------------------------------------------

_LIVE: weakref.WeakSet[Db] = weakref.WeakSet()
_HELD: list[Db] = []


def _before_fork() -> None:
    for db in list(_LIVE):
        db._mutex.acquire()
        _HELD.append(db)


def _after_fork_in_parent() -> None:
    for db in _HELD:
        db._mutex.release()
    _HELD.clear()


def _after_fork_in_child() -> None:
    for db in _HELD:
        db.forked = True
        db._close()
        db._mutex = threading.Lock()
    _HELD.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)
