"""``etcd://[user:password@]host:port[,host:port...]`` (``etcds://`` for TLS): the etcd v3 backend, over pyetcd's gRPC client.

How the Store maps onto etcd (one round trip each unless said otherwise):

- ``revision`` is the key's mod_revision and ``created`` its create_revision.
  Both are etcd's cluster-wide revision, so ``created`` increases in
  creation order across all keys (keys created by one transaction share it).
- ``get``, ``exists`` and ``list`` are linearizable Range reads. ``list`` and
  ``delete_tree`` cover the range ``prefix + "/"`` (every key for ``""``).
- ``put`` is a Put that returns the previous pair, which gives ``created``.
  ``put(ttl=)`` first grants a lease for the key: two round trips.
- ``transaction()`` is one Txn (see ``_txn``); ``atomic_put`` and
  ``atomic_delete`` are transactions of one op, so KeyExists, KeyModified and
  KeyNotFound are told apart in the same trip.
- Leases are etcd leases. etcd counts whole seconds and has a minimum of 1.5
  election timeouts (2 s for the test server), so the ttl is rounded up and
  the granted ttl is what the Lease reports. The Store's LeaseKeeper renews
  them through LeaseKeepAlive.
- Watches: see ``_watches``; a single-key watch also follows its key's lease
  and revokes it once expired, ahead of etcd's sweep (see ``_expiry``).

Requests are built as protobufs and sent on the gRPC stubs directly (pyetcd
provides the channels, the endpoint failover and the watch streams); the
first attempt of each runs without a retry loop, which ``Boundary.call``
sets up only after a failure.

Transient failures (etcd unreachable, a deadline, a leader election) are
retried within ``timeout`` seconds, each retry on the next endpoint that has
not just failed, then raise ``StoreUnavailable``. A broken watch keeps trying
for ``watch_retry`` seconds (by default the larger of ``timeout`` and 30 s,
to ride out a server restart) before it ends with ``StoreUnavailable``.

TLS and authentication: ``etcds://``, or any of the options ``tls_ca`` (a CA
file to verify the members with; the system's CAs by default), ``tls_cert``
and ``tls_key`` (a client certificate and its key), opens TLS channels that
verify the members' certificates and host names. A user and password in the
URL log in with etcd's auth; the token is renewed whenever etcd refuses it
(see ``_auth``). A refused certificate or login raises ``ConfigurationError``
at once; a member out of reach, ``StoreUnavailable`` after ``timeout``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from pyetcd import etcdrpc

from ..._clock import Clock
from ..._errors import ConfigurationError, CoordError, LeaseExpired, StoreUnavailable
from ..._lease import Lease
from ..._store import Store
from ..._txn import Op
from ..._types import KVPair, ServerTime
from ..._url import Location
from ..._watch import WatchFeed
from ._boundary import BACKEND, DEFAULT_PORT, TLS, Boundary, key_range, pair, written
from ._expiry import Expiries
from ._txn import EtcdTxn
from ._watches import Watches

__all__ = ["EtcdStore"]

#: etcd's own bound on a lease's ttl (``MaxLeaseTTL``, about 285 years); longer asks are refused here.
MAX_LEASE_TTL = 9_000_000_000


class EtcdStore(Store):
    """A Store on an etcd v3 cluster; see the module docstring for how each operation maps."""

    backend = "etcd"
    OPTIONS: ClassVar[dict[str, Callable[[str], object]]] = {
        "watch_retry": float,
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
        watch_retry: float | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        super().__init__(prefix=prefix, clock=clock)
        if not 0 < timeout < math.inf:
            raise ConfigurationError(f"timeout must be positive and finite, not {timeout!r}", backend=self.backend)
        if watch_retry is not None and not 0 <= watch_retry < math.inf:
            raise ConfigurationError(f"watch_retry must be finite and >= 0, not {watch_retry!r}", backend=self.backend)
        user, password = _credentials(location.url)
        self._etcd = Boundary(
            location.endpoints(DEFAULT_PORT),
            float(timeout),
            tls=_tls(location.scheme, tls_ca, tls_cert, tls_key),
            user=user,
            password=password,
        )
        retry = max(float(timeout), 30.0) if watch_retry is None else float(watch_retry)
        expiries = Expiries(self._etcd, self.clock, lambda lease: any(own.id == lease for own in self._keeper.leases()))
        self._watches_of = Watches(self._etcd, retry, self._strip, expiries)
        try:
            self._etcd.log_in()
            # A first request, inside the prefix (a user's role may cover no more): is anyone there, and may we?
            self._exists(f"{self._prefix}/\0" if self._prefix else "\0")
        except CoordError:
            self._etcd.close()
            raise

    def describe(self) -> str:
        return self._etcd.describe()

    def _server_time(self) -> ServerTime:
        return ServerTime.from_http_date(self._etcd.date(), "etcd HTTP Date header")

    # -- keys ----------------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        request = etcdrpc.RangeRequest(key=key.encode())
        response = self._etcd.call(lambda _: self._etcd.kv.Range(request, self._etcd.attempt_timeout))
        return pair(response.kvs[0]) if response.kvs else None

    def _exists(self, key: str) -> bool:
        request = etcdrpc.RangeRequest(key=key.encode(), count_only=True)
        response = self._etcd.call(lambda _: self._etcd.kv.Range(request, self._etcd.attempt_timeout))
        return bool(response.count)

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        lease_id = self._lease_for(ttl, lease)
        request = etcdrpc.PutRequest(key=key.encode(), value=value, lease=lease_id, prev_kv=True)
        response = self._etcd.call(lambda _: self._etcd.kv.Put(request, self._etcd.attempt_timeout))
        return written(key, value, lease_id, response)

    def _delete(self, key: str) -> bool:
        request = etcdrpc.DeleteRangeRequest(key=key.encode())

        def attempt(retried: bool) -> bool:
            # Nothing deleted after a failed attempt most likely means that attempt deleted it.
            return self._etcd.kv.DeleteRange(request, self._etcd.attempt_timeout).deleted > 0 or retried

        return self._etcd.call(attempt)

    def _list(self, prefix: str) -> list[KVPair]:
        start, end = key_range(prefix, True)
        request = etcdrpc.RangeRequest(key=start, range_end=end)
        response = self._etcd.call(lambda _: self._etcd.kv.Range(request, self._etcd.attempt_timeout))
        return [pair(kv) for kv in response.kvs]

    def _delete_tree(self, prefix: str) -> None:
        start, end = key_range(prefix, True)
        request = etcdrpc.DeleteRangeRequest(key=start, range_end=end)
        self._etcd.call(lambda _: self._etcd.kv.DeleteRange(request, self._etcd.attempt_timeout))

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        written = self._single(Op("put", key, value, revision, ttl, lease))
        assert isinstance(written, KVPair)
        return written

    def _atomic_delete(self, key: str, revision: int) -> None:
        self._single(Op("delete", key, expect=revision))

    def _single(self, op: Op) -> object:
        """A transaction of one op: compare-and-swap is a Txn too."""
        try:
            return self._transaction([op])[0]
        except CoordError as exc:
            exc.key = None  # the Store names the key as its caller wrote it, without the prefix
            raise

    def _transaction(self, ops: list[Op]) -> list[object]:
        txn = EtcdTxn(ops, self._txn_leases(ops))

        def attempt(retried: bool) -> list[object]:
            response = self._etcd.kv.Txn(txn.request(retried), self._etcd.attempt_timeout)
            if response.succeeded:
                return txn.results(response)
            state = txn.found(response)
            if retried and (results := txn.recovered(state, self._etcd.read_at)) is not None:
                return results
            txn.raise_conflict(state)

        try:
            return self._etcd.call(attempt)
        except LeaseExpired as exc:
            # etcd does not say which lease it lacks: name a put whose Lease is known dead, else the first bound one.
            bound = [(op.key, op.lease) for op in ops if op.lease is not None]
            dead = [(key, lease) for key, lease in bound if not lease.alive]
            if exc.key is None and bound:
                exc.key = (dead or bound)[0][0]
            raise

    def _txn_leases(self, ops: list[Op]) -> list[int]:
        """The etcd lease each op binds its key to: a put's Lease, one new lease per distinct ttl, or 0."""
        granted: dict[float, int] = {}
        for op in ops:
            if op.kind == "put" and op.ttl is not None and op.ttl not in granted:
                granted[op.ttl] = self._lease_grant(op.ttl)[0]
        return [op.lease.id if op.lease is not None else granted[op.ttl] if op.ttl is not None else 0 for op in ops]

    # -- leases --------------------------------------------------------------------

    def _lease_for(self, ttl: float | None, lease: Lease | None) -> int:
        """The etcd lease a write binds its key to: a new one for a ttl, 0 for none."""
        if ttl is not None:
            return self._lease_grant(ttl)[0]
        return lease.id if lease is not None else 0

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        # etcd grants whole seconds, at least its minimum, at most its maximum; it answers with what it granted.
        if ttl > MAX_LEASE_TTL:
            raise ValueError(f"etcd's leases last at most {MAX_LEASE_TTL:,} s, not {ttl!r}")
        request = etcdrpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)))
        granted = self._etcd.call(lambda _: self._etcd.leases.LeaseGrant(request, self._etcd.attempt_timeout))
        return int(granted.ID), float(granted.TTL)

    def _lease_keepalive(self, lease: Lease) -> bool:
        request = etcdrpc.LeaseKeepAliveRequest(ID=lease.id)

        def renew(_: bool) -> list[Any]:
            return list(self._etcd.leases.LeaseKeepAlive(iter([request]), self._etcd.attempt_timeout))

        # One attempt only: the LeaseKeeper retries soon, and it alone decides when the lease is lost.
        answers = self._etcd.call(renew, within=0)
        if not answers:
            raise StoreUnavailable("etcd closed the keepalive stream without an answer", backend=self.backend)
        return all(answer.TTL > 0 for answer in answers)  # etcd answers TTL 0 for a lease it no longer has

    def _lease_revoke(self, lease: Lease) -> None:
        request = etcdrpc.LeaseRevokeRequest(ID=lease.id)
        with contextlib.suppress(LeaseExpired):  # already gone: expired, or revoked by an earlier attempt
            self._etcd.call(lambda _: self._etcd.leases.LeaseRevoke(request, self._etcd.attempt_timeout))

    # -- watches and closing ------------------------------------------------------

    def _watch(self, feed: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        self._watches_of.add(feed, key, tree, start_revision)

    def _unwatch(self, feed: WatchFeed) -> None:
        self._watches_of.remove(feed)

    def _close(self) -> None:
        self._etcd.shut = True
        self._watches_of.close()
        self._etcd.close()


def _credentials(url: str) -> tuple[str | None, str | None]:
    """The user and password of the URL, percent-decoded; (None, None) without a user."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        raise ConfigurationError("malformed credentials in the etcd:// URL", backend=BACKEND) from None
    if user is None:
        return None, None
    return unquote(user), unquote(password or "")


def _tls(scheme: str, ca: str | None, cert: str | None, key: str | None) -> TLS | None:
    """The TLS settings of ``etcds://`` or of any ``tls_*`` option, read from their files; None for plain etcd://."""
    if scheme != "etcds" and ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        raise ConfigurationError("tls_cert and tls_key go together (a client certificate and its key)", backend=BACKEND)
    contents: dict[str, bytes | None] = {}
    for name, path in (("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)):
        try:
            contents[name] = None if path is None else Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"{name}: cannot read {path!r}: {exc.strerror}", backend=BACKEND) from None
    return TLS(contents["tls_ca"], contents["tls_cert"], contents["tls_key"], cert, key)
