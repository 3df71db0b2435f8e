"""The change log under ROOT/log: how watches read it (notifications, replay, snapshot) and how it is trimmed.

Watches read the log, not the znodes, because ZooKeeper's one-shot watches
coalesce changes: every write appends one entry in the same multi-op, and
that entry's czxid is the write's zxid, so entries come in revision order.
An entry's name carries a hash of its key (``_layout``), so a Store whose
watches each follow one key reads only the entries of those keys.

While a Store has watches, the server announces each new entry by name
(``_notify``: a persistent recursive watch on ROOT/log), and the entries a
watch may want are read in one request per batch. After a reconnect (the
server forgot the watch) the log is listed once, from the last entry
announced. A server older than 3.6 has no persistent watches: there the log
is tailed by a child watch, re-armed by listing the log on every change.

A new watch starts with a snapshot of the current state, and remembers what
the snapshot reflects (each key's mzxid, each directory's pzxid, the last
zxid seen) so that the log entries it already covers are not delivered
again. ``start_revision`` replays from the log while the log still holds
that revision. When the entries (or the chunks of a value) a watch needs
were trimmed before it read them, the watch re-syncs from the current state
rather than skip silently: a put for every key that changed since it last
heard of it, and a delete for every key it had and that is gone.

Trimming keeps the newest ``history`` entries: one multi-op records in
ROOT/log's data the zxid up to which entries may be gone (so a replay never
trusts a log that lost entries) and deletes them; then the chunks no watch
can need any more are freed (see ``_blobs``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NoNodeError, UnimplementedError

from ..._store import matches
from ..._types import Event
from ..._watch import WatchFeed
from . import _notify as notify
from . import _reads as reads
from ._blobs import Blobs
from ._boundary import Boundary, Failed, Retry, Try
from ._keys import Found, Keys
from ._layout import Layout, Node, decode, key_hash, read_entry

Track = Callable[[str, Node, Any], None]  # told of every put a watch delivered: (key, node, stat)


@dataclass(eq=False)
class _Live:
    """A running watch, and (just after its snapshot) what the snapshot already reflects."""

    key: str
    tree: bool
    marks: dict[str, int] | None = None  # key -> mzxid it was read at
    dirs: dict[str, int] = field(default_factory=dict)  # directory -> pzxid it was listed at
    until: int = 0  # log entries after this zxid are all news
    after: int = -1  # log entries up to this sequence number were replayed to it
    has: dict[str, int] = field(default_factory=dict)  # key -> revision of the last put it got, for re-syncs

    def seen(self, key: str, zxid: int) -> bool:
        if self.marks is None:
            return False
        if zxid > self.until:
            self.marks = None
            return False
        if key in self.marks:
            return zxid <= self.marks[key]
        parent = key
        while parent:
            parent = parent.rpartition("/")[0]
            if parent in self.dirs:
                return zxid <= self.dirs[parent]
        return False

    def emit(self, watch: WatchFeed, event: Event) -> None:
        watch.emit(event)
        if event.type == "put":
            self.has[event.key] = event.revision
        else:
            self.has.pop(event.key, None)


class Log:
    """The watches of one Store and where they are in the log; used from the worker thread only (but where noted)."""

    def __init__(
        self, zk: Boundary, layout: Layout, keys: Keys, blobs: Blobs, history: int, track: Track, on_event: Any
    ) -> None:
        self._zk, self._layout, self._keys, self._blobs = zk, layout, keys, blobs
        self._history, self._track, self._on_event = history, track, on_event
        self._lock = threading.Lock()  # guards _live and _announced: watches end on any thread, kazoo announces
        self._live: dict[WatchFeed, _Live] = {}
        self._relevant: frozenset[str] | None = frozenset()  # hashes of the watched keys; None: every entry
        self._announced: list[tuple[int, str, reads.Pending | None]] = []  # entries announced, being read
        self.seq: int | None = None  # the log's position: the last entry read or passed over; None if unknown
        self._heard = -1  # the newest entry announced
        self.persistent: bool | None = None  # whether the server keeps persistent watches (None: not tried yet)
        self.listening = False  # whether the server announces entries to this Store now

    def watched(self) -> list[tuple[WatchFeed, _Live]]:
        with self._lock:
            return list(self._live.items())

    def forget(self, watch: WatchFeed) -> None:
        """Stop feeding ``watch`` (any thread)."""
        with self._lock:
            self._live.pop(watch, None)
            self._relevance()

    def _relevance(self) -> None:
        lives = self._live.values()
        self._relevant = None if any(live.tree for live in lives) else frozenset(key_hash(live.key) for live in lives)

    def announce(self, name: str) -> bool:
        """kazoo's I/O thread: entry ``name`` was created. Whether a read of the announced entries is now due.

        An entry a watch may want is read at once, from this thread: its
        reply is on its way before the worker thread wakes up.
        """
        parsed = self._layout.parse(name)
        if parsed is None or parsed[0] != "e":
            return False
        _, digest, seq = parsed
        with self._lock:
            self._heard = max(self._heard, seq)
            if not _wanted(digest, self._relevant):
                return False  # no watch of this Store wants it
            sent = reads.send(self._zk.client, [("data", f"{self._layout.log}/{name}")])
            self._announced.append((seq, name, sent))
            return len(self._announced) == 1

    def read_announced(self) -> None:
        """Deliver the entries announced since the last call."""
        with self._lock:
            announced, self._announced = self._announced, []
        if announced and self.watched():
            self._zk.call(lambda t: self._read(t, announced))

    def _read(self, t: Try, entries: list[tuple[int, str, reads.Pending | None]]) -> None:
        """Deliver ``entries`` (in log order) newer than the position; re-sync if one was trimmed before we read it."""
        entries = [entry for entry in entries if self.seq is None or entry[0] > self.seq]
        if t.retried or any(sent is None for _, _, sent in entries):  # read them now (again, if a try failed)
            pending = reads.send(self._zk.client, [("data", f"{self._layout.log}/{name}") for _, name, _ in entries])
            results = pending.wait(t)
        else:
            results = [sent.wait(t)[0] for _, _, sent in entries if sent is not None]
        watches = self.watched()
        for (seq, _, _), result in zip(entries, results, strict=True):
            try:
                if reads.absent(result):
                    raise Retry("trimmed")
                self._deliver(t, seq, result[0], result[1], watches)
            except Retry:  # the entry, or the chunks of its value, trimmed: re-sync every watch from the current state
                self._resync(t)
                self.seq = max(self._heard, entries[-1][0])  # only now: a retry after a failed re-sync re-syncs again
                return
            self.seq = seq

    def catch_up(self) -> None:
        """After a reconnect (or, before 3.6, on every change): deliver what the log holds past the position."""
        self._zk.call(self._catch_up)

    def _catch_up(self, t: Try) -> None:
        client, log = self._zk.client, self._layout.log
        if self.persistent and self.listening:
            notify.add(client, log)  # the server forgot it with the connection; entries from now on are announced
        watch = None if self.persistent else self._on_event  # before 3.6: the child watch, re-armed on every listing
        entries = self._layout.entries(t.wait(client.get_children_async(log, watch=watch)))
        known = [p for p in (self.seq, self._heard) if p is not None and p >= 0]
        position = max(known) if known else self.seq
        if position is None:
            if self.persistent:
                self._resync(t)  # no idea what was missed
            self.seq = entries[-1][0] if entries else -1
            return
        if position >= 0 and entries and entries[0][0] > position and all(seq != position for seq, _, _ in entries):
            self._resync(t)  # trimmed past our position: entries may be lost
            self.seq = entries[-1][0]
            return
        with self._lock:
            relevant = self._relevant
        self._read(
            t, [(seq, name, None) for seq, name, digest in entries if seq > position and _wanted(digest, relevant)]
        )
        self.seq = max(self.seq or -1, entries[-1][0] if entries else -1)

    def _deliver(self, t: Try, seq: int, data: bytes, stat: Any, watches: list[tuple[WatchFeed, _Live]]) -> None:
        key, node = read_entry(data)
        event: Event | None = None
        for watch, live in watches:
            if not matches(key, live.key, live.tree) or seq <= live.after or live.seen(key, stat.czxid):
                continue
            if event is None:  # read the value (maybe chunks) once, and before emitting anything
                value = None if node is None else self._blobs.read(t, node)
                event = Event("delete" if node is None else "put", key, value, stat.czxid)
            live.emit(watch, event)
        if event is not None and node is not None:
            self._track(key, node, stat)

    def start(self, watch: WatchFeed, key: str, tree: bool, start: int | None) -> None:
        """Bring a new watch up to date (snapshot or replay), then feed it from the log."""
        live = _Live(key, tree)
        with self._lock:  # from now on, the entries of its key are read when announced
            self._live[watch] = live
            self._relevance()
        try:
            self._zk.call(lambda t: self._start(t, watch, live, start))
        except BaseException:
            self.forget(watch)
            raise

    def _start(self, t: Try, watch: WatchFeed, live: _Live, start: int | None) -> None:
        client = self._zk.client
        if self.persistent is not False and not self.listening:
            # Confirmed before the snapshot is read (maybe on another session): no entry falls in between.
            try:
                t.wait(notify.add(client, self._layout.log))
                self.persistent = self.listening = True
            except UnimplementedError:  # a server before 3.6: tail by a child watch
                self.persistent = False
        if not self.persistent and self.seq is None:
            self._catch_up(t)  # arms the child watch, and positions the log at its end
        if start is not None:
            marker = t.wait(client.get_async(self._layout.log))[0]
            if start > int(marker or b"0"):
                self._replay(t, watch, live, start)
                return
        self._snapshot(t, watch, live)

    def idle(self) -> None:
        """With no watch left, stop the announcements (they cost this Store a message per write of the root)."""
        if self.listening and not self.watched():
            self.listening = False
            self.seq, self._heard = None, -1
            notify.remove(self._zk.client, self._layout.log)  # no wait: if the reply is lost, so is the watch

    def _replay(self, t: Try, watch: WatchFeed, live: _Live, start: int) -> None:
        client = self._zk.client
        entries = self._layout.entries(t.wait(client.get_children_async(self._layout.log)))
        mine = None if live.tree else key_hash(live.key)
        wanted = [(seq, name) for seq, name, digest in entries if mine is None or digest in (None, mine)]
        results = reads.send(client, [("data", f"{self._layout.log}/{name}") for _, name in wanted]).wait(t)
        for (seq, _), result in zip(wanted, results, strict=True):
            try:
                if reads.absent(result):
                    raise Retry("trimmed")
                if result[1].czxid >= start:
                    self._deliver(t, seq, result[0], result[1], [(watch, live)])
            except Retry:  # the entry, or its value's chunks, trimmed meanwhile: re-sync
                self._snapshot(t, watch, live, resync=True)
                return
            watch.revision = max(watch.revision, result[1].czxid)
        live.after = entries[-1][0] if entries else -1

    def _resync(self, t: Try) -> None:
        for watch, live in self.watched():
            self._snapshot(t, watch, live, resync=True)

    def _snapshot(self, t: Try, watch: WatchFeed, live: _Live, resync: bool = False) -> None:
        """Emit the current state, and remember what it reflects so the log does not repeat it.

        A re-sync emits only what changed since the watch last heard (a put
        for each key written since, a delete for each key gone), as a relist
        does in Kubernetes' informers.
        """
        reader = self._zk.reader()  # it must see this Store's writes through its other sessions
        found, dirs = self._scan(t, live, reader)
        live.marks = {k: stat.mzxid for k, _, stat in found}
        live.dirs = dirs
        live.until = reader.last_zxid
        nodes = sorted((f for f in found if not f[1].expired(f[2])), key=lambda f: f[0])
        if resync:
            watch.resynced()
            nodes = [(k, n, stat) for k, n, stat in nodes if live.has.get(k) != stat.mzxid]
        # Every value read before the first event: a retry (chunks freed meanwhile) must not repeat any.
        events = [Event("put", k, self._blobs.read(t, n), stat.mzxid) for k, n, stat in nodes]
        if resync:
            there = {k for k, _, _ in found}
            events += [Event("delete", k, None, live.until) for k in sorted(live.has) if k not in there]
        for event in events:
            live.emit(watch, event)
        for k, node, stat in found:
            self._track(k, node, stat)
        watch.revision = max(watch.revision, live.until)

    def _scan(self, t: Try, live: _Live, client: KazooClient) -> tuple[list[Found], dict[str, int]]:
        """The watch's keys, and the pzxid of each directory a key absent from them would have been listed in."""
        parts = live.key.split("/")
        above = ["/".join(parts[:i]) for i in range(len(parts))]
        mine = [] if live.tree else [("data", self._layout.paths(live.key).path)]
        chain = reads.send(client, [*mine, *(("data", self._layout.dir(a)) for a in above)])
        found, dirs = self._keys.scan(t, live.key, client) if live.tree else ([], {})
        results = chain.wait(t)
        if mine and not reads.absent(results[0]):
            found = [(live.key, decode(results[0][0]), results[0][1])]
        for a, result in zip(above, results[len(mine) :], strict=True):
            if not reads.absent(result):
                dirs.setdefault(a, result[1].pzxid)
        return found, dirs

    def trim(self, t: Try) -> None:
        """Keep the newest ``history`` entries; record the zxid up to which older ones may be gone."""
        client, log = self._zk.client, self._layout.log
        names = t.wait(client.get_children_async(log))
        entries = self._layout.entries(names)
        victims = [f"{log}/{name}" for _, name, _ in entries[: max(0, len(entries) - self._history)]]
        if not victims:
            return
        last = t.wait(client.exists_async(victims[-1]))
        if last is None:
            return
        marker, stat = t.wait(client.get_async(log))
        mark = [("set", log, str(last.czxid).encode(), stat.version)] if last.czxid > int(marker or b"0") else []
        try:  # the marker and the deletes in one multi-op: a replay never trusts a log that lost entries
            self._zk.commit(t, [*mark, *(("delete", victim) for victim in victims)], count=False)
        except Failed as exc:
            if isinstance(exc.error, BadVersionError):
                return  # another trimmer is at it
            if mark:  # another trimmer deleted some: the marker first, then the rest one by one
                self._zk.commit(t, mark, count=False)
            for result in [client.delete_async(victim) for victim in victims]:
                with contextlib.suppress(NoNodeError):
                    t.wait(result)
        self._blobs.free_older(t, names, entries[len(victims) - 1][0])


def _wanted(digest: str | None, relevant: frozenset[str] | None) -> bool:
    return relevant is None or digest is None or digest in relevant
