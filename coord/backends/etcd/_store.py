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
- Watches: see ``_watches``.

Transient failures (etcd unreachable, a deadline, a leader election) are
retried within ``timeout`` seconds, each retry on the next endpoint that has
not just failed, then raise ``StoreUnavailable``. A broken watch keeps trying
for ``watch_retry`` seconds (by default the larger of ``timeout`` and 30 s,
to ride out a server restart) before it ends with ``StoreUnavailable``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import ClassVar

from ..._clock import Clock
from ..._errors import ConfigurationError, CoordError, LeaseExpired, StoreUnavailable
from ..._lease import Lease
from ..._store import Store, check_revision
from ..._types import KVPair
from ..._url import Location
from ..._watch import WatchFeed
from ._boundary import DEFAULT_PORT, Boundary, equal, key_range, pair, written
from ._watches import Watches

__all__ = ["EtcdStore"]


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
        self._etcd = Boundary(location.endpoints(DEFAULT_PORT), float(timeout))
        retry = max(float(timeout), 30.0) if watch_retry is None else float(watch_retry)
        self._watches_of = Watches(self._etcd, retry, self._strip)
        try:
            self._etcd.call(lambda _: self._etcd.client.get_response(b"\0", count_only=True))
        except CoordError:
            self._etcd.close()
            raise

    def describe(self) -> str:
        return self._etcd.describe()

    # -- keys ----------------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        response = self._etcd.call(lambda _: self._etcd.client.get_response(key))
        return pair(response.kvs[0]) if response.kvs else None

    def _exists(self, key: str) -> bool:
        response = self._etcd.call(lambda _: self._etcd.client.get_response(key, count_only=True))
        return bool(response.count)

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        lease_id = self._lease_for(ttl, lease)
        response = self._etcd.call(lambda _: self._etcd.client.put(key, value, lease=lease_id, prev_kv=True))
        return written(key, value, lease_id, response)

    def _delete(self, key: str) -> bool:
        # Nothing deleted after a failed attempt most likely means that attempt deleted it.
        return self._etcd.call(lambda retried: self._etcd.client.delete(key) or retried)

    def _list(self, prefix: str) -> list[KVPair]:
        start, end = key_range(prefix, True)
        response = self._etcd.call(lambda _: self._etcd.client.get_response(start, range_end=end))
        return [pair(kv) for kv in response.kvs]

    def _delete_tree(self, prefix: str) -> None:
        self._etcd.call(lambda _: self._etcd.client.delete_prefix(f"{prefix}/"))

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        lease_id = self._lease_for(ttl, lease)
        txn = self._etcd.client.transactions
        compare = equal(txn.create(key), 0) if revision is None else equal(txn.mod(key), revision)
        put = txn.put(key, value, lease_id, prev_kv=True)

        def attempt(retried: bool) -> KVPair:
            succeeded, responses = self._etcd.client.transaction(
                compare=[compare], success=[put], failure=[txn.get(key)]
            )
            if succeeded:
                return written(key, value, lease_id, responses[0].response_put)
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

        return self._etcd.call(attempt)

    def _atomic_delete(self, key: str, revision: int) -> None:
        txn = self._etcd.client.transactions
        compare = equal(txn.mod(key), revision)

        def attempt(retried: bool) -> None:
            succeeded, responses = self._etcd.client.transaction(
                compare=[compare], success=[txn.delete(key)], failure=[txn.get(key)]
            )
            if succeeded or (retried and not responses[0]):  # gone after a failed attempt: that attempt did it
                return
            check_revision(responses[0][0][1].mod_revision if responses[0] else None, revision)

        self._etcd.call(attempt)

    # -- leases --------------------------------------------------------------------

    def _lease_for(self, ttl: float | None, lease: Lease | None) -> int:
        """The etcd lease a write binds its key to: a new one for a ttl, 0 for none."""
        if ttl is not None:
            return self._lease_grant(ttl)[0]
        return lease.id if lease is not None else 0

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        # etcd grants whole seconds and raises a ttl below its minimum; it answers with what it granted.
        granted = self._etcd.call(lambda _: self._etcd.client.lease(max(1, math.ceil(ttl))))
        return int(granted.id), float(granted.ttl)

    def _lease_keepalive(self, lease: Lease) -> bool:
        # One attempt only: the LeaseKeeper retries soon, and it alone decides when the lease is lost.
        answers = self._etcd.call(lambda _: list(self._etcd.client.refresh_lease(lease.id)), within=0)
        if not answers:
            raise StoreUnavailable("etcd closed the keepalive stream without an answer", backend=self.backend)
        return all(answer.TTL > 0 for answer in answers)  # etcd answers TTL 0 for a lease it no longer has

    def _lease_revoke(self, lease: Lease) -> None:
        with contextlib.suppress(LeaseExpired):  # already gone: expired, or revoked by an earlier attempt
            self._etcd.call(lambda _: self._etcd.client.revoke_lease(lease.id))

    # -- watches and closing ------------------------------------------------------

    def _watch(self, feed: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        self._watches_of.add(feed, key, tree, start_revision)

    def _unwatch(self, feed: WatchFeed) -> None:
        self._watches_of.remove(feed)

    def _close(self) -> None:
        self._etcd.shut = True
        self._watches_of.close()
        self._etcd.close()
