"""Reading and removing keys: what the Store, the log worker and lease revocation share.

A key's znode and its guard are created and deleted together, in one
multi-op that also logs the change. The guard outlives the znode only when
a lease's session expired (ZooKeeper deleted the ephemeral znode, unlogged):
then it stops anyone re-creating the key until some client logs the delete,
which ``reap_guard`` does exactly once, because it takes the guard with it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from ..._types import KVPair
from . import _reads as reads
from ._blobs import Blobs
from ._boundary import Boundary, Failed, Op, Retry, Try
from ._layout import Blob, Layout, Node, decode, entry, join

Found = tuple[str, Node, Any]  # a key, what its znode holds, and its stat


class Keys:
    def __init__(self, zk: Boundary, layout: Layout, blobs: Blobs) -> None:
        self._zk, self._layout, self._blobs = zk, layout, blobs

    def read(self, t: Try, key: str, client: KazooClient | None = None) -> tuple[Node, Any] | None:
        """What the key's znode holds, and its stat; None if there is no znode."""
        try:
            data, stat = t.wait((client or self._zk.client).get_async(self._layout.paths(key).path))
        except NoNodeError:
            return None
        return decode(data), stat

    def pair(self, t: Try, key: str, node: Node, stat: Any) -> KVPair | None:
        """The key as its znode holds it; None once a ttl key expired (it is gone for every read)."""
        if node.expired(stat):
            return None
        return KVPair(key, self._blobs.read(t, node), stat.mzxid, stat.czxid, node.lease)

    def scan(self, t: Try, prefix: str, client: KazooClient | None = None) -> tuple[list[Found], dict[str, int]]:
        """Every key znode under ``prefix`` and each directory's pzxid (see ``Lookup``)."""
        listing = self.lookup(client, [], [prefix]).wait(t)[1][0]
        return listing.found, listing.dirs

    def lookup(self, client: KazooClient | None, keys: list[str], prefixes: list[str]) -> Lookup:
        """Start reading ``keys`` and the keys under ``prefixes`` on ``client`` (default the main one)."""
        return Lookup(self._layout, client or self._zk.client, keys, prefixes)

    def removal(self, key: str, version: int | None, blobs: list[Blob]) -> list[Op]:
        """Delete a key (at ``version``; None: prove it absent) and its guard, hand its chunks to a record, log it."""
        paths = self._layout.paths(key)
        # Creating the key proves it absent; its guard kept anyone from re-creating it meanwhile.
        head = (
            [("create", paths.path, b""), ("delete", paths.path)]
            if version is None
            else [("delete", paths.path, version)]
        )
        return [*head, *self._blobs.unlink(paths.guard, blobs), ("delete", paths.guard), entry(b"D", key)]

    def remove(self, t: Try, key: str, version: int | None = -1, blob: Blob | None = None) -> None:
        """Commit ``removal``; ``blob`` is what the key's header holds (the guard's markers are read if it was wrong)."""
        guard = self._layout.paths(key).guard
        blobs = [blob] if blob else []
        for _ in range(3):
            try:
                self._zk.commit(t, self.removal(key, version, blobs))
                return
            except Failed as exc:  # ZooKeeper refuses to delete a guard that still has a marker
                if not (exc.on(NotEmptyError, "delete", guard) or exc.op[1].startswith(guard + "/")):
                    raise
            blobs = self._blobs.markers(t, guard)
        raise Retry("the key's value kept changing")

    def reap_guard(self, t: Try, key: str) -> bool:
        """Log the delete of a lease key its expired session removed; whether this call did."""
        try:
            self.remove(t, key, None)
        except Failed as exc:
            if isinstance(exc.error, (NodeExistsError, NoNodeError)):
                return False
            raise
        return True

    def reap(self, key: str, mzxid: int) -> None:
        """Delete a ttl key at expiry, unless it was written since."""

        def attempt(t: Try) -> None:
            read = self.read(t, key)
            if read is None:
                return
            node, stat = read
            if stat.mzxid != mzxid or not node.expired(stat):
                return
            try:
                self.remove(t, key, stat.version, node.blob)
            except Failed as exc:
                if not isinstance(exc.error, (BadVersionError, NoNodeError)):
                    raise

        self._zk.call(attempt)


@dataclass
class Listing:
    """The keys under a prefix, each directory's pzxid, and the keys the caller knew and had not read."""

    found: list[Found] = field(default_factory=list)
    dirs: dict[str, int] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)


class Lookup:
    """Keys and prefixes read together: one multiRead per level of the deepest prefix, the last with the values.

    The first request goes out at once (a transaction sends it right behind
    its multi-op); ``wait`` sends the rest. A flat prefix costs two requests:
    its children, then the znodes of the keys among them. A key the caller
    knows as of zxid ``through`` (a transaction, the keys it just wrote) is
    not read when its directory's children did not change since (pzxid):
    a prefix holding only those costs one request.
    """

    def __init__(self, layout: Layout, client: KazooClient, keys: list[str], prefixes: list[str]) -> None:
        self._layout, self._client, self._keys, self._prefixes = layout, client, keys, prefixes
        dirs = [(i, p, layout.dir(p)) for i, p in enumerate(prefixes)]
        self._first = reads.send(client, [("data", layout.paths(k).path) for k in keys] + _listing(dirs))
        self._dirs = dirs

    def wait(
        self, t: Try, known: Collection[str] = (), through: int = 0
    ) -> tuple[list[tuple[Node, Any] | None], list[Listing]]:
        """Each key's node and stat (None if absent), and each prefix's listing."""
        results = self._first.wait(t)
        got = [None if reads.absent(r) else (decode(r[0]), r[1]) for r in results[: len(self._keys)]]
        listings = [Listing() for _ in self._prefixes]
        dirs, rest = self._dirs, results[len(self._keys) :]
        while dirs or rest:
            found: list[tuple[int, str, str]] = []  # (prefix index, key, znode) to read
            deeper: list[tuple[int, str, str]] = []
            for (i, p, zp), (names, stat) in zip(dirs, zip(rest[0::2], rest[1::2], strict=True), strict=True):
                if reads.absent(names) or reads.absent(stat):
                    continue
                listings[i].dirs[p] = stat[1].pzxid
                unchanged = stat[1].pzxid <= through
                for name in names:
                    if name.startswith("="):
                        key = join(p, unquote(name[1:]))
                        if unchanged and key in known:
                            listings[i].kept.append(key)
                        else:
                            found.append((i, key, f"{zp}/{name}"))
                    elif not name.startswith("~"):
                        deeper.append((i, join(p, unquote(name)), f"{zp}/{name}"))
            if not found and not deeper:
                break
            pending = reads.send(self._client, [("data", z) for _, _, z in found] + _listing(deeper))
            answers = pending.wait(t)
            for (i, key, _), answer in zip(found, answers, strict=False):
                if not reads.absent(answer):
                    listings[i].found.append((key, decode(answer[0]), answer[1]))
            dirs, rest = deeper, answers[len(found) :]
        return got, listings


def _listing(dirs: list[tuple[int, str, str]]) -> list[reads.Read]:
    return [read for _, _, zp in dirs for read in (("children", zp), ("data", zp))]
