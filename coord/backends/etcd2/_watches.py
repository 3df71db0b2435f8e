"""Watches on etcd's v2 API: one long poll at a time per watch, resumed from the index after the last one seen.

A watch of a key polls its file, a watch of a tree polls its directory with
``recursive=true``: ``GET path?wait=true&waitIndex=N`` answers with the first
change at index N or later (at once if etcd's history holds one, else when it
happens), and the next poll asks from that change's index + 1, so nothing is
lost or repeated. Each watch has a thread and a connection of its own (etcd
v2 has no multiplexing); a poll with no news for 30 s is sent again, which
is how a frozen member shows.

A watch starts with a GET of its key or tree (the current state and etcd's
index) and polls from the index after it. etcd answers a delete of a
directory (``delete_tree``) with one event for the directory: the watch
turns it into a delete for each key under it that it had reported present.

etcd keeps only the last 1,000 events. A watch whose next index fell out of
that history (``401 EventIndexCleared``, after an outage or a long idle poll
in a busy cluster) re-syncs from a GET: a put for each key written since its
last event (in index order), then a delete for each key it had reported
present that is gone, at the GET's index. A watch from a ``start_revision``
etcd no longer has starts from the current state.

Keys bound to a lease that died are leftovers until some Store deletes them
(see ``_liveness``): a watch's GET hides them, and the Store deletes the
ones its watches had reported when it learns that their lease died, so a
watch sees the delete as any other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..._clock import Clock
from ..._errors import CoordError, StoreUnavailable
from ..._store import matches
from ..._types import Event, KVPair
from ..._watch import WatchFeed
from ._boundary import BACKEND, INDEX_CLEARED, KEY_NOT_FOUND, Boundary, EtcdError, Idle, Interrupted, Lane, Transient
from ._expiry import Expiries
from ._layout import Layout, pair_of
from ._liveness import POLL

__all__ = ["Watches"]

log = logging.getLogger("coord.etcd2")

#: etcd's index is a uint64: a waitIndex beyond it is refused; no change ever reaches it.
MAX_INDEX = 2**64 - 1
_GONE = frozenset({"delete", "compareAndDelete", "expire"})
_RETRY_FIRST, _RETRY_MAX = 0.05, 1.0


@dataclass(eq=False)
class _Feed:
    """One watch: what it covers, the index to poll from, and the keys it has reported present."""

    watch: WatchFeed
    key: str
    tree: bool
    path: str  # the key's file, or the tree's directory
    next: int  # the first index not looked at
    lane: Lane
    fresh: bool = True  # nothing delivered yet: a re-sync reports every key
    seen: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # key -> (index written, lease)
    hidden: set[str] = field(default_factory=set)  # leftovers a GET hid: their delete is no news
    lease: int | None = None  # a single key's lease, which the Store follows (``_expiry``)
    lock: threading.Lock = field(default_factory=threading.Lock)
    thread: threading.Thread | None = None


class Watches:
    """The watches of one Store.

    ``live(pairs)`` filters leftovers out of what a GET found (see
    ``_liveness``), and ``check(pair)`` has a reported key's lease looked
    at later (a lease that died means the key is deleted).
    """

    def __init__(
        self,
        http: Boundary,
        layout: Layout,
        clock: Clock,
        watch_retry: float,
        live: Callable[[list[KVPair]], list[KVPair]],
        check: Callable[[KVPair], None],
        label: Callable[[str], str | None],
        expiries: Expiries,
    ) -> None:
        self._http = http
        self._layout = layout
        self._clock = clock
        self._watch_retry = watch_retry
        self._live = live
        self._check = check
        self._label = label  # a full key as the Store's user knows it, for errors
        self._expiries = expiries
        self._feeds: dict[WatchFeed, _Feed] = {}
        self._lock = threading.Lock()

    def add(self, watch: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        path = self._layout.dir(key) if tree else self._layout.path(key)
        start = min(MAX_INDEX, max(1, start_revision or 1))
        feed = _Feed(watch, key, tree, path, start, self._http.lane())
        if start_revision is None:
            try:
                self._http.call(lambda _: self._resync(feed))
            except BaseException:
                feed.lane.close()
                self._bind(feed, None, closing=True)
                raise
        else:
            watch.revision = start - 1
        feed.thread = threading.Thread(target=self._run, args=(feed,), name="coord-etcd2-watch", daemon=True)
        with self._lock:
            self._feeds[watch] = feed
        feed.thread.start()

    def remove(self, watch: WatchFeed) -> None:
        with self._lock:
            feed = self._feeds.pop(watch, None)
        if feed is not None:
            feed.lane.close()
            self._bind(feed, None, closing=True)

    def bound_to(self, lease: int) -> list[tuple[str, int]]:
        """The files of the keys the watches reported present bound to ``lease``, and the index each was written at."""
        with self._lock:
            feeds = list(self._feeds.values())
        found = {(key, index) for feed in feeds for key, (index, bound) in list(feed.seen.items()) if bound == lease}
        return sorted((self._layout.path(key), index) for key, index in found)

    def close(self) -> None:
        with self._lock:
            feeds = list(self._feeds.values())
            self._feeds.clear()
        for feed in feeds:
            feed.lane.close()
            self._bind(feed, None, closing=True)

    def _bind(self, feed: _Feed, lease: int | None, *, closing: bool = False) -> None:
        """Follow the lease a single key is now bound to (None: none) instead of the one before."""
        if feed.tree:
            return
        with feed.lock:
            if feed.lease == lease or (feed.lane.closed and not closing):
                return
            before, feed.lease = feed.lease, lease
        if before is not None:
            self._expiries.unfollow(before)
        if lease is not None:
            self._expiries.follow(lease)

    # -- the current state --------------------------------------------------------------

    def _resync(self, feed: _Feed, lane: Lane | None = None) -> None:
        """Report the current state: where a watch starts, or what replaces history etcd no longer has."""
        try:
            body, index = self._http.request("GET", feed.path, {"recursive": "true"} if feed.tree else None, lane=lane)
            nodes = self._layout.files(body["node"])
        except EtcdError as exc:
            if exc.code != KEY_NOT_FOUND:
                raise
            nodes, index = [], exc.index
        found = [pair_of(key, node) for node in nodes if (key := self._layout.key(node["key"])) is not None]
        found = [pair for pair in found if matches(pair.key, feed.key, feed.tree)]
        current = {pair.key: pair for pair in self._live(found)}
        if feed.fresh:
            changed, gone = sorted(current.values(), key=lambda pair: pair.key), []
        else:
            changed = sorted((p for p in current.values() if p.revision >= feed.next), key=lambda p: p.revision)
            gone = sorted(feed.seen.keys() - current.keys())
            feed.watch.resynced()
        for pair in changed:
            feed.watch.emit(Event("put", pair.key, pair.value, pair.revision))
        for key in gone:
            feed.watch.emit(Event("delete", key, None, index))
        feed.seen = {key: (pair.revision, pair.lease) for key, pair in current.items()}
        feed.hidden = {pair.key for pair in found} - current.keys()
        feed.next, feed.fresh = index + 1, False
        feed.watch.revision = index
        self._bind(feed, current[feed.key].lease if feed.key in current else None)

    # -- the long polls, on the watch's thread -------------------------------------------

    def _run(self, feed: _Feed) -> None:
        failing_since: float | None = None
        failures = 0
        while not feed.lane.closed:
            try:
                self._poll(feed)
                failing_since, failures = None, 0
                continue
            except Interrupted:
                return
            except (Transient, EtcdError) as exc:
                error: CoordError = StoreUnavailable(f"{self._http.describe()}: {exc}", backend=BACKEND)
                error.__cause__ = exc
            except CoordError as exc:
                error = exc
            except Exception as exc:  # whatever it is must not end the watch silently
                log.exception("watching %s failed", feed.path)
                error = StoreUnavailable(f"watching failed: {exc!r}", backend=BACKEND)
                error.__cause__ = exc
            if feed.lane.closed or self._http.shut:
                return
            now = self._clock.now()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= self._watch_retry:
                error.key = error.key or self._label(feed.key)
                feed.watch.fail(error)
                return
            failures += 1
            self._clock.sleep(min(_RETRY_MAX, _RETRY_FIRST * 2 ** min(failures, 6)))

    def _poll(self, feed: _Feed) -> None:
        query = {"wait": "true", "waitIndex": str(feed.next)}
        if feed.tree:
            query["recursive"] = "true"
        try:
            body, _ = self._http.request("GET", feed.path, query, lane=feed.lane, read_timeout=POLL)
        except Idle:
            return
        except EtcdError as exc:
            if exc.code != INDEX_CLEARED:
                raise
            self._resync(feed, feed.lane)
            return
        self._event(feed, body)

    def _event(self, feed: _Feed, body: dict[str, Any]) -> None:
        node = body["node"]
        index = int(node["modifiedIndex"])
        feed.next = index + 1
        if body.get("refresh"):
            return  # a ttl extended, nothing changed
        gone = body["action"] in _GONE
        if node.get("dir"):
            if gone:  # a directory went, and every key in it: the ones this watch reported present
                under = node["key"] + "/"
                for went in sorted(k for k in feed.seen if self._layout.path(k).startswith(under)):
                    del feed.seen[went]
                    feed.watch.emit(Event("delete", went, None, index))
                self._bind(feed, None)
            return
        key = self._layout.key(node["key"])
        if key is None or not matches(key, feed.key, feed.tree):
            return
        if gone:
            feed.seen.pop(key, None)
            self._bind(feed, None)
            if key in feed.hidden:
                feed.hidden.discard(key)
                return
            feed.watch.emit(Event("delete", key, None, index))
            return
        pair = pair_of(key, node)
        feed.seen[key] = (pair.revision, pair.lease)
        feed.hidden.discard(key)
        feed.watch.emit(Event("put", key, pair.value, pair.revision))
        self._bind(feed, pair.lease)
        if pair.lease is not None:
            self._check(pair)
