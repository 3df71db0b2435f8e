"""Writing a key: put, create-only put and compare-and-swap, each one multi-op that also logs it.

A plain put of an inline value is one round trip: set the znode and log it,
in a multi-op that also deletes and re-creates the key's guard, which fails
while the guard holds a chunks' marker (the old value's chunks then need a
free record, so the write takes the slow path). The slow path reads the
znode first and writes conditionally on the version it read; it is also the
only path for creates, ttl keys replaced after expiry, lease keys and big
values; a create-only write tries its create before reading anything. A
write retried after a lost reply first checks, by the nonce in the header,
whether its first attempt was applied.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from ..._errors import CoordError, KeyExists, KeyModified, KeyNotFound, LeaseExpired, StoreUnavailable
from ..._lease import Lease
from ..._store import check_revision
from ..._types import KVPair
from ._blobs import Blobs
from ._boundary import Boundary, Failed, Op, Retry, Try
from ._keys import Keys
from ._layout import INLINE, Blob, KeyPaths, Layout, Node, encode, entry, ttl_ms
from ._sessions import Sessions


def check_expected(expect: str | int, expired: bool, mzxid: int) -> None:
    """Raise what a conditional write (or delete) finding the key at ``mzxid`` must raise."""
    if expect != "any":
        check_revision(None if expired else mzxid, None if expect == "absent" else int(expect))


@dataclass(eq=False)
class _Put:
    """One write in progress: what it writes, where, and (for a big value) the chunks it staged."""

    key: str
    value: bytes
    ttl_ms: int
    lease: Lease | None
    client: KazooClient  # the lease's session, or the Store's
    sid: int  # that session's id, 0 without a lease
    expect: str | int  # "any", "absent" or the revision a CAS expects
    at: KeyPaths
    nonce: int = 0
    staged: tuple[Blob, str] | None = None  # chunks and their free record

    @property
    def data(self) -> bytes:
        blob = None if self.staged is None else self.staged[0]
        lease = None if self.lease is None else self.lease.id
        return encode(self.value if blob is None else b"", self.ttl_ms, lease, self.nonce, blob)

    def ops(self, unlink: list[Op]) -> list[Op]:
        """What follows the znode's own change: drop the old value's chunks, own the new ones, log it."""
        link = [] if self.staged is None else Blobs.link(self.at.guard, *self.staged)
        return [*unlink, *link, entry(b"P", self.key, self.data)]


class Writer:
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

    def write(self, key: str, value: bytes, ttl: float | None, lease: Lease | None, expect: str | int) -> KVPair:
        client, sid = self._sessions.hold(lease, key) if lease is not None else (self._zk.client, 0)
        ms = ttl_ms(ttl) if ttl is not None else 0
        put = _Put(key, value, ms, lease, client, sid, expect, self._layout.paths(key), random.getrandbits(64))
        try:
            return self._zk.call(lambda t: self._attempt(t, put))
        except (KeyExists, KeyModified, KeyNotFound):
            if put.staged is not None:  # never written: free the chunks now rather than at a trim
                record = put.staged[1]
                with contextlib.suppress(CoordError):
                    self._zk.call(lambda t: self._blobs.free(t, record))
            raise

    def _attempt(self, t: Try, put: _Put) -> KVPair:
        if t.retried:
            mine = self._mine(t, put)
            if mine is not None:
                return mine
        if len(put.value) > INLINE and put.staged is None:
            put.staged = self._blobs.stage(t, put.value)
        try:
            if put.expect == "any" and put.lease is None and put.staged is None:
                done = self._put_fast(t, put)
                if done is not None:
                    return done
            return self._put_slow(t, put)
        except Failed as exc:
            if put.staged is not None and exc.op == ("delete", put.staged[1]):
                put.staged = None  # the trimmer freed what we staged: stage again
                raise Retry("the staged value was freed") from None
            raise

    def _put_fast(self, t: Try, put: _Put) -> KVPair | None:
        """Overwrite in one round trip; None if the key is absent, leased or holding chunks (the slow path's cases)."""
        probe = [("delete", put.at.guard), ("create", put.at.guard, b"")]  # fails while the guard holds a marker
        try:
            stat = self._zk.commit(t, [("set", put.at.path, put.data), *probe, *put.ops([])])[0]
        except Failed as exc:
            if exc.on(NoNodeError, "set", put.at.path) or exc.on((NotEmptyError, NoNodeError), "delete", put.at.guard):
                return None
            raise
        return self._written(put, stat, stat.czxid) if stat.ephemeralOwner == 0 else None

    def _put_slow(self, t: Try, put: _Put) -> KVPair:
        if put.expect == "absent":  # the create proves the key absent: read it only if it is there
            done = self._create(t, put)
            if done is not None:
                return done
        self._zk.fresh(put.client)  # the read decides the write: it must see this Store's writes
        for _ in range(100):
            read = self._keys.read(t, put.key, put.client)
            done = self._create(t, put) if read is None else self._replace(t, put, *read)
            if done is not None:
                return done
        raise StoreUnavailable("too much contention on the key")

    def _create(self, t: Try, put: _Put) -> KVPair | None:
        """Create the key with its guard; None to look again."""
        if isinstance(put.expect, int):
            raise KeyNotFound("the key is gone")
        path, guard = put.at.path, put.at.guard
        ops = [("create", path, put.data, put.lease is not None), ("create", guard, b""), ("set", guard, b"")]
        try:  # the guard's set returns the stat of this write's zxid, which a create does not
            stat = self._zk.commit(t, [*ops, *put.ops([])], put.client)[2]
        except Failed as exc:
            if exc.on(NoNodeError, "create", path):
                t.wait(self._zk.client.ensure_path_async(put.at.folder))
            elif exc.on(NodeExistsError, "create", guard):
                self._keys.reap_guard(t, put.key)  # a lease key whose session expired unlogged
            elif not exc.on(NodeExistsError, "create", path):
                raise
            return None
        return self._written(put, stat, stat.mzxid)

    def _replace(self, t: Try, put: _Put, node: Node, stat: Any) -> KVPair | None:
        """Replace the value of an existing key, read at ``stat``; None to look again."""
        expired = node.expired(stat)
        check_expected(put.expect, expired, stat.mzxid)
        same_kind = (stat.ephemeralOwner == 0) if put.lease is None else (stat.ephemeralOwner == put.sid)
        rest = put.ops(Blobs.unlink(put.at.guard, [node.blob] if node.blob else []))
        path, ephemeral = put.at.path, put.lease is not None
        try:
            if same_kind and not expired:
                stat = self._zk.commit(t, [("set", path, put.data, stat.version), *rest], put.client)[0]
                return self._written(put, stat, stat.czxid)
            # ephemeral <-> persistent, or another session: the znode is re-created
            gone = [entry(b"D", put.key)] if expired else []
            ops = [*gone, ("delete", path, stat.version), ("create", path, put.data, ephemeral)]
            stat = self._zk.commit(t, [*ops, ("set", put.at.guard, b""), *rest], put.client)[len(ops)]
            return self._written(put, stat, stat.mzxid)
        except Failed as exc:
            if isinstance(exc.error, NoNodeError) and exc.op[1].startswith(put.at.guard):
                with contextlib.suppress(NodeExistsError):  # a key not written by coord: give it a guard
                    t.wait(self._zk.client.create_async(put.at.guard))
            elif not (exc.op[1] == path and isinstance(exc.error, (BadVersionError, NoNodeError))):
                raise
            if isinstance(put.expect, int):
                raise KeyModified("the key changed during the swap") from None
            return None

    def _written(self, put: _Put, stat: Any, created: int) -> KVPair:
        if put.ttl_ms:
            self._on_ttl(put.key, stat.mzxid, (stat.mtime + put.ttl_ms) / 1000)
        if put.lease is None:
            return KVPair(put.key, put.value, stat.mzxid, created, None)
        if not self._sessions.held(put.lease.id, put.sid):  # a new session may have run the write: not this lease's
            self._delete(put.key)
            raise LeaseExpired(f"lease {put.lease.id} expired")
        return KVPair(put.key, put.value, stat.mzxid, created, put.lease.id)

    def _mine(self, t: Try, put: _Put) -> KVPair | None:
        """After a lost reply: the key as our write left it, if that write was applied and is still there."""
        read = self._keys.read(t, put.key)
        if read is None or read[0].nonce != put.nonce:
            return None
        node, stat = read
        return KVPair(put.key, self._blobs.read(t, node), stat.mzxid, stat.czxid, node.lease)
