"""Reading and removing keys: what the Store, the log worker and lease revocation share.

A key's znode and its guard are created and deleted together, in one
multi-op that also logs the change. The guard outlives the znode only when
a lease's session expired (ZooKeeper deleted the ephemeral znode, unlogged):
then it stops anyone re-creating the key until some client logs the delete,
which ``reap_guard`` does exactly once, because it takes the guard with it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from ..._types import KVPair
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

    def scan(self, t: Try, prefix: str) -> tuple[list[Found], dict[str, int]]:
        """Every key znode under ``prefix`` and each directory's pzxid, a level of the tree per round trip."""
        client = self._zk.client
        dirs: dict[str, int] = {}
        pending: list[tuple[str, Any]] = []
        level = [(prefix, self._layout.dir(prefix))]
        while level:
            listings = [(p, zp, client.get_children_async(zp, include_data=True)) for p, zp in level]
            level = []
            for p, zp, result in listings:
                try:
                    names, stat = t.wait(result)
                except NoNodeError:
                    continue
                dirs[p] = stat.pzxid
                for name in names:
                    if name.startswith("="):
                        pending.append((join(p, unquote(name[1:])), client.get_async(f"{zp}/{name}")))
                    elif not name.startswith("~"):
                        level.append((join(p, unquote(name)), f"{zp}/{name}"))
        found: list[Found] = []
        for key, result in pending:
            try:
                data, stat = t.wait(result)
            except NoNodeError:
                continue
            found.append((key, decode(data), stat))
        return found, dirs

    def removal(self, key: str, version: int | None, blobs: list[Blob]) -> list[Op]:
        """Delete a key (at ``version``; None: prove it absent) and its guard, hand its chunks to a record, log it."""
        paths = self._layout.paths(key)
        # Creating the key proves it absent; its guard kept anyone from re-creating it meanwhile.
        head = (
            [("create", paths.path, b""), ("delete", paths.path)]
            if version is None
            else [("delete", paths.path, version)]
        )
        return [*head, *self._blobs.unlink(paths.guard, blobs), ("delete", paths.guard), ("log", entry(b"D", key))]

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
