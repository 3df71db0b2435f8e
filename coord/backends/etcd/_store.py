"""``etcd://host:port[,host:port...]``: the etcd v3 backend, over pyetcd's gRPC client.

How the Store maps onto etcd (one round trip each unless said otherwise):

- ``revision`` is the key's mod_revision and ``created`` its create_revision.
  Both are etcd's cluster-wide revision, so ``created`` strictly increases in
  creation order across all keys.
- ``get``, ``exists`` and ``list`` are linearizable Range reads. ``list`` and
  ``delete_tree`` cover the range ``prefix + "/"`` (every key for ``""``).
- ``put`` is a Put that returns the previous pair, which gives ``created``.
  ``put(ttl=)`` first grants a lease for the key: two round trips.
- ``atomic_put`` and ``atomic_delete`` are one Txn comparing mod_revision
  (create_revision == 0 for create-only) whose failure branch reads the key,
  so KeyExists, KeyModified and KeyNotFound are told apart in the same trip.
- Leases are etcd leases. etcd counts whole seconds and has a minimum of 1.5
  election timeouts (2 s for the test server), so the ttl is rounded up and
  the granted ttl is what the Lease reports. The Store's LeaseKeeper renews
  them through LeaseKeepAlive.
- Each Watch is one etcd watch; a pyetcd Watcher multiplexes them all on one
  gRPC stream read by one thread, and one more thread per Store re-subscribes
  the watches whose stream broke. A watch starts with a Range (the current state
  and its revision) and watches from the revision after it. After a broken
  stream it resumes from the revision after the last one delivered (etcd
  sends all events of one revision in one response, so nothing is lost or
  repeated). If etcd compacted that history away it re-syncs from a Range:
  puts for the keys written since, deletes for keys it had seen that are gone.

Transient failures (etcd unreachable, a deadline, a leader election) are
retried within ``timeout`` seconds, each retry on the next endpoint that has
not just failed, then raise ``StoreUnavailable``. A broken watch keeps trying
for ``watch_retry`` seconds (by default the larger of ``timeout`` and 30 s,
to ride out a server restart) before it ends with ``StoreUnavailable``.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import grpc
import pyetcd
from pyetcd import etcdrpc
from pyetcd import events as etcd_events
from pyetcd import exceptions as etcd_errors
from pyetcd.watch import Watcher, WatchResponse
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from ..._clock import Clock
from ..._errors import (
    ConfigurationError,
    CoordError,
    LeaseExpired,
    StoreClosed,
    StoreUnavailable,
)
from ..._lease import Lease
from ..._store import Store, check_revision
from ..._types import Event, KVPair
from ..._url import Location
from ..._watch import WatchFeed

__all__ = ["EtcdStore"]

_T = TypeVar("_T")

DEFAULT_PORT = 2379
#: How long an endpoint that failed is passed over before it is tried again (when there are others).
_ENDPOINT_PAUSE = 1.0
_GRPC_OPTIONS = [
    # gRPC's reconnect backoff grows to two minutes; a restarted etcd should be used at once.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    # Notice a dead connection (a frozen or partitioned server) under an idle watch stream. etcd
    # refuses pings more often than every 5 s, and only while a stream is open.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # A list of many large values may exceed gRPC's default 4 MiB; etcd itself sends any size.
    ("grpc.max_receive_message_length", -1),
]
# RESOURCE_EXHAUSTED is etcd's "too many requests" as well as a full database: both worth a wait.
_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
# What pyetcd turns those codes (and its own connection troubles) into.
_TRANSIENT_ERRORS = (
    etcd_errors.ConnectionFailedError,
    etcd_errors.ConnectionTimeoutError,
    etcd_errors.InternalServerError,
    etcd_errors.NoServerAvailableError,
    etcd_errors.WatchTimedOut,
)
_BACKOFF = wait_exponential(multiplier=0.02, max=0.5)


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
    watcher: Any = None  # the pyetcd Watcher and id of the current subscription
    watch_id: int | None = None
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class EtcdStore(Store):
    """A Store on an etcd v3 cluster; see the module docstring for how each operation maps."""

    backend = "etcd"
    OPTIONS: ClassVar[dict[str, Callable[[str], object]]] = {"watch_retry": float}

    def __init__(
        self,
        location: Location,
        *,
        timeout: float = 5.0,
        prefix: str = "",
        clock: Clock | None = None,
        watch_retry: float | None = None,
    ) -> None:
        super().__init__(prefix=prefix, clock=clock)
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be positive, not {timeout!r}", backend=self.backend)
        self._timeout = float(timeout)
        self._watch_retry = max(self._timeout, 30.0) if watch_retry is None else float(watch_retry)
        self._hosts = location.endpoints(DEFAULT_PORT)
        pause = _ENDPOINT_PAUSE if len(self._hosts) > 1 else 0.0  # a lone endpoint is worth retrying at once
        endpoints = [
            pyetcd.Endpoint(
                f"[{host}]" if ":" in host else host, port, secure=False, time_retry=pause, opts=_GRPC_OPTIONS
            )
            for host, port in self._hosts
        ]
        # Each attempt gets a third of the budget, so a hung endpoint leaves time to try the next one.
        attempt_timeout = min(self._timeout, max(1.0, self._timeout / 3))
        self._client = pyetcd.MultiEndpointEtcd3Client(endpoints, timeout=attempt_timeout, failover=True)
        self._feeds: dict[WatchFeed, _Feed] = {}
        self._feeds_lock = threading.Lock()
        self._lost: queue.SimpleQueue[tuple[_Feed, bool, float] | None] = queue.SimpleQueue()
        self._resumer: threading.Thread | None = None
        self._shut = False  # set by _close: from then on every call raises StoreClosed
        self._watchers: dict[str, Any] = {}  # endpoint -> the pyetcd Watcher (one stream) on it
        try:
            self._call(lambda _: self._client.get_response(b"\0", count_only=True))
        except CoordError:
            self._client.close()
            raise

    def describe(self) -> str:
        return "etcd://" + ",".join(f"{host}:{port}" for host, port in self._hosts)

    # -- the one boundary with pyetcd and gRPC ---------------------------------

    def _call(self, request: Callable[[bool], _T], *, within: float | None = None) -> _T:
        """Run ``request`` against etcd: the one place where pyetcd's and gRPC's errors become coord's.

        Transient failures are retried for ``within`` seconds (the store's
        ``timeout`` by default), then raise ``StoreUnavailable``. ``request``
        is told whether an earlier attempt failed, since that attempt may
        have been applied before its answer was lost: a write can then
        recognise its own result instead of reporting it as a conflict.
        """
        budget = self._timeout if within is None else max(0.0, within)
        retrying = Retrying(
            stop=stop_after_delay(budget), wait=_BACKOFF, retry=retry_if_exception(_transient), reraise=True
        )
        try:
            for attempt in retrying:
                with attempt:
                    if self._shut:
                        raise StoreClosed("the store is closed", backend=self.backend)
                    return request(attempt.retry_state.attempt_number > 1)
        except (grpc.RpcError, etcd_errors.Etcd3Exception) as exc:
            raise self._coord_error(exc, budget) from exc
        except ValueError as exc:
            if self._shut:  # gRPC's answer to a call racing close(): a renewal, a re-subscription
                raise StoreClosed("the store is closed", backend=self.backend) from exc
            raise
        raise AssertionError("tenacity neither returned nor raised")

    def _coord_error(self, exc: Exception, budget: float) -> CoordError:
        code = exc.code() if isinstance(exc, grpc.RpcError) else None
        detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc) or type(exc).__name__
        where = self.describe()
        if code == grpc.StatusCode.NOT_FOUND:  # the only NOT_FOUND our calls can get: "requested lease not found"
            return LeaseExpired(f"etcd no longer has the lease: {detail}", backend=self.backend)
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return ConfigurationError(f"{where} refused access: {detail}", backend=self.backend)
        if _transient(exc):
            return StoreUnavailable(f"{where} did not answer within {budget:g}s: {detail}", backend=self.backend)
        return CoordError(f"{where} refused the request: {detail}", backend=self.backend)

    # -- keys ----------------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        response = self._call(lambda _: self._client.get_response(key))
        return _pair(response.kvs[0]) if response.kvs else None

    def _exists(self, key: str) -> bool:
        response = self._call(lambda _: self._client.get_response(key, count_only=True))
        return bool(response.count)

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        lease_id = self._lease_for(ttl, lease)
        response = self._call(lambda _: self._client.put(key, value, lease=lease_id, prev_kv=True))
        return _written(key, value, lease_id, response)

    def _delete(self, key: str) -> bool:
        # Nothing deleted after a failed attempt most likely means that attempt deleted it.
        return self._call(lambda retried: self._client.delete(key) or retried)

    def _list(self, prefix: str) -> list[KVPair]:
        start, end = _key_range(prefix, True)
        response = self._call(lambda _: self._client.get_response(start, range_end=end))
        return [_pair(kv) for kv in response.kvs]

    def _delete_tree(self, prefix: str) -> None:
        self._call(lambda _: self._client.delete_prefix(f"{prefix}/"))

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        lease_id = self._lease_for(ttl, lease)
        txn = self._client.transactions
        compare = _equal(txn.create(key), 0) if revision is None else _equal(txn.mod(key), revision)
        put = txn.put(key, value, lease_id, prev_kv=True)

        def attempt(retried: bool) -> KVPair:
            succeeded, responses = self._client.transaction(compare=[compare], success=[put], failure=[txn.get(key)])
            if succeeded:
                return _written(key, value, lease_id, responses[0].response_put)
            current_value, meta = responses[0][0] if responses[0] else (None, None)
            # An earlier attempt may have written exactly this: same value, same lease, new revision.
            if (
                retried
                and meta
                and current_value == value
                and meta.lease_id == lease_id
                and meta.mod_revision != revision
            ):
                return KVPair(key, value, meta.mod_revision, meta.create_revision, lease_id or None)
            check_revision(meta.mod_revision if meta else None, revision)
            raise AssertionError("etcd's compare failed on a key in the state it expected")

        return self._call(attempt)

    def _atomic_delete(self, key: str, revision: int) -> None:
        txn = self._client.transactions
        compare = _equal(txn.mod(key), revision)

        def attempt(retried: bool) -> None:
            succeeded, responses = self._client.transaction(
                compare=[compare], success=[txn.delete(key)], failure=[txn.get(key)]
            )
            if succeeded or (retried and not responses[0]):  # gone after a failed attempt: that attempt did it
                return
            check_revision(responses[0][0][1].mod_revision if responses[0] else None, revision)

        self._call(attempt)

    # -- leases --------------------------------------------------------------------

    def _lease_for(self, ttl: float | None, lease: Lease | None) -> int:
        """The etcd lease a write binds its key to: a new one for a ttl, 0 for none."""
        if ttl is not None:
            return self._lease_grant(ttl)[0]
        return lease.id if lease is not None else 0

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        # etcd grants whole seconds and raises a ttl below its minimum; it answers with what it granted.
        granted = self._call(lambda _: self._client.lease(max(1, math.ceil(ttl))))
        return int(granted.id), float(granted.ttl)

    def _lease_keepalive(self, lease: Lease) -> bool:
        # One attempt only: the LeaseKeeper retries soon, and it alone decides when the lease is lost.
        answers = self._call(lambda _: list(self._client.refresh_lease(lease.id)), within=0)
        if not answers:
            raise StoreUnavailable("etcd closed the keepalive stream without an answer", backend=self.backend)
        return all(answer.TTL > 0 for answer in answers)  # etcd answers TTL 0 for a lease it no longer has

    def _lease_revoke(self, lease: Lease) -> None:
        with contextlib.suppress(LeaseExpired):  # already gone: expired, or revoked by an earlier attempt
            self._call(lambda _: self._client.revoke_lease(lease.id))

    # -- watches -------------------------------------------------------------------

    def _watch(self, watch: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        start, end = _key_range(key, tree)
        feed = _Feed(watch, key, start, end, next=max(1, start_revision or 1))
        with self._feeds_lock:
            self._feeds[watch] = feed
            if self._resumer is None:
                self._resumer = threading.Thread(target=self._resume_loop, name="coord-etcd-watch", daemon=True)
                self._resumer.start()
        if start_revision is None:
            self._resync(feed)
        else:
            watch.revision = feed.next - 1
        self._call(lambda _: self._subscribe(feed))

    def _unwatch(self, watch: WatchFeed) -> None:
        with self._feeds_lock:
            feed = self._feeds.pop(watch, None)
        if feed is None:
            return
        with feed.lock:
            feed.closed = True
            watcher, watch_id = feed.watcher, feed.watch_id
        if watcher is not None and watch_id is not None:
            watcher.cancel(watch_id)

    def _resync(self, feed: _Feed, within: float | None = None) -> None:
        """Emit the current state: where a watch starts, or what replaces history etcd compacted away.

        A fresh watch gets a put for every key, sorted by key. A running one
        gets a put for each key written since its last event, in revision
        order, then a delete for each key it had seen that is now gone, at the
        snapshot's revision (when exactly it went was compacted away).
        """
        response = self._call(lambda _: self._client.get_response(feed.start, range_end=feed.end), within=within)
        revision = response.header.revision
        current = {_text(kv.key): kv for kv in response.kvs}
        with feed.lock:
            if feed.closed:
                return
            if feed.fresh:
                changed, gone = sorted(current.values(), key=lambda kv: kv.key), []
            else:
                changed = sorted((kv for kv in current.values() if kv.mod_revision >= feed.next), key=_mod_revision)
                gone = sorted(feed.seen - current.keys())
            for kv in changed:
                feed.watch.emit(Event("put", _text(kv.key), kv.value, kv.mod_revision))
            for key in gone:
                feed.watch.emit(Event("delete", key, None, revision))
            feed.seen, feed.next, feed.fresh = set(current), revision + 1, False
            feed.watch.revision = revision

    def _subscribe(self, feed: _Feed) -> None:
        """Open the etcd watch that feeds ``feed`` from ``feed.next`` on."""
        with feed.lock:
            if feed.closed:
                return
            feed.generation += 1
            generation, start_revision = feed.generation, feed.next

        def on_response(response: object) -> None:
            self._on_response(feed, generation, response)

        endpoint, watcher = self._watcher()
        try:
            watch_id = watcher.add_callback(feed.start, on_response, range_end=feed.end, start_revision=start_revision)
        except etcd_errors.RevisionCompactedError as exc:
            on_response(exc)
            return
        except (grpc.RpcError, etcd_errors.WatchTimedOut) as exc:
            if _transient(exc):
                endpoint.fail()  # so that the next attempt goes to another endpoint, if there is one
            raise
        with feed.lock:
            if feed.generation != generation:
                return  # already over (compacted, or the stream broke): the resumer has it
            feed.watcher, feed.watch_id = watcher, watch_id
            closed = feed.closed
        if closed:  # closed while subscribing, before there was an id to cancel
            watcher.cancel(watch_id)

    def _watcher(self) -> tuple[Any, Any]:
        """The endpoint in use and the pyetcd Watcher on it, which multiplexes every subscription on one stream.

        The Store keeps its own Watchers rather than pyetcd's shared one,
        which pyetcd half-closes whenever any request times out; a cancel
        sent to a half-closed stream can block forever.
        """
        channel = self._client.channel  # moves to the next endpoint if this one failed
        endpoint = self._client.endpoint_in_use
        with self._feeds_lock:
            watcher = self._watchers.get(endpoint.netloc)
            if watcher is None:
                watcher = Watcher(etcdrpc.WatchStub(channel), timeout=self._client.timeout)
                self._watchers[endpoint.netloc] = watcher
        return endpoint, watcher

    def _on_response(self, feed: _Feed, generation: int, response: object) -> None:
        """Deliver one response of a subscription, in pyetcd's watch thread; or hand a broken one to the resumer."""
        with feed.lock:
            if feed.closed or feed.generation != generation:
                return
            if isinstance(response, WatchResponse):
                for event in response.events:
                    key = _text(event.key)
                    if isinstance(event, etcd_events.DeleteEvent):
                        feed.seen.discard(key)
                        feed.watch.emit(Event("delete", key, None, event.mod_revision))
                    else:
                        feed.seen.add(key)
                        feed.watch.emit(Event("put", key, event.value, event.mod_revision))
                    feed.next, feed.fresh = event.mod_revision + 1, False
                return
            # The stream broke (an RpcError, or None when pyetcd closed it) or etcd compacted our start.
            feed.generation += 1
        self._lost.put((feed, isinstance(response, etcd_errors.RevisionCompactedError), time.monotonic()))

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
                error = StoreUnavailable(f"re-subscribing the watch failed: {exc!r}", backend=self.backend)
                error.__cause__ = exc
            if not feed.closed and not self.closed:
                error.key = error.key or self._strip(feed.key)
                feed.watch.fail(error)

    def _resume(self, feed: _Feed, compacted: bool, within: float) -> None:
        if compacted:
            self._resync(feed, within=within)
        self._call(lambda _: self._subscribe(feed), within=within)

    # -- closing -------------------------------------------------------------------

    def _close(self) -> None:
        self._shut = True
        self._lost.put(None)
        with self._feeds_lock:
            watchers = list(self._watchers.values())
        for watcher in watchers:
            watcher.close()
        self._client.close()


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, grpc.RpcError):
        return exc.code() in _TRANSIENT_CODES
    return isinstance(exc, _TRANSIENT_ERRORS)


def _equal(target: Any, value: int) -> Any:
    """A pyetcd comparison (it builds them by overloading ``==``)."""
    return target == value


def _key_range(key: str, tree: bool) -> tuple[bytes, bytes | None]:
    """The etcd range of one key, or of every key strictly under ``key`` (every key at all for "")."""
    if not tree:
        return key.encode(), None
    if not key:
        return b"\0", b"\0"
    start = f"{key}/".encode()
    return start, pyetcd.utils.prefix_range_end(start)


def _text(key: bytes) -> str:
    return key.decode("utf-8", errors="replace")


def _mod_revision(kv: Any) -> int:
    return int(kv.mod_revision)


def _pair(kv: Any) -> KVPair:
    return KVPair(_text(kv.key), kv.value, kv.mod_revision, kv.create_revision, kv.lease or None)


def _written(key: str, value: bytes, lease_id: int, response: Any) -> KVPair:
    """The pair a Put (or a Txn's put) wrote; ``created`` comes from the previous pair, if there was one."""
    revision = response.header.revision
    created = response.prev_kv.create_revision if response.HasField("prev_kv") else revision
    return KVPair(key, value, revision, created, lease_id or None)
