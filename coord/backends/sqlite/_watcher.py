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
from typing import Literal

from ..._errors import CoordError, StoreUnavailable
from ..._store import matches
from ..._types import Event
from ..._watch import WatchFeed
from . import _host, _reads
from ._db import Db
from ._files import Files, bucket, probe
from ._inotify import IN_ATTRIB, IN_CLOSE_WRITE, IN_Q_OVERFLOW, Inotify
from ._writes import Write

__all__ = ["SWEEP", "Watcher"]

log = logging.getLogger("coord.sqlite")

#: How often every owner holding a lease is probed, besides the wake-up on its exit (seconds).
SWEEP = 1.0
#: After a failed pass (the file busy past the timeout, say), try again this soon.
_RETRY = 0.05
#: The state row (head revision, compacted, next_expiry), then the log after a revision.
_TAIL = (
    "SELECT revision, NULL, compacted, next_expiry FROM state"
    " UNION ALL SELECT revision, kind, key, value FROM changes WHERE revision > ?"
)
_NO_TAIL = 2**63 - 1


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
        self._wds: dict[int, int] = {}  # watch descriptor -> bucket
        self._idle: set[int] = set()  # watch descriptors of buckets no watch needs any more
        self._passing = False  # a pass is feeding the watches it listed
        self._passed = -1  # the revision the last pass read up to
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

    # -- the Store's side -----------------------------------------------------

    def listen(self, key: str, tree: bool) -> int | None:
        """Listen to the bucket of ``key`` (a key, or a tree watch's prefix): before reading where a watch starts.

        Returns the bucket's number, which the caller marks in the file (``Write.listen``) so that writers
        touch it; ``None`` without inotify.
        """
        if self._inotify is None:
            return None
        number = bucket(key, tree)
        with self._lock:
            entry = self._buckets.get(number)
            if entry is None:
                wd = self._inotify.add(self._files.bucket_path(number), IN_ATTRIB)
                self._buckets[number] = [wd, 1]
                self._wds[wd] = number
            else:
                entry[1] += 1
                self._idle.discard(entry[0])
        return number

    def add(self, feed: WatchFeed, key: str, tree: bool, present: set[str]) -> bool:
        """Start feeding ``feed`` from ``feed.revision``; whether the thread must be poked to catch it up.

        It must if a pass is running (it took its list of watches before this
        one) or the last pass read past the watch's start (a commit in between
        woke the thread before the watch was here, and will not wake it again).
        """
        with self._lock:
            self._feeds[feed] = _Watched(key, tree, present)
            return self._passing or self._passed > feed.revision

    def remove(self, feed: WatchFeed) -> None:
        """Stop feeding ``feed``; the thread stops listening to its bucket if no other watch needs it.

        Not here: ``inotify_rm_watch`` waits for the kernel (hundreds of
        microseconds), and a watch is closed on the way to what its owner does
        next (a lock's waiter lists the queue).
        """
        with self._lock:
            watched = self._feeds.pop(feed, None)
            if watched is None or self._inotify is None:
                return
            entry = self._buckets.get(bucket(watched.key, watched.tree))
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    self._idle.add(entry[0])

    def _let_go(self) -> None:
        """Stop listening to the buckets no watch needs any more (in the thread)."""
        assert self._inotify is not None
        with self._lock:
            idle, self._idle = self._idle, set()
            for wd in idle:
                number = self._wds.get(wd)
                if number is not None and self._buckets[number][1] <= 0:
                    del self._buckets[number], self._wds[wd]
                    with contextlib.suppress(OSError):
                        self._inotify.remove(wd)

    def _heard(self, events: list[tuple[int, int, str]]) -> bool:
        """Whether ``events`` concern a watch: a bucket with watches, an owner, an overflow."""
        with self._lock:
            return any(
                wd == self._owners_wd or mask & IN_Q_OVERFLOW or (wd in self._wds and wd not in self._idle)
                for wd, mask, _ in events
            )

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
            if self._idle:
                self._let_go()
            if events and not poked and not self._heard(events):
                continue  # only buckets that no watch needs any more
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
        """Reap the leases of every owner in ``names`` that is dead; whether anything was written.

        Each is probed first outside any transaction (an open, a flock, a
        close): a live owner costs no write. A dead one's file is gone after
        its probe, which the write's own probe reads as dead too.
        """
        wrote = False
        me = self._me()
        for name in sorted(names):
            if name == me:
                continue
            with probe(self._files.owners, name) as dead:
                pass
            if dead:
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
            self._passing = True
        revision = -1
        try:
            start = min((feed.revision for feed, _ in feeds), default=_NO_TAIL)
            # One statement, so one snapshot: the state row, and the log after the oldest watch.
            rows = db.run(lambda conn: conn.execute(_TAIL, (start,)).fetchall())
            head = next(row for row in rows if row[1] is None)
            revision, compacted, next_expiry = head[0], head[2], head[3]
            live = [(feed, w) for feed, w in feeds if compacted <= feed.revision < revision]
            if live:
                changes = sorted(row for row in rows if row[1] is not None)
                self._replay(changes, live, revision)
            behind = [(feed, w) for feed, w in feeds if feed.revision < compacted]
            if behind:
                revision = self._resync(db, behind)
        finally:
            with self._lock:
                self._passing = False
                self._passed = max(self._passed, revision)
        return float(next_expiry)

    def _resync(self, db: Db, behind: list[tuple[WatchFeed, _Watched]]) -> int:
        with db.snapshot() as conn:
            revision: int = conn.execute("SELECT revision FROM state").fetchone()[0]
            for feed, watched in behind:
                _resync(conn, feed, watched, revision)
        return revision

    def _replay(
        self,
        changes: list[tuple[int, Literal["put", "delete"], str, bytes | None]],
        live: list[tuple[WatchFeed, _Watched]],
        revision: int,
    ) -> None:
        keyed: dict[str, list[tuple[WatchFeed, _Watched]]] = {}
        trees: list[tuple[WatchFeed, _Watched]] = []
        for feed, watched in live:
            if watched.tree:
                trees.append((feed, watched))
            else:
                keyed.setdefault(watched.key, []).append((feed, watched))
        for rev, kind, key, value in changes:
            targets = keyed.get(key, [])
            if trees:
                targets = targets + [(feed, w) for feed, w in trees if matches(key, w.key, True)]
            for feed, watched in targets:
                if rev > feed.revision:
                    event = Event(kind, key, value, rev)
                    feed.emit(event)
                    watched.note(event)
        for feed, _ in live:
            feed.revision = max(feed.revision, revision)


def _reap_owner(name: str, write: Write) -> bool:
    return write.reap_owner_if_dead(name) and bool(write.changed)


def _resync(conn: sqlite3.Connection, feed: WatchFeed, watched: _Watched, revision: int) -> None:
    """Catch a watch up from the current state: puts for what changed since it fell behind, deletes for what went."""
    feed.resynced()
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
