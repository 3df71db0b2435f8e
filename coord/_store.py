"""The Store: one key/value API over every backend.

``Store`` does what every backend shares: it validates keys, values and ttls
before anything is sent, applies the ``prefix`` option, refuses calls after
``close()``, keeps the leases alive and fills in the key and backend of every
error. A backend implements the underscored methods; it raises coord errors
only, translating its client library's exceptions at one boundary.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import ClassVar

from ._clock import Clock, SystemClock
from ._errors import CoordError, KeyExists, KeyModified, KeyNotFound, LeaseExpired, NotSupported, StoreClosed
from ._keys import check_ttl, check_value, is_under, normalize_key
from ._lease import Lease, LeaseKeeper
from ._txn import Op, Transaction, single_key
from ._types import KVPair, ServerTime
from ._watch import Watch, WatchFeed

__all__ = ["Store", "check_revision", "labelled", "matches"]


class Store(abc.ABC):
    """A key/value store with compare-and-swap, watches and leases.

    Thread-safe; share one per process (``coord.connect`` opens one). Every
    method may raise ``StoreUnavailable`` after the backend's bounded retries,
    and ``StoreClosed`` after ``close()``.
    """

    #: The backend's name, as in its URL scheme.
    backend: str = "?"
    #: Options the backend takes (besides ``timeout`` and ``prefix``), with a
    #: parser for their query-string form.
    OPTIONS: ClassVar[Mapping[str, Callable[[str], object]]] = {}
    #: Whether a transaction may write several keys, or check keys it does not write. A backend
    #: that cannot (etcd's v2 API has no multi-key atomicity) raises ``NotSupported`` for those,
    #: writing nothing; one conditional write and any reads work everywhere.
    multi_key_transactions: bool = True

    def __init__(self, *, prefix: str = "", clock: Clock | None = None) -> None:
        self._prefix = normalize_key(prefix, allow_root=True)
        self.clock: Clock = clock or SystemClock()
        self._closed = False
        self._closed_why = "the store is closed"
        self._close_lock = threading.Lock()
        self._keeper = LeaseKeeper(self.clock, self._renew, self._revoke, lambda: {"coord.backend": self.backend})
        _open_stores.add(self)
        self._watches: set[WatchFeed] = set()
        self._watches_lock = threading.Lock()
        self._session_leases: dict[float, Lease] = {}
        self._sessions_lock = threading.Lock()

    # -- the public API --------------------------------------------------

    def put(self, key: str, value: bytes, *, ttl: float | None = None, lease: Lease | None = None) -> KVPair:
        """Write ``value``; with ``ttl`` the key expires unless written again; with ``lease`` it lives as long as the lease."""
        with self._op(key) as k:
            self._check_write(value, ttl, lease)
            return self._out(self._put(k, value, _ttl(ttl), lease))

    def get(self, key: str) -> KVPair:
        """The key's current pair; ``KeyNotFound`` when absent."""
        with self._op(key) as k:
            pair = self._get(k)
            if pair is None:
                raise KeyNotFound("no such key")
            return self._out(pair)

    def exists(self, key: str) -> bool:
        with self._op(key) as k:
            return self._exists(k)

    def delete(self, key: str) -> None:
        """Delete the key; ``KeyNotFound`` when absent."""
        with self._op(key) as k:
            if not self._delete(k):
                raise KeyNotFound("no such key")

    def list(self, prefix: str) -> builtins.list[KVPair]:
        """Every key strictly under ``prefix`` (recursively), sorted by key; ``""`` lists everything."""
        with self._op(prefix, root=True) as p:
            return [self._out(pair) for pair in sorted(self._list(p), key=lambda pair: pair.key)]

    def delete_tree(self, prefix: str) -> None:
        """Delete every key strictly under ``prefix``. The prefix itself must not be empty."""
        with self._op(prefix) as p:
            self._delete_tree(p)

    def atomic_put(
        self,
        key: str,
        value: bytes,
        previous: KVPair | None,
        *,
        ttl: float | None = None,
        lease: Lease | None = None,
    ) -> KVPair:
        """Compare-and-swap.

        ``previous=None`` creates the key only if it is absent (``KeyExists``
        otherwise). Else the write succeeds only if the key's revision still
        equals ``previous.revision``: ``KeyModified`` if it changed,
        ``KeyNotFound`` if the key is gone.
        """
        with self._op(key) as k:
            self._check_write(value, ttl, lease)
            revision = None if previous is None else _revision(previous)
            return self._out(self._atomic_put(k, value, revision, _ttl(ttl), lease))

    def atomic_delete(self, key: str, previous: KVPair) -> None:
        """Delete the key only if its revision still equals ``previous.revision``."""
        with self._op(key) as k:
            self._atomic_delete(k, _revision(previous))

    def watch(self, key: str, *, start_revision: int | None = None) -> Watch:
        """Events of one key: its current state first (or every change since ``start_revision``), then each change."""
        with self._op(key) as k:
            return self._open_watch(k, False, start_revision)

    def watch_tree(self, prefix: str, *, start_revision: int | None = None) -> Watch:
        """Events of every key strictly under ``prefix``, as ``watch`` gives them for one key."""
        with self._op(prefix, root=True) as p:
            return self._open_watch(p, True, start_revision)

    def transaction(self) -> Transaction:
        """A transaction: conditional writes applied all or none, and reads that see them (see ``Transaction``)."""
        with self._op(_NO_KEY):
            return Transaction(self._commit, self._full_key)

    def session(self, ttl: float = 10.0) -> Lease:
        """The Store's shared lease of ``ttl`` seconds: granted on first use, then the same one until it ends.

        Recipes bind their keys to it, as etcd's ``concurrency.Session`` and
        kazoo's client session do, so liveness costs one lease per Store and
        ttl however many locks, elections and registrations use it. Once it
        is lost or revoked, the next call grants a new one. Its loss is every
        holder's loss: take a lease of your own (``lease()``) to isolate one.
        """
        ttl = check_ttl(ttl)
        with self._sessions_lock:
            lease = self._session_leases.get(ttl)
            if lease is None or not lease.alive:
                lease = self._session_leases[ttl] = self.lease(ttl)
            return lease

    def server_time(self) -> ServerTime | None:
        """The store server's wall clock, read now over this Store's own connection, credentials and TLS.

        ``None`` for a store with no server of its own (memory, sqlite: this
        host's clock is the store's). For diagnosis (``coord doctor`` measures
        the clock skew with it): no guarantee of coord's depends on the clocks
        of different hosts agreeing.
        """
        with self._op(_NO_KEY):
            return self._server_time()

    def lease(self, ttl: float) -> Lease:
        """Grant a lease of ``ttl`` seconds, kept alive in the background (renewed about every ttl/3)."""
        with self._op(_NO_KEY):
            check_ttl(ttl)
            sent = self.clock.now()
            lease_id, granted = self._lease_grant(float(ttl))
            return self._keeper.keep(lease_id, granted, sent, self._lease_hold(granted))

    def close(self) -> None:
        """Revoke this Store's leases, end its watches and release its connections. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        leases = self._keeper.leases()
        self._keeper.close()  # first: from now on no holder here acts on them
        for lease in leases:
            with contextlib.suppress(CoordError):  # if not, the server expires it
                self._lease_revoke(lease)
        with self._watches_lock:
            feeds = list(self._watches)
        for feed in feeds:
            if feed._close():
                self._watch_closed(feed)
        self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}{' closed' if self._closed else ''}>"

    def describe(self) -> str:
        """Where this store lives, for messages and reprs."""
        return self.backend

    # -- what backends implement -------------------------------------------

    @abc.abstractmethod
    def _get(self, key: str) -> KVPair | None: ...

    def _exists(self, key: str) -> bool:
        return self._get(key) is not None

    @abc.abstractmethod
    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> bool:
        """Delete the key; return whether it existed."""

    @abc.abstractmethod
    def _list(self, prefix: str) -> builtins.list[KVPair]: ...

    @abc.abstractmethod
    def _delete_tree(self, prefix: str) -> None: ...

    @abc.abstractmethod
    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair: ...

    @abc.abstractmethod
    def _atomic_delete(self, key: str, revision: int) -> None: ...

    @abc.abstractmethod
    def _watch(self, feed: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        """Start feeding ``feed`` (see ``WatchFeed``); stop when ``_unwatch`` is called."""

    @abc.abstractmethod
    def _unwatch(self, feed: WatchFeed) -> None:
        """Stop feeding ``feed``."""

    @abc.abstractmethod
    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        """Create a lease; return its id and the ttl the backend granted (it may round up)."""

    def _lease_hold(self, ttl: float) -> float:
        """How long after a renewal is sent the server surely still keeps a lease of ``ttl``: the client's deadline.

        The ttl itself where the server expires a lease exactly ttl after its
        last renewal. Less where it may expire it sooner: a Consul session of
        TTL t goes anywhere from t to 2t after its last renewal, so coord asks
        for t = ttl/2 (keys outlive a dead owner by at most ttl) and holds
        for t. The keeper renews every hold/3.
        """
        return ttl

    @abc.abstractmethod
    def _lease_keepalive(self, lease: Lease) -> bool:
        """Renew the lease; return False if the backend no longer has it."""

    @abc.abstractmethod
    def _lease_revoke(self, lease: Lease) -> None:
        """End the lease and delete its keys."""

    def _transaction(self, ops: builtins.list[Op]) -> builtins.list[object]:
        """Run a transaction (see ``_txn``): check every condition, then write all or nothing, then read.

        Results in op order: put -> KVPair, delete -> bool, get -> KVPair | None,
        list -> list[KVPair] (any order), check -> None. A failed condition
        raises its error with ``key`` set to that op's key.
        """
        raise NotSupported("this backend has no transactions")

    def _server_time(self) -> ServerTime | None:
        """The server's clock (one request), or None where the store has no server."""
        return None

    @abc.abstractmethod
    def _close(self) -> None: ...

    # -- shared machinery ---------------------------------------------------

    @contextmanager
    def _op(self, key: object, *, root: bool = False) -> Iterator[str]:
        """Validate and prefix ``key``, refuse closed stores, and label errors with key and backend."""
        try:
            if self._closed:
                raise StoreClosed(self._closed_why)
            full = ""
            if key is not _NO_KEY:
                full = normalize_key(key, allow_root=root)
                full = f"{self._prefix}/{full}" if self._prefix and full else full or self._prefix
            yield full
        except CoordError as exc:
            if self._closed and not isinstance(exc, StoreClosed):
                # The store was closed while the operation ran: say so, not how the connection died.
                raise StoreClosed(
                    "the store was closed during the operation", key=_label(key), backend=self.backend
                ) from exc
            if exc.backend is None:
                exc.backend = self.backend
            if exc.key is None:
                exc.key = _label(key)
            raise

    def _full_key(self, key: object, *, root: bool = False) -> str:
        """``key`` normalised and under the prefix (for transactions, which collect keys before running)."""
        try:
            full = normalize_key(key, allow_root=root)
        except CoordError as exc:
            exc.backend = self.backend
            raise
        return f"{self._prefix}/{full}" if self._prefix and full else full or self._prefix

    def _commit(self, ops: builtins.list[Op], labels: builtins.list[str]) -> builtins.list[object]:
        with self._op(_NO_KEY):
            if not self.multi_key_transactions:
                single_key(ops)
            for op in ops:
                if op.lease is not None:
                    self._check_write(op.value, None, op.lease)
            try:
                results = self._transaction(ops)
            except CoordError as exc:
                # Name the key as the caller wrote it.
                exc.key = next((label for op, label in zip(ops, labels, strict=True) if op.key == exc.key), exc.key)
                if exc.key is not None and self._prefix and exc.key.startswith(self._prefix + "/"):
                    exc.key = self._strip(exc.key)
                raise
        return [self._result(op, result) for op, result in zip(ops, results, strict=True)]

    def _result(self, op: Op, result: object) -> object:
        if isinstance(result, KVPair):
            return self._out(result)
        if op.kind == "list":
            assert isinstance(result, builtins.list)
            return [self._out(pair) for pair in sorted(result, key=lambda pair: pair.key)]
        return result

    def _check_write(self, value: bytes, ttl: float | None, lease: Lease | None) -> None:
        check_value(value)
        if ttl is not None:
            check_ttl(ttl)
        if lease is not None:
            if ttl is not None:
                raise ValueError("give a key a ttl or a lease, not both")
            if not self._keeper.owns(lease):
                raise TypeError("lease must be a Lease granted by this store")
            if not lease.alive:
                raise LeaseExpired(f"lease {lease.id} is no longer alive")

    def _out(self, pair: KVPair) -> KVPair:
        if not self._prefix:
            return pair
        return KVPair(pair.key[len(self._prefix) + 1 :], pair.value, pair.revision, pair.created, pair.lease)

    def _strip(self, key: str) -> str | None:
        if not self._prefix:
            return key
        return key[len(self._prefix) + 1 :] if is_under(key, self._prefix) else None

    def _open_watch(self, key: str, tree: bool, start_revision: int | None) -> Watch:
        if start_revision is not None and (isinstance(start_revision, bool) or not isinstance(start_revision, int)):
            raise TypeError("start_revision must be an int")
        feed = WatchFeed(self.backend, self._strip)
        watch = self._new_watch(feed)
        with self._watches_lock:
            self._watches.add(feed)
        try:
            self._watch(feed, key, tree, start_revision)
        except BaseException:
            self._watch_closed(feed)
            raise
        return watch

    def _new_watch(self, feed: WatchFeed) -> Watch:
        """The reader's side of a new watch (a wrapping store may give its own kind)."""
        return Watch(feed, on_close=self._watch_closed)

    def _watch_closed(self, feed: WatchFeed) -> None:
        with self._watches_lock:
            if feed not in self._watches:
                return
            self._watches.discard(feed)
        self._unwatch(feed)

    def _renew(self, lease: Lease) -> bool:
        if self._closed:
            return True  # close() is revoking it; do not report it lost
        try:
            return self._lease_keepalive(lease)
        except CoordError as exc:
            exc.backend = exc.backend or self.backend
            raise

    def _forsake(self) -> None:
        """In a child process after ``fork()``: the parent's connections, threads and leases are not ours.

        Nothing is said to the store (the parent still uses all of it): the
        Store closes here, its leases count as revoked and its watches end,
        and every later call raises ``StoreClosed`` saying why.
        """
        self._closed = True
        self._closed_why = (
            f"this {type(self).__name__} was opened in process {os.getppid()} before it forked: a Store cannot be "
            "shared with a child process; open another one in the child (coord.connect)"
        )
        self._keeper.close()
        for feed in list(self._watches):
            feed._close()

    def _revoke(self, lease: Lease) -> None:
        if self._closed:
            return  # close() revokes what is left
        with self._op(_NO_KEY):
            self._lease_revoke(lease)


