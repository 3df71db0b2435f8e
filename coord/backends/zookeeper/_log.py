"""The change log under ROOT/log: how watches read it (tail, replay, snapshot) and how it is trimmed.

Watches read the log, not the znodes, because ZooKeeper's one-shot watches
coalesce changes: every write appends one entry in the same multi-op, and
that entry's czxid is the write's zxid, so entries come in revision order.
The log is tailed by a child watch on ROOT/log, re-armed on every read.

A new watch starts with a snapshot of the current state, and remembers what
the snapshot reflects (each key's mzxid, each directory's pzxid, the last
zxid seen) so that the log entries it already covers are not delivered
again. ``start_revision`` replays from the log while the log still holds
that revision. When the entries (or the chunks of a value) a watch needs
were trimmed before it read them, the watch re-syncs from the current state
rather than skip silently.

Trimming keeps the newest ``history`` entries. It first records in ROOT/log's
data the zxid up to which entries may be gone (so a replay never trusts a log
that lost entries), then deletes, then frees the chunks no watch can need
any more (see ``_blobs``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kazoo.exceptions import BadVersionError, NoNodeError

from ..._store import matches
from ..._types import Event
from ..._watch import WatchFeed
from . import _reads as reads
from ._blobs import Blobs
from ._boundary import Boundary, Retry, Try
from ._keys import Found, Keys
from ._layout import Layout, Node, read_entry

Track = Callable[[str, Node, Any], None]  # told of every put a watch delivered: (key, node, stat)


@dataclass(eq=False)
class _Live:
    """A running watch, and (just after its snapshot) what the snapshot already reflects."""

    key: str
    tree: bool
    marks: dict[str, int] | None = None  # key -> mzxid it was read at
    dirs: dict[str, int] = field(default_factory=dict)  # directory -> pzxid it was listed at
    until: int = 0  # log entries after this zxid are all news

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


class Log:
    """The watches of one Store and where they are in the log; used from the worker thread only (but ``forget``)."""

    def __init__(
        self, zk: Boundary, layout: Layout, keys: Keys, blobs: Blobs, history: int, track: Track, on_event: Any
    ) -> None:
        self._zk, self._layout, self._keys, self._blobs = zk, layout, keys, blobs
        self._history, self._track, self._on_event = history, track, on_event
        self._lock = threading.Lock()  # guards _live: watches end on any thread
        self._live: dict[WatchFeed, _Live] = {}
        self.seq: int | None = None  # the last entry delivered; None while nothing is watched

    def watched(self) -> list[tuple[WatchFeed, _Live]]:
        with self._lock:
            return list(self._live.items())

    def forget(self, watch: WatchFeed) -> None:
        with self._lock:
            self._live.pop(watch, None)

    def tail(self) -> None:
        """Deliver the entries written since the last call, in order."""
        self._zk.call(self._tail)

    def _tail(self, t: Try) -> None:
        client = self._zk.client
        seqs = self._layout.seqs(t.wait(client.get_children_async(self._layout.log, watch=self._on_event)))
        if self.seq is None:
            self.seq = seqs[-1] if seqs else -1
            return
        fresh = [(seq, client.get_async(self._layout.entry(seq))) for seq in seqs if seq > self.seq]
        if not fresh:
            return
        lost = self.seq >= 0 and self.seq not in seqs and seqs[0] > self.seq
        for seq, result in fresh:
            try:
                data, stat = t.wait(result)
                if not lost:
                    self._deliver(t, data, stat, self.watched())
            except (NoNodeError, Retry):  # the entry, or the chunks of its value, trimmed
                lost = True
                break
            self.seq = seq
        if lost:  # trimmed before we read it: re-sync every watch from the current state
            for watch, live in self.watched():
                self._snapshot(t, watch, live)
            self.seq = seqs[-1]  # only now: a retry after a failed snapshot must re-sync again

    def _deliver(self, t: Try, data: bytes, stat: Any, watches: list[tuple[WatchFeed, _Live]]) -> None:
        key, node = read_entry(data)
        event: Event | None = None
        for watch, live in watches:
            if not matches(key, live.key, live.tree) or live.seen(key, stat.czxid):
                continue
            if event is None:  # read the value (maybe chunks) once, and before emitting anything
                value = None if node is None else self._blobs.read(t, node)
                event = Event("delete" if node is None else "put", key, value, stat.czxid)
            watch.emit(event)
        if event is not None and node is not None:
            self._track(key, node, stat)

    def start(self, watch: WatchFeed, key: str, tree: bool, start: int | None) -> None:
        """Bring a new watch up to date (snapshot or replay), then feed it from the log."""
        self._zk.fresh(self._zk.client)  # the snapshot must see this Store's writes through its other sessions
        self.tail()  # so the new watch starts from the log's current end
        live = _Live(key, tree)

        def attempt(t: Try) -> None:
            if start is not None:
                marker = t.wait(self._zk.client.get_async(self._layout.log))[0]
                if start > int(marker or b"0"):
                    self._replay(t, watch, live, start)
                    return
            self._snapshot(t, watch, live)

        self._zk.call(attempt)
        with self._lock:
            self._live[watch] = live

    def _replay(self, t: Try, watch: WatchFeed, live: _Live, start: int) -> None:
        client = self._zk.client
        seqs = self._layout.seqs(t.wait(client.get_children_async(self._layout.log)))
        seqs = [seq for seq in seqs if self.seq is not None and seq <= self.seq]
        stats = [(seq, client.exists_async(self._layout.entry(seq))) for seq in seqs]
        wanted = [seq for seq, result in stats if (stat := t.wait(result)) is not None and stat.czxid >= start]
        for result in [client.get_async(self._layout.entry(seq)) for seq in wanted]:
            try:
                data, stat = t.wait(result)
                self._deliver(t, data, stat, [(watch, live)])
            except (NoNodeError, Retry):  # the entry, or its value's chunks, trimmed meanwhile: re-sync
                self._snapshot(t, watch, live)
                return
            watch.revision = max(watch.revision, stat.czxid)

    def _snapshot(self, t: Try, watch: WatchFeed, live: _Live) -> None:
        """Emit the current state, and remember what it reflects so the log does not repeat it."""
        found, dirs = self._read(t, live)
        live.marks = {k: stat.mzxid for k, _, stat in found}
        live.dirs = dirs
        live.until = self._zk.client.last_zxid
        nodes = sorted(found, key=lambda f: f[0])
        # Every value read before the first event: a retry (chunks freed meanwhile) must not repeat any.
        events = [Event("put", k, self._blobs.read(t, n), stat.mzxid) for k, n, stat in nodes if not n.expired(stat)]
        for event in events:
            watch.emit(event)
        for k, node, stat in nodes:
            self._track(k, node, stat)
        watch.revision = max(watch.revision, live.until)

    def _read(self, t: Try, live: _Live) -> tuple[list[Found], dict[str, int]]:
        """The watch's keys, and the pzxid of each directory a key absent from them would have been listed in."""
        parts = live.key.split("/")
        above = ["/".join(parts[:i]) for i in range(len(parts))]
        chain = reads.send(self._zk.client, [("data", self._layout.dir(a)) for a in above])
        if live.tree:
            found, dirs = self._keys.scan(t, live.key)
        else:
            read = self._keys.read(t, live.key)
            dirs, found = {}, [] if read is None else [(live.key, *read)]
        for a, result in zip(above, chain.wait(t), strict=True):
            if not reads.absent(result):
                dirs.setdefault(a, result[1].pzxid)
        return found, dirs

    def trim(self, t: Try) -> None:
        """Keep the newest ``history`` entries; record the zxid up to which older ones may be gone."""
        client, log = self._zk.client, self._layout.log
        names = t.wait(client.get_children_async(log))
        seqs = self._layout.seqs(names)
        victims = seqs[: max(0, len(seqs) - self._history)]
        if not victims:
            return
        last = t.wait(client.exists_async(self._layout.entry(victims[-1])))
        if last is None:
            return
        marker, stat = t.wait(client.get_async(log))
        if last.czxid > int(marker or b"0"):
            try:  # before deleting anything, so a replay never trusts a log that lost entries
                t.wait(client.set_async(log, str(last.czxid).encode(), stat.version))
            except BadVersionError:
                return  # another trimmer is at it
        for result in [client.delete_async(self._layout.entry(seq)) for seq in victims]:
            with contextlib.suppress(NoNodeError):
                t.wait(result)
        self._blobs.free_older(t, names, victims[-1])
