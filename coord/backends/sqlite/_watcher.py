"""The watch thread: one per Store while it has watches, fed from the change log when the kernel says so.

It sleeps in ``select`` on an inotify descriptor that listens to the wake-up
buckets of its watches' keys (``_files``) and to the owners' folder, and on
a pipe (stop, or a new watch to catch up). It wakes:

- when a writer touched a bucket of one of its watches (after its COMMIT):
  it reads the change log since the oldest revision its watches delivered
  and hands each watch its events;
- when an owner's lock file was closed for the last time (its process
  exited, or closed its Store): it probes the file and, if the owner is
  dead, reaps its leases (their keys go, with logged deletes), which feeds
  the watches of those keys at once;
- at the earliest deadline in the file, to reap what expired;
- every ``poll_interval`` (a safety net: a writer killed between its COMMIT
  and its touch wakes nobody) and every ``SWEEP`` seconds, to probe every
  owner that holds a lease. Without inotify (not Linux), ``poll_interval``
  is the poll that finds changes, 5 ms by default.

A watch that fell behind the log (its next revision was trimmed) re-syncs:
a put for each key under it that changed since, and a delete for each key it
had delivered that is gone, so it never silently skips a delete.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
import sqlite3
import threading
from collections.abc import Callable

from ..._errors import CoordError, StoreUnavailable
from ..._store import matches
from ..._types import Event
from ..._watch import WatchFeed
from . import _host, _reads
from ._db import Db
from ._files import Files, bucket
from ._inotify import IN_ATTRIB, IN_CLOSE_WRITE, IN_Q_OVERFLOW, Inotify
from ._writes import Write

__all__ = ["SWEEP", "Watcher"]

log = logging.getLogger("coord.sqlite")

#: How often every owner holding a lease is probed, besides the wake-up on its exit (seconds).
SWEEP = 1.0
#: After a failed pass (the file busy past the timeout, say), try again this soon.
_RETRY = 0.05


class _Watched:
    """What the thread knows of one watch: its key or prefix, and the keys it delivered as present."""

    __slots__ = ("key", "present", "tree")

    def __init__(self, key: str, tree: bool, present: set[str]) -> None:
        self.key = key
        self.tree = tree
        self.present = present

    def note(self, event: Event) -> None:
        if event.type == "put":
            self.present.add(event.key)
        else:
            self.present.discard(event.key)


class Watcher:
    """Feeds the watches of one Store (see the module docstring)."""

    def __init__(self, open_db: Callable[[], Db], files: Files, poll_interval: float, me: Callable[[], str | None]):
        self._open_db = open_db
        self._files = files
        self._me = me
        self._lock = threading.Lock()
        self._feeds: dict[WatchFeed, _Watched] = {}
        self._buckets: dict[int, list[int]] = {}  # bucket -> [watch descriptor, listeners]
        self._inotify = Inotify.open()
        self._owners_wd = -1
        if self._inotify is not None:
            try:
                self._owners_wd = self._inotify.add(str(files.owners), IN_CLOSE_WRITE)
            except OSError:
                self._inotify.close()
                self._inotify = None
        self._poll = poll_interval
        self._pipe = os.pipe()
        for fd in self._pipe:
            os.set_blocking(fd, False)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="coord-sqlite-watch", daemon=True)
        self._thread.start()

    @property
    def awake(self) -> bool:
        """Whether wake-ups come from the kernel (else the thread polls)."""
        return self._inotify is not None

    # -- the Store's side -----------------------------------------------------

    def listen(self, key: str) -> int | None:
        """Listen to the bucket of ``key`` (a key, or a tree watch's prefix): before reading where a watch starts.

        Returns the bucket's number, which the caller marks in the file (``Write.listen``) so that writers
        touch it; ``None`` without inotify.
        """
        if self._inotify is None:
            return None
        number = bucket(key)
        with self._lock:
            entry = self._buckets.get(number)
            if entry is None:
                wd = self._inotify.add(self._files.bucket_path(number), IN_ATTRIB)
                self._buckets[number] = [wd, 1]
            else:
                entry[1] += 1
        return number

    def add(self, feed: WatchFeed, key: str, tree: bool, present: set[str]) -> None:
        with self._lock:
            self._feeds[feed] = _Watched(key, tree, present)

    def remove(self, feed: WatchFeed) -> None:
        with self._lock:
            watched = self._feeds.pop(feed, None)
            if watched is None or self._inotify is None:
                return
            number = bucket(watched.key)
            entry = self._buckets.get(number)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._buckets[number]
                    with contextlib.suppress(OSError):
                        self._inotify.remove(entry[0])

    def poke(self) -> None:
        """Make the thread look at the log now (a new watch started behind the head)."""
        with contextlib.suppress(OSError):
            os.write(self._pipe[1], b"\0")

    def close(self) -> None:
        self._stopping = True
        self.poke()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._release()

    def feeds(self) -> list[tuple[WatchFeed, str, bool, set[str]]]:
        with self._lock:
            return [(feed, w.key, w.tree, w.present) for feed, w in self._feeds.items()]

    def forget(self) -> None:
        """In a forked child: drop this (parent's) thread's descriptors; a new Watcher takes the feeds."""
        self._stopping = True
        self._release()

    def _release(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
        for fd in self._pipe:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pipe = (-1, -1)

    # -- the thread -----------------------------------------------------------

    def _run(self) -> None:
        db: Db | None = None
        try:
            db = self._open_db()
            self._loop(db)
        except Exception:  # never die silently: the watches would hang
            log.exception("the sqlite watch thread failed")
            with self._lock:
                feeds = list(self._feeds)
            for feed in feeds:
                feed.fail(StoreUnavailable("the watch thread failed; see the log", backend="sqlite"))
        finally:
            if db is not None:
                db.close()

    def _loop(self, db: Db) -> None:
        now = _host.now()
        next_poll = next_sweep = next_expiry = now  # a first pass at once: sweep, reap, catch up
        version = -1
        while not self._stopping:
            timeout = max(0.0, min(next_poll, next_sweep, next_expiry) - _host.now())
            readers = [self._pipe[0]] if self._inotify is None else [self._pipe[0], self._inotify.fd]
            ready, _, _ = select.select(readers, [], [], timeout)
            if self._stopping:
                return
            poked = False
            if self._pipe[0] in ready:
                with contextlib.suppress(OSError):
                    poked = bool(os.read(self._pipe[0], 4096))
            events = self._inotify.read() if self._inotify is not None else []
            now = _host.now()
            try:
                overflow = any(mask & IN_Q_OVERFLOW for _, mask, _ in events)
                exited = {name for wd, _, name in events if wd == self._owners_wd and name}
                if overflow or now >= next_sweep:
                    exited = self._owners(db)
                    next_sweep = now + SWEEP
                # This thread's own writes do not change its connection's data_version: deliver after them.
                wrote = bool(exited) and self._reap_owners(db, exited)
                if now >= next_expiry:
                    wrote = self._reap_expired(db, now) or wrote
                polled = now >= next_poll
                if polled:
                    next_poll = now + self._poll
                    seen = db.data_version()
                    polled, version = seen != version, seen
                if poked or events or wrote or polled or now >= next_expiry:
                    next_expiry = self._deliver(db)
            except (CoordError, sqlite3.Error) as exc:
                log.debug("sqlite watch pass failed (%s); retrying", exc)
                next_poll = now + _RETRY

    def _owners(self, db: Db) -> set[str]:
        me = self._me()
        rows = db.read("SELECT DISTINCT owner FROM leases WHERE owner IS NOT NULL")
        return {row[0] for row in rows if row[0] != me}

    def _reap_owners(self, db: Db, names: set[str]) -> bool:
        """Reap the leases of every owner in ``names`` that is dead; whether anything was written."""
        wrote = False
        for name in sorted(names):
            if name == self._me():
                continue
            wrote = db.write(functools.partial(_reap_owner, name)) or wrote
        return wrote

    def _reap_expired(self, db: Db, now: float) -> bool:
        if db.read("SELECT next_expiry FROM state")[0][0] > now:
            return False
        return db.write(lambda write: bool(write.changed))  # a write reaps what is due before anything else

    def _deliver(self, db: Db) -> float:
        """Hand every watch the changes after its revision; the earliest deadline in the file (a lower bound)."""
        with self._lock:
            feeds = list(self._feeds.items())
        with db.snapshot() as conn:
            revision, compacted, next_expiry = conn.execute(
                "SELECT revision, compacted, next_expiry FROM state"
            ).fetchone()
            live = [(feed, w) for feed, w in feeds if compacted <= feed.revision < revision]
            if live:
                self._replay(conn, live, min(feed.revision for feed, _ in live), revision)
            for feed, watched in feeds:
                if feed.revision < compacted:
                    _resync(conn, feed, watched, revision)
        return float(next_expiry)

    def _replay(
        self, conn: sqlite3.Connection, live: list[tuple[WatchFeed, _Watched]], start: int, revision: int
    ) -> None:
        keyed: dict[str, list[tuple[WatchFeed, _Watched]]] = {}
        trees: list[tuple[WatchFeed, _Watched]] = []
        for feed, watched in live:
            if watched.tree:
                trees.append((feed, watched))
            else:
                keyed.setdefault(watched.key, []).append((feed, watched))
        rows = conn.execute(
            "SELECT revision, kind, key, value FROM changes WHERE revision > ? ORDER BY revision", (start,)
        )
        for rev, kind, key, value in rows:
            targets = keyed.get(key, [])
            if trees:
                targets = targets + [(feed, w) for feed, w in trees if matches(key, w.key, True)]
            for feed, watched in targets:
                if rev > feed.revision:
                    event = Event(kind, key, None if value is None else bytes(value), rev)
                    feed.emit(event)
                    watched.note(event)
        for feed, _ in live:
            feed.revision = max(feed.revision, revision)


def _reap_owner(name: str, write: Write) -> bool:
    return write.reap_owner_if_dead(name) and bool(write.changed)


def _resync(conn: sqlite3.Connection, feed: WatchFeed, watched: _Watched, revision: int) -> None:
    """Catch a watch up from the current state: puts for what changed since it fell behind, deletes for what went."""
    rows = _reads.current(conn, watched.key, watched.tree, _host.now())
    now_present = set()
    for key, value, rev in sorted(rows, key=lambda row: row[2]):
        now_present.add(key)
        if rev > feed.revision:
            feed.emit(Event("put", key, bytes(value), rev))
    for key in sorted(watched.present - now_present):
        feed.emit(Event("delete", key, None, revision))
    watched.present = now_present
    feed.revision = revision
