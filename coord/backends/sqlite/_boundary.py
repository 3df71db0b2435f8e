"""The one place SQLite's errors become coord's, and where a busy database is waited for.

Connections run with ``busy_timeout=0``: SQLite's own busy handler sleeps
1, 2, 5, 10... ms between tries, which caps a contended lock at a few
hundred handoffs a second. Instead, a caller that finds the write lock
taken waits for the committing writer's touch of the gate file
(``_files``), through inotify, and tries again at once; without inotify it
retries every few hundred microseconds. Either way it gives up after the
store's ``timeout`` with ``StoreUnavailable``.
"""

from __future__ import annotations

import contextlib
import select
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from ..._errors import ConfigurationError, StoreUnavailable
from . import _host
from ._inotify import IN_ATTRIB, Inotify

__all__ = ["Gate", "connect", "is_busy", "translate"]

T = TypeVar("T")

_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
#: Without a wake-up, between tries (seconds); with one, at most this long between tries too
#: (a writer killed between COMMIT and its touch wakes nobody).
_RETRY = 0.0005
_RETRY_AWAKE = 0.01


def is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    text = str(exc)
    return "locked" in text or "busy" in text


@contextlib.contextmanager
def translate() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"sqlite: {exc}") from exc


def connect(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), for any thread of this process.

    It waits for a busy file SQLite's way (``timeout``) while the store is
    opened; ``open_database`` then turns that off for the gate to do.
    """
    try:
        conn = sqlite3.connect(
            path, timeout=timeout, isolation_level=None, check_same_thread=False, cached_statements=64
        )
    except sqlite3.Error as exc:
        raise ConfigurationError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # see _db.CHECKPOINT_EVERY
        conn.execute("PRAGMA journal_size_limit=4194304")  # the WAL shrinks back to 4 MiB after a burst
    except sqlite3.Error as exc:
        conn.close()
        raise ConfigurationError(f"{path} is not a coord sqlite store: {exc}") from exc
    return conn


class Gate:
    """Runs a statement that may find the database busy, waiting for a writer's COMMIT between tries."""

    def __init__(self, gate_file: str, timeout: float) -> None:
        self._file = gate_file
        self._timeout = timeout
        self._inotify: Inotify | None = None
        self._listening = False

    def run(self, statement: Callable[[], T]) -> T:
        try:
            return statement()
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        return self.wait(statement)

    def wait(self, statement: Callable[[], T]) -> T:
        """Try ``statement`` again until it finds the file free, waking at each COMMIT; after a busy first try."""
        deadline = _host.now() + self._timeout
        inotify = self._listen()
        while True:
            if inotify is not None:
                inotify.read()  # drain, then try: a COMMIT after this try wakes the select below
            try:
                return statement()
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                left = deadline - _host.now()
                if left <= 0:
                    raise
            if inotify is None:
                time.sleep(min(_RETRY, left))
            else:
                select.select([inotify.fd], [], [], min(_RETRY_AWAKE, left))

    def _listen(self) -> Inotify | None:
        if not self._listening:
            self._listening = True
            self._inotify = Inotify.open()
            if self._inotify is not None:
                try:
                    self._inotify.add(self._file, IN_ATTRIB)
                except OSError:
                    self._inotify.close()
                    self._inotify = None
        return self._inotify

    def close(self) -> None:
        """Release the wake-up descriptor (also in a forked child, whose copy it is)."""
        if self._inotify is not None:
            self._inotify.close()
        self._inotify = None
        self._listening = False