_NO_KEY = object()  # for operations that concern no key (leases)

_open_stores: weakref.WeakSet[Store] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_open_stores):
        if not store._closed:
            store._forsake()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _label(key: object) -> str | None:
    return key if isinstance(key, str) else None


def _ttl(ttl: float | None) -> float | None:
    return None if ttl is None else float(ttl)


def _revision(previous: KVPair) -> int:
    if not isinstance(previous, KVPair):
        raise TypeError(f"previous must be a KVPair, not {type(previous).__name__}")
    return previous.revision


@contextmanager
def labelled(key: str) -> Iterator[None]:
    """Give the errors raised inside the key they concern (a transaction's op, say), unless they name one."""
    try:
        yield
    except CoordError as exc:
        if exc.key is None:
            exc.key = key
        raise


def check_revision(actual: int | None, expected: int | None) -> None:
    """What a conditional write or delete raises on finding the key at ``actual`` when it expected ``expected``.

    ``None`` means absent: expecting it is a create-only write. Every backend
    uses this one check, so the same conflict gives the same error and message.
    """
    if expected is None:
        if actual is not None:
            raise KeyExists("the key already exists")
    elif actual is None:
        raise KeyNotFound("the key is gone")
    elif actual != expected:
        raise KeyModified(f"the key is at revision {actual}, not {expected}")


def matches(key: str, watched: str, tree: bool) -> bool:
    """Whether a change of ``key`` belongs to a watch of ``watched`` (a key, or a prefix if ``tree``)."""
    return is_under(key, watched) if tree else key == watched
