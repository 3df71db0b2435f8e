"""Watches on etcd: every Watch of a Store multiplexed on one gRPC stream per endpoint, resumed after a break.

Each Watch is one etcd watch; a pyetcd Watcher multiplexes them all on one
stream read by one thread, and one more thread per Store re-subscribes the
watches whose stream broke. etcd serves a watch created "from now" at once,
but one created from a past revision only when its sync loop next runs
(every 100 ms): a lock's waiter would see its predecessor go up to 100 ms
late. So a watch is opened from now, holding back what it hears, and then
a Range settles where it starts: for a watch of the current state, the
state at the Range's revision, then the held events after it; for a single
key from a given revision, if the key has not changed since that revision
(present, written before it: a waiter's predecessor), the held events; only
otherwise is the watch opened again from that revision. After a broken
stream it resumes from the revision after the last one delivered (etcd sends
all events of one revision in one response, so nothing is lost or
repeated). If etcd compacted that history away it re-syncs from a Range:
puts for the keys written since, deletes for keys it had seen that are gone.

With etcd's auth on, a stream carries the token it was opened with, and etcd
checks it only when a watch is created: a watch refused there (its token
expired since, or no permission) retires the stream, which keeps serving the
watches it has, and the next watch gets a new stream with a new token.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from pyetcd import etcdrpc
from pyetcd import events as etcd_events
from pyetcd import exceptions as etcd_errors
from pyetcd.watch import Watcher, WatchResponse

from ..._errors import CoordError, StoreUnavailable
from ..._types import Event
from ..._watch import WatchFeed
from ._auth import StaleToken
from ._boundary import BACKEND, Boundary, int64, key_range, mod_revision, text, transient
from ._expiry import Expiries


@dataclass(eq=False)
class _Feed:
    """What feeds one Watch: the etcd range it covers and the revision to resume from."""

    watch: WatchFeed
    key: str
    start: bytes
    end: bytes | None
    next: int  # the first revision not delivered yet
    fresh: bool = True  # nothing delivered yet, so a re-sync emits the whole state
    seen: set[str] = field(default_factory=set)  # keys present as far as the Watch knows
    generation: int = 0  # one per subscription; what an older one says is dropped
    lease: int = 0  # for a single key: the lease it is bound to, which the Store follows
    watcher: Any = None  # the pyetcd Watcher and id of the current subscription
    watch_id: int | None = None
    held: list[Any] | None = None  # while a watch opened from now is settled: the events it heard
    broke: bool = False  # its stream broke meanwhile: the opener resumes it once settled
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class Watches:
    """The watches of one Store."""

    def __init__(
        self, etcd: Boundary, watch_retry: float, label: Callable[[str], str | None], expiries: Expiries
    ) -> None:
        self._etcd = etcd
        self._expiries = expiries
        self._watch_retry = watch_retry
        self._label = label  # a full key as the Store's user knows it, for errors
        self._feeds: dict[WatchFeed, _Feed] = {}
        self._feeds_lock = threading.Lock()
        self._lost: queue.SimpleQueue[tuple[_Feed, bool, float] | None] = queue.SimpleQueue()
        self._resumer: threading.Thread | None = None
        self._watchers: dict[str, Any] = {}  # endpoint -> the pyetcd Watcher (one stream) on it
        self._retired: list[Any] = []  # Watchers whose streams etcd refused new watches on, until unused

    def add(self, watch: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        start, end = key_range(key, tree)
        feed = _Feed(watch, key, start, end, next=int64(max(1, start_revision or 1)))
        with self._feeds_lock:
            self._feeds[watch] = feed
            if self._resumer is None:
                self._resumer = threading.Thread(target=self._resume_loop, name="coord-etcd-watch", daemon=True)
                self._resumer.start()
        if start_revision is not None:
            watch.revision = feed.next - 1
            if end is not None:  # a tree's deletes since then cannot be seen in a Range: replay them
                self._etcd.call(lambda _: self._subscribe(feed))
                return
        self._etcd.call(lambda _: self._subscribe(feed, from_now=True))
        try:
            response = self._etcd.call(lambda _: self._etcd.client.get_response(feed.start, range_end=feed.end))
        except BaseException:
            self.remove(watch)
            raise
        if not self._settle(feed, start_revision, response):
            self._etcd.call(lambda _: self._subscribe(feed))

    def _settle(self, feed: _Feed, start_revision: int | None, response: Any) -> bool:
        """Start a watch opened from now at the state ``response`` read; False if it must replay from
        ``start_revision`` instead (its key changed since then)."""
        revision = response.header.revision
        with feed.lock:
            held, feed.held, broke, feed.broke = feed.held or [], None, feed.broke, False
            if feed.closed:
                return True
            kv = response.kvs[0] if response.kvs else None
            # A key that changed since start_revision (or may have: it is absent) replays from there.
            replay = start_revision is not None and start_revision <= revision
            replay = replay and (kv is None or kv.mod_revision >= start_revision)
            watcher, watch_id = feed.watcher, feed.watch_id
            if replay:
                feed.watcher, feed.watch_id = None, None
                feed.generation += 1
            else:
                if start_revision is None:
                    self._apply_state(feed, response)
                self._deliver(feed, held)  # what the subscription heard after the state (or the start asked for)
        if replay:  # on a new subscription; the cancel outside the feed's lock, as pyetcd may call back holding its own
            if watcher is not None and watch_id is not None:
                watcher.cancel(watch_id)
            return False
        if broke:
            self._lost.put((feed, False, time.monotonic()))
        return True

    def remove(self, watch: WatchFeed) -> None:
        with self._feeds_lock:
            feed = self._feeds.pop(watch, None)
        if feed is None:
            return
        with feed.lock:
            feed.closed = True
            watcher, watch_id = feed.watcher, feed.watch_id
            self._bind(feed, 0)
        if watcher is not None and watch_id is not None:
            watcher.cancel(watch_id)
        if self._retired:
            self._prune()

    def _resync(self, feed: _Feed, within: float | None = None) -> None:
        """Emit the current state: where a watch starts, or what replaces history etcd compacted away.

        A fresh watch gets a put for every key, sorted by key. A running one
        gets a put for each key written since its last event, in revision
        order, then a delete for each key it had seen that is now gone, at the
        snapshot's revision (when exactly it went was compacted away).
        """
        response = self._etcd.call(
            lambda _: self._etcd.client.get_response(feed.start, range_end=feed.end), within=within
        )
        with feed.lock:
            if not feed.closed:
                self._apply_state(feed, response)

    def _apply_state(self, feed: _Feed, response: Any) -> None:
        """Emit what the Range ``response`` says, as ``_resync`` describes; under ``feed.lock``."""
        revision = response.header.revision
        current = {text(kv.key): kv for kv in response.kvs}
        if feed.fresh:
            changed, gone = sorted(current.values(), key=lambda kv: kv.key), []
        else:
            changed = sorted((kv for kv in current.values() if kv.mod_revision >= feed.next), key=mod_revision)
            gone = sorted(feed.seen - current.keys())
            feed.watch.resynced()
        for kv in changed:
            feed.watch.emit(Event("put", text(kv.key), kv.value, kv.mod_revision))
        for key in gone:
            feed.watch.emit(Event("delete", key, None, revision))
        feed.seen, feed.next, feed.fresh = set(current), revision + 1, False
        feed.watch.revision = revision
        if feed.end is None:
            kv = current.get(feed.key)
            self._bind(feed, kv.lease if kv is not None else 0)

    def _bind(self, feed: _Feed, lease: int) -> None:
        """Follow the lease ``feed``'s key is now bound to (0: none) instead of the one before; under ``feed.lock``."""
        if lease != feed.lease:
            if feed.lease:
                self._expiries.unfollow(feed.lease)
            if lease and not feed.closed:
                self._expiries.follow(lease)
            feed.lease = lease if not feed.closed else 0

    def _subscribe(self, feed: _Feed, from_now: bool = False) -> None:
        """Open the etcd watch that feeds ``feed`` from ``feed.next`` on (``from_now``: from etcd's
        current revision, holding its events back until ``_settle``)."""
        with feed.lock:
            if feed.closed:
                return
            feed.generation += 1
            generation, start_revision = feed.generation, (None if from_now else feed.next)
            if from_now:
                feed.held = []

        def on_response(response: object) -> None:
            self._on_response(feed, generation, response)

        endpoint, watcher = self._watcher()
        try:
            watch_id = watcher.add_callback(feed.start, on_response, range_end=feed.end, start_revision=start_revision)
        except etcd_errors.RevisionCompactedError as exc:
            on_response(exc)
            return
        except (grpc.RpcError, etcd_errors.WatchTimedOut) as exc:
            if transient(exc):
                endpoint.fail()  # so that the next attempt goes to another endpoint, if there is one
            raise
        if watch_id == -1:  # etcd created the watch canceled: pyetcd drops the reason, "permission denied"
            self._retire(endpoint.netloc, watcher)
            raise StaleToken("etcd refused the watch: permission denied")
        with feed.lock:
            if feed.generation != generation:
                return  # already over (compacted, or the stream broke): the resumer has it
            feed.watcher, feed.watch_id = watcher, watch_id
            closed = feed.closed
        if closed:  # closed while subscribing, before there was an id to cancel
            watcher.cancel(watch_id)
        if self._retired:
            self._prune()

    def _watcher(self) -> tuple[Any, Any]:
        """The endpoint in use and the pyetcd Watcher on it, which multiplexes every subscription on one stream.

        The Store keeps its own Watchers rather than pyetcd's shared one,
        which pyetcd half-closes whenever any request times out; a cancel
        sent to a half-closed stream can block forever.
        """
        channel = self._etcd.client.channel  # moves to the next endpoint if this one failed
        endpoint = self._etcd.client.endpoint_in_use
        with self._feeds_lock:
            watcher = self._watchers.get(endpoint.netloc)
            if watcher is None:
                watcher = Watcher(etcdrpc.WatchStub(channel), timeout=self._etcd.client.timeout)
                self._watchers[endpoint.netloc] = watcher
        return endpoint, watcher

    def _retire(self, netloc: str, watcher: Any) -> None:
        """Open the next watch on a new stream (with the token current then), and keep this one for its watches."""
        with self._feeds_lock:
            if self._watchers.get(netloc) is watcher:
                del self._watchers[netloc]
                self._retired.append(watcher)

    def _prune(self) -> None:
        """Close the retired streams that no watch uses any more (their watches closed, or moved on)."""
        with self._feeds_lock:
            used = {id(feed.watcher) for feed in self._feeds.values()}
            idle = [watcher for watcher in self._retired if id(watcher) not in used]
            self._retired = [watcher for watcher in self._retired if id(watcher) in used]
        for watcher in idle:
            watcher.close()

    def _on_response(self, feed: _Feed, generation: int, response: object) -> None:
        """Deliver one response of a subscription, in pyetcd's watch thread; or hand a broken one to the resumer."""
        with feed.lock:
            if feed.closed or feed.generation != generation:
                return
            if isinstance(response, WatchResponse):
                if feed.held is not None:
                    feed.held.extend(response.events)
                else:
                    self._deliver(feed, response.events)
                return
            # The stream broke (an RpcError, or None when pyetcd closed it) or etcd compacted our start.
            feed.generation += 1
            if feed.held is not None:
                feed.broke = True  # the opener resumes it, once it knows where the watch starts
                return
        self._lost.put((feed, isinstance(response, etcd_errors.RevisionCompactedError), time.monotonic()))

    def _deliver(self, feed: _Feed, events: list[Any]) -> None:
        """Emit etcd's ``events`` from ``feed.next`` on (earlier ones are in the state read, or before the start)."""
        first = feed.next  # not feed.next as it moves: the events of one revision (one Txn) all have it
        for event in events:
            if event.mod_revision < first:
                continue
            key = text(event.key)
            if isinstance(event, etcd_events.DeleteEvent):
                feed.seen.discard(key)
                feed.watch.emit(Event("delete", key, None, event.mod_revision))
            else:
                feed.seen.add(key)
                feed.watch.emit(Event("put", key, event.value, event.mod_revision))
            feed.next, feed.fresh = event.mod_revision + 1, False
            if feed.end is None:
                self._bind(feed, 0 if isinstance(event, etcd_events.DeleteEvent) else event.lease)

    def _resume_loop(self) -> None:
        """Re-subscribe, one at a time, the watches whose etcd watch ended, until the store closes."""
        while (item := self._lost.get()) is not None:
            feed, compacted, since = item
            try:
                self._resume(feed, compacted, within=since + self._watch_retry - time.monotonic())
                continue
            except CoordError as exc:
                error = exc
            except Exception as exc:  # whatever it is must not end the thread every watch relies on
                error = StoreUnavailable(f"re-subscribing the watch failed: {exc!r}", backend=BACKEND)
                error.__cause__ = exc
            if not feed.closed and not self._etcd.shut:
                error.key = error.key or self._label(feed.key)
                feed.watch.fail(error)

    def _resume(self, feed: _Feed, compacted: bool, within: float) -> None:
        if compacted:
            self._resync(feed, within=within)
        self._etcd.call(lambda _: self._subscribe(feed), within=within)

    # -- closing -------------------------------------------------------------------

    def close(self) -> None:
        self._lost.put(None)
        self._expiries.close()
        with self._feeds_lock:
            watchers = [*self._watchers.values(), *self._retired]
        for watcher in watchers:
            watcher.close()
