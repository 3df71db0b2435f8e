"""Transactions: every condition and write of a transaction in one ZooKeeper multi-op, its reads right behind it.

1. Read, in one request, the keys whose state decides a condition or the
   shape of a write. A create-only put whose key no other operation names
   is not read: its create is its condition (if the create finds the key,
   the key is read and the transaction planned again).
2. Plan against what was read: each condition is decided here
   (``check_revision``, as the single-key paths do) and becomes a version
   check (or, for "absent", a create and delete of the key's znode) at the
   head of the multi-op, so a key that moved after the read fails the
   multi-op and the transaction is read and planned again. Each write
   brings its usual operations: znode, guard, chunk markers, log entry
   (``_writes``, ``_keys``). The multi-op's operations all get one zxid:
   every write of a transaction has the same ``revision``.
3. Send the multi-op, and the reads right behind it on the same session
   before its reply comes back: a transaction of create-only puts and a
   list costs two round trips (multi-op and listing, then the values).
   A read followed in the transaction by a write to one of its keys gets
   that key as the operations before the read left it.

Exactness is that of compare-and-swap: a key deleted and re-created to the
version read, between the read and the multi-op, passes its version check.

One session: a multi-op runs on one ZooKeeper session, and an ephemeral
znode belongs to the session that creates it. Writes bound to leases of one
ttl share a session; writes bound to leases of different ttls in one
transaction raise ``NotSupported``.

Lost replies: every put carries the transaction's nonce, so a retried
attempt that finds its first put's key holding it takes the transaction as
done. A transaction without puts is taken as done when every key it deleted
is gone (or re-created since).
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from ..._errors import CoordError, KeyExists, KeyModified, KeyNotFound, LeaseExpired, StoreUnavailable
from ..._store import labelled
from ..._txn import Op
from ..._types import KVPair
from ._blobs import Blobs
from ._boundary import Boundary, Failed, Try
from ._keys import Keys, Lookup
from ._layout import INLINE, Layout, Node, ttl_ms
from ._sessions import Sessions
from ._transaction_plan import Plan, Txn, plan


class Transactions:
    def __init__(
        self,
        zk: Boundary,
        layout: Layout,
        keys: Keys,
        blobs: Blobs,
        sessions: Sessions,
        on_ttl: Callable[[str, int, float], None],
        delete: Callable[[str], bool],
    ) -> None:
        self._zk, self._layout, self._keys, self._blobs, self._sessions = zk, layout, keys, blobs, sessions
        self._on_ttl, self._delete = on_ttl, delete

    def run(self, ops: list[Op]) -> list[object]:
        if not ops:
            return []
        leased = [(op.lease, op.key) for op in ops if op.kind == "put" and op.lease is not None]
        client, sid = self._sessions.hold_many(leased) if leased else (self._zk.client, 0)
        txn = Txn(ops, client, sid, random.getrandbits(64))
        try:
            return self._zk.call(lambda t: self._attempt(t, txn))
        except (KeyExists, KeyModified, KeyNotFound, LeaseExpired):
            for _, record in txn.staged.values():  # never written: free the chunks now rather than at a trim
                with contextlib.suppress(CoordError):
                    self._zk.call(functools.partial(self._free, record=record))
            raise

    def _free(self, t: Try, record: str) -> None:
        self._blobs.free(t, record)

    def _attempt(self, t: Try, txn: Txn) -> list[object]:
        if t.retried and txn.sent is not None:
            done = self._applied(t, txn, txn.sent)
            if done is not None:
                return done
        txn.sent = None
        for _ in range(100):
            self._check_leases(txn)
            for i, op in enumerate(txn.ops):
                if op.kind == "put" and len(op.value) > INLINE and i not in txn.staged:
                    txn.staged[i] = self._blobs.stage(t, op.value)
            planned = plan(txn, self._layout, self._read(t, txn))
            if not planned.ops:
                return self._finish(t, txn, planned, 0, 0, self._lookup(txn, planned, fresh=True))
            sent = self._zk.send(planned.ops, txn.client)
            lookup = self._lookup(txn, planned, fresh=False)  # behind the multi-op, before its reply
            txn.sent = planned
            try:
                results = self._zk.settle(t, sent)
            except Failed as exc:
                txn.sent = None  # refused: nothing was written
                self._recover(t, txn, planned, exc)
                continue
            stat = results[planned.stat_at] if planned.stat_at is not None else None
            return self._finish(t, txn, planned, stat.mzxid if stat else 0, stat.mtime if stat else 0, lookup)
        raise StoreUnavailable("too much contention on the transaction's keys")

    def _check_leases(self, txn: Txn) -> None:
        for op in txn.ops:
            if op.lease is not None and not self._sessions.held(op.lease.id, txn.sid):
                with labelled(op.key):
                    raise LeaseExpired(f"lease {op.lease.id} expired")

    def _read(self, t: Try, txn: Txn) -> dict[str, tuple[Node, Any] | None]:
        """What the keys that need reading hold now, in one request on the transaction's session."""
        keys = txn.to_read()
        if not keys:
            return {}
        self._zk.fresh(txn.client)
        got, _ = self._keys.lookup(txn.client, keys, []).wait(t)
        return dict(zip(keys, got, strict=True))

    def _lookup(self, txn: Txn, planned: Plan, fresh: bool) -> Lookup | None:
        if not planned.gets and not planned.lists:
            return None
        if fresh:
            self._zk.fresh(txn.client)
        return self._keys.lookup(txn.client, planned.gets, planned.lists)

    def _recover(self, t: Try, txn: Txn, planned: Plan, exc: Failed) -> None:
        """Make the next plan right after the multi-op refused ``exc.op``; raise if nothing can."""
        role, key, index = planned.roles[exc.index]
        error, paths = exc.error, self._layout.paths(key)
        if role == "create" and isinstance(error, NodeExistsError):
            txn.must_read.add(key)  # the key exists: read it (a condition then decides)
        elif role in ("create", "proof") and isinstance(error, NoNodeError):
            t.wait(txn.client.ensure_path_async(paths.folder))
        elif role == "guard-create" and isinstance(error, NodeExistsError):
            self._keys.reap_guard(t, key)  # a lease key whose session expired unlogged
        elif role in ("guard-delete", "guard-set") and isinstance(error, NoNodeError):
            with contextlib.suppress(NodeExistsError):  # a key not written by coord: give it a guard
                t.wait(txn.client.create_async(paths.guard))
        elif role in ("guard-delete", "marker") and isinstance(error, (NotEmptyError, NoNodeError)):
            txn.markers[key] = self._blobs.markers(t, paths.guard)  # the header's chunks were not the markers
        elif role == "record" and isinstance(error, NoNodeError):
            txn.staged.pop(index, None)  # the trimmer freed what we staged: stage again
        elif not (
            role in ("check", "write", "proof") and isinstance(error, (BadVersionError, NoNodeError, NodeExistsError))
        ):
            raise exc  # a check or write found the key moved since the read: read again; anything else is an error

    def _applied(self, t: Try, txn: Txn, sent: Plan) -> list[object] | None:
        """After a lost reply: the results, if the multi-op was applied after all; None to run it again."""
        puts = sorted({op.key for op in txn.ops if op.kind == "put"})
        if puts:
            self._zk.fresh(txn.client)
            got, _ = self._keys.lookup(txn.client, puts, []).wait(t)
            mine = [stat for read in got if read is not None for node, stat in [read] if node.nonce == txn.nonce]
            if not mine:
                return None
            zxid, mtime = mine[0].mzxid, mine[0].mtime
        else:
            if not sent.deleted:
                return None  # checks and deletes of absent keys only: running them again is harmless
            self._zk.fresh(txn.client)
            keys = sorted(sent.deleted)
            got, _ = self._keys.lookup(txn.client, keys, []).wait(t)
            if any(
                read is not None and read[1].czxid == sent.deleted[key] for key, read in zip(keys, got, strict=True)
            ):
                return None
            zxid = mtime = 0
        return self._finish(t, txn, sent, zxid, mtime, self._lookup(txn, sent, fresh=False))

    def _finish(self, t: Try, txn: Txn, planned: Plan, zxid: int, mtime: int, lookup: Lookup | None) -> list[object]:
        """The results, once the multi-op is known applied at ``zxid`` (server time ``mtime``)."""
        results: list[object] = list(planned.outcomes)
        for i, op in enumerate(txn.ops):
            if op.kind == "put":
                created = planned.outcomes[i]
                lease = None if op.lease is None else op.lease.id
                results[i] = KVPair(op.key, op.value, zxid, zxid if created is None else created, lease)
                if op.ttl is not None:
                    self._on_ttl(op.key, zxid, (mtime + ttl_ms(op.ttl)) / 1000)
        lost = [op for op in txn.ops if op.lease is not None and not self._sessions.held(op.lease.id, txn.sid)]
        if lost:  # a new session ran the multi-op (the lease's expired just before): its keys are not the lease's
            for op in lost:
                with contextlib.suppress(CoordError):
                    self._delete(op.key)
            with labelled(lost[0].key):
                raise LeaseExpired("the lease expired during the transaction")
        if lookup is None:
            return results
        # The keys this transaction left written are listed as it wrote them (unless their directory changed since).
        final: dict[str, KVPair] = {}
        for op, result in zip(txn.ops, results, strict=True):
            if isinstance(result, KVPair):
                final[op.key] = result
            elif op.kind == "delete":
                final.pop(op.key, None)
        got, listings = lookup.wait(t, final, zxid)
        gets, lists = iter(got), iter(listings)
        for i, op in enumerate(txn.ops):
            shadow = planned.shadows.get(i, {})
            if op.kind == "get":
                read = next(gets)
                pair = None if read is None else self._keys.pair(t, op.key, *read)
                results[i] = self._as_left(t, planned, results, op.key, shadow[op.key]) if shadow else pair
            elif op.kind == "list":
                listing = next(lists)
                pairs = {key: self._keys.pair(t, key, node, stat) for key, node, stat in listing.found}
                pairs.update((key, final[key]) for key in listing.kept)
                for key, source in shadow.items():
                    pairs[key] = self._as_left(t, planned, results, key, source)
                results[i] = [pair for pair in pairs.values() if pair is not None]
        return results

    def _as_left(self, t: Try, planned: Plan, results: list[object], key: str, source: int) -> KVPair | None:
        """The key as op ``source`` of the transaction left it (-1: as it was before the transaction)."""
        if source >= 0:
            result = results[source]
            return result if isinstance(result, KVPair) else None
        before = planned.read.get(key)
        return None if before is None else self._keys.pair(t, key, *before)
