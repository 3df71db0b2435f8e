"""``Etcd2Store``: the Store operations on etcd's v2 API, each wired to the module that does it."""

from __future__ import annotations

import math
import os
import threading
import weakref
from collections.abc import Callable
from typing import ClassVar
from urllib.parse import unquote, urlsplit

from ..._clock import Clock
from ..._errors import ConfigurationError, CoordError, LeaseExpired
from ..._lease import Lease
from ..._store import Store
from ..._txn import ANY, Op
from ..._types import KVPair, ServerTime
from ..._url import Location, flag
from ..._watch import WatchFeed
from ._boundary import BACKEND, DEFAULT_PORT, KEY_NOT_FOUND, TLS, Boundary, EtcdError
from ._expiry import Expiries
from ._keys import Keys
from ._layout import Layout
from ._leases import Leases, Reaper, delete_at
from ._liveness import Liveness
from ._txn import run
from ._watches import Watches

__all__ = ["Etcd2Store"]


class Etcd2Store(Store):
    """A Store on etcd's v2 API; see the package docstring for how each operation maps."""

    backend = BACKEND
    multi_key_transactions = False
    OPTIONS: ClassVar[dict[str, Callable[[str], object]]] = {
        "root": str,
        "watch_retry": float,
        "quorum": flag,
        "tls_ca": str,
        "tls_cert": str,
        "tls_key": str,
    }

    def __init__(
        self,
        location: Location,
        *,
        timeout: float = 5.0,
        prefix: str = "",
        clock: Clock | None = None,
        root: str = "/coord",
        watch_retry: float | None = None,
        quorum: bool = False,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        super().__init__(prefix=prefix, clock=clock)
        if not 0 < timeout < math.inf:
            raise ConfigurationError(f"timeout must be positive and finite, not {timeout!r}", backend=BACKEND)
        if watch_retry is not None and not 0 <= watch_retry < math.inf:
            raise ConfigurationError(f"watch_retry must be finite and >= 0, not {watch_retry!r}", backend=BACKEND)
        if not isinstance(quorum, bool):
            raise ConfigurationError(f"quorum must be true or false, not {quorum!r}", backend=BACKEND)
        self._http = Boundary(
            "etcd2s" if location.scheme == "etcd2s" else "etcd2",
            location.endpoints(DEFAULT_PORT),
            float(timeout),
            self.clock,
            tls=_tls(location.scheme, tls_ca, tls_cert, tls_key),
            auth=_credentials(location.url),
        )
        self._layout = Layout(_root(root))
        self._leases = Leases(self._http, self._layout)
        self._reaper = Reaper(self._http, self.clock)
        self._liveness = Liveness(self._http, self._layout, self.clock, self._own, self._lease_died)
        self._keys = Keys(self._http, self._layout, self._liveness.alive, quorum)
        self._expiries = Expiries(self._http, self._layout, self.clock, self._granted_here)
        retry = max(float(timeout), 30.0) if watch_retry is None else float(watch_retry)
        self._watches_of = Watches(
            self._http, self._layout, self.clock, retry, self._live, self._check_later, self._strip, self._expiries
        )
        self._expiries.expired = self._lease_died
        self._lease_objects: weakref.WeakValueDictionary[int, Lease] = weakref.WeakValueDictionary()
        self._cleanup_registered: set[int] = set()
        self._cleanup_lock = threading.Lock()
        try:
            self._http.call(lambda _: self._liveness.ask(0))  # a first request: is anyone there, and do they let us in?
        except CoordError:
            self._http.close()
            raise

    def describe(self) -> str:
        return self._http.describe()

    def _server_time(self) -> ServerTime:
        return ServerTime.from_http_date(self._http.call(lambda _: self._http.date()), "etcd HTTP Date header")

    # -- keys ----------------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        stored = self._http.call(lambda _: self._keys.read(key))
        return stored.pair if stored is not None and self._live([stored.pair]) else None

    def _list(self, prefix: str) -> list[KVPair]:
        return self._live(self._http.call(lambda _: self._keys.tree(prefix)))

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        return self._bound(key, lease, lambda: self._keys.put(key, value, ttl, _id(lease)))

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        if revision is None:
            return self._bound(key, lease, lambda: self._keys.create(key, value, ttl, _id(lease)))
        return self._bound(key, lease, lambda: self._keys.swap(key, value, revision, ttl, _id(lease)))

    def _delete(self, key: str) -> bool:
        existed = self._keys.delete(key)
        self._leases.unbind(self._layout.path(key))
        return existed

    def _atomic_delete(self, key: str, revision: int) -> None:
        self._keys.delete_if(key, revision)
        self._leases.unbind(self._layout.path(key))

    def _delete_tree(self, prefix: str) -> None:
        def attempt(_: bool) -> None:
            try:
                self._http.request("DELETE", self._layout.dir(prefix), {"recursive": "true", "dir": "true"})
            except EtcdError as exc:
                if exc.code != KEY_NOT_FOUND:
                    raise

        self._http.call(attempt)

    def _transaction(self, ops: list[Op]) -> list[object]:
        return run(ops, self._write, self._get, self._list, self._get_many)

    def _get_many(self, keys: list[str]) -> dict[str, KVPair | None]:
        """Keys read together: one GET per directory holding two or more of them (the others are left out)."""
        parents: dict[str, list[str]] = {}
        for key in dict.fromkeys(keys):
            parents.setdefault(key.rpartition("/")[0], []).append(key)
        got: dict[str, KVPair | None] = {}
        for parent, wanted in parents.items():
            if len(wanted) > 1:
                found = {pair.key: pair for pair in self._live(self._siblings(parent))}
                got.update((key, found.get(key)) for key in wanted)
        return got

    def _siblings(self, parent: str) -> list[KVPair]:
        return self._http.call(lambda _: self._keys.siblings(parent))

    def _write(self, op: Op, expect: object) -> object:
        """A transaction's one write, under every condition on its key (``expect``)."""
        if op.kind == "delete":
            if expect is ANY:
                return self._delete(op.key)
            assert isinstance(expect, int)
            self._atomic_delete(op.key, expect)
            return True
        if expect is ANY:
            return self._put(op.key, op.value, op.ttl, op.lease)
        assert expect is None or isinstance(expect, int)
        return self._atomic_put(op.key, op.value, expect, op.ttl, op.lease)

    def _bound(self, key: str, lease: Lease | None, write: Callable[[], KVPair]) -> KVPair:
        """Run a write, and note which lease the key is now bound to; a lease that died meanwhile undoes it."""
        if lease is not None and lease.id in self._leases.granted:
            self._lease_objects[lease.id] = lease
        pair = write()
        path = self._layout.path(key)
        self._leases.bind(path, _id(lease), pair.revision)
        if lease is not None:
            self._clean_up_when_lost(lease)
            if not lease.alive:  # it ended while the write ran: the key went with it
                self._http.call(lambda _: delete_at(self._http, path, pair.revision))
                self._leases.unbind(path)
                raise LeaseExpired(f"lease {lease.id} ended while the key was written")
        return pair

    # -- which keys live -------------------------------------------------------------

    def _live(self, pairs: list[KVPair]) -> list[KVPair]:
        """``pairs`` without the leftovers of dead leases, which are deleted in the background."""
        verdicts: dict[int, bool] = {}
        live = []
        for pair in pairs:
            if pair.lease is not None:
                if pair.lease not in verdicts:
                    verdicts[pair.lease] = self._liveness.alive(pair.lease)
                if not verdicts[pair.lease]:
                    self._reaper.reap(self._layout.path(pair.key), pair.revision)
                    continue
            live.append(pair)
        return live

    def _check_later(self, pair: KVPair) -> None:
        """A watch reported ``pair``: look at its lease in the background (a dead one means the key goes)."""
        self._reaper.soon(lambda: self._live([pair]))

    def _granted_here(self, lease_id: int) -> bool:
        return lease_id in self._leases.granted

    def _own(self, lease_id: int) -> bool | None:
        """Whether a lease this Store granted and bound keys to is alive; None for any other lease.

        The Lease objects are the ones the writes carried (a wrapping Store,
        such as ``FaultyStore``, keeps them in a keeper of its own).
        """
        lease = self._lease_objects.get(lease_id)
        return None if lease is None else lease.alive

    def _lease_died(self, lease_id: int) -> None:
        """A lease ended (etcd said so): delete the keys bound to it that this Store knows of."""
        for path, index in self._watches_of.bound_to(lease_id) + self._leases.bound(lease_id):
            self._reaper.reap(path, index)

    def _clean_up_when_lost(self, lease: Lease) -> None:
        with self._cleanup_lock:
            if lease.id in self._cleanup_registered:
                return
            self._cleanup_registered.add(lease.id)
        lease.on_lost(lambda lost: self._reaper.soon(lambda: self._end(lost.id)))

    # -- leases --------------------------------------------------------------------

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        return self._leases.grant(ttl)

    def _lease_keepalive(self, lease: Lease) -> bool:
        return self._leases.renew(lease.id, lease.ttl)

    def _lease_revoke(self, lease: Lease) -> None:
        self._end(lease.id)

    def _end(self, lease_id: int) -> None:
        self._leases.end(lease_id)
        with self._cleanup_lock:
            self._cleanup_registered.discard(lease_id)

    # -- watches and closing ------------------------------------------------------

    def _watch(self, feed: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        self._watches_of.add(feed, key, tree, start_revision)

    def _unwatch(self, feed: WatchFeed) -> None:
        self._watches_of.remove(feed)

    def _close(self) -> None:
        self._http.shut = True
        self._watches_of.close()
        self._expiries.close()
        self._liveness.close()
        self._http.close()


def _id(lease: Lease | None) -> int | None:
    return None if lease is None else lease.id


def _root(root: object) -> str:
    if not isinstance(root, str) or not root.startswith("/") or root.endswith("/") or "//" in root:
        raise ConfigurationError(f"root must be an absolute v2 key path such as /coord, not {root!r}", backend=BACKEND)
    return root


def _credentials(url: str) -> str | None:
    """``user:password`` from the URL, if it has them (for HTTP basic authentication)."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError as exc:
        raise ConfigurationError("malformed credentials in the etcd2:// URL", backend=BACKEND) from exc
    if user is None:
        return None
    return f"{unquote(user)}:{unquote(password or '')}"


def _tls(scheme: str, ca: str | None, cert: str | None, key: str | None) -> TLS | None:
    if scheme != "etcd2s" and ca is None and cert is None and key is None:
        return None
    for name, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"{name}: no such file: {path!r}", backend=BACKEND)
    if key is not None and cert is None:
        raise ConfigurationError("tls_key needs tls_cert (the client certificate it goes with)", backend=BACKEND)
    return TLS(ca, cert, key)
