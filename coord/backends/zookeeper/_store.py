"""ZooKeeperStore: the Store methods, each one call through the boundary (``_boundary.Boundary.call``)."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable
from typing import ClassVar

from kazoo.exceptions import BadVersionError, NoAuthError, NoNodeError, NotEmptyError

from ..._clock import Clock
from ..._errors import ConfigurationError, KeyModified, KeyNotFound
from ..._lease import Lease
from ..._store import Store
from ..._txn import Op
from ..._types import KVPair, ServerTime
from ..._url import Location, flag
from ..._watch import WatchFeed
from ._blobs import Blobs
from ._boundary import Boundary, Failed, Try, stop
from ._keys import Keys
from ._layout import Layout, entry
from ._security import security
from ._sessions import Sessions
from ._transactions import Transactions
from ._worker import Worker
from ._writes import Writer, check_expected

_BATCH = 100  # keys per multi-op in delete_tree


class ZooKeeperStore(Store):
    """The Store on ZooKeeper; see the package docstring for how keys, watches and leases map onto znodes.

    Options: ``root`` (default ``/coord``) is where the Store's znodes live
    inside the URL's chroot; ``session_timeout`` (default 10 s) is the main
    session's; ``history`` (default 1000) is how many changes the log keeps
    for watches to replay. Security (``_security``): ``user:password@`` in
    the URL for digest authentication; ``acl`` (``creator``, the default with
    credentials, or ``open``, the default without, or ZooKeeper ACL
    entries); ``zookeepers://`` or ``tls_ca``, ``tls_cert``, ``tls_key`` for
    TLS, and ``tls_verify_hostname`` (default true).
    """

    backend = "zookeeper"
    OPTIONS: ClassVar[dict[str, Callable[[str], object]]] = {
        "root": str,
        "session_timeout": float,
        "history": int,
        "acl": str,
        "tls_ca": str,
        "tls_cert": str,
        "tls_key": str,
        "tls_verify_hostname": flag,
    }

    def __init__(
        self,
        location: Location,
        *,
        timeout: float = 5.0,
        prefix: str = "",
        clock: Clock | None = None,
        root: str = "/coord",
        session_timeout: float = 10.0,
        history: int = 1000,
        acl: str | None = None,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_verify_hostname: bool = True,
    ) -> None:
        super().__init__(prefix=prefix, clock=clock)
        root = "/" + root.strip("/")
        if root == "/" or history < 1:
            raise ConfigurationError("root must not be '/', and history must be at least 1")
        if not (timeout > 0 and session_timeout > 0):  # also refuses NaN; an infinite one waits as long as threads can
            raise ConfigurationError(
                f"timeout and session_timeout must be positive, not {timeout!r}, {session_timeout!r}"
            )
        chroot = "/" + location.path.strip("/") if location.path.strip("/") else ""
        hosts = ",".join(f"{h}:{p}" for h, p in location.endpoints(2181)) + chroot
        secure = security(location, acl, tls_ca, tls_cert, tls_key, tls_verify_hostname)
        self._url = secure.shown
        self._layout = layout = Layout(root)
        self._zk = zk = Boundary(hosts, timeout, session_timeout, layout.log, secure)
        self._blobs = Blobs(zk, layout)
        self._keys = Keys(zk, layout, self._blobs)
        self._worker = Worker(zk, layout, self._keys, self._blobs, history, lambda: self.closed, self.clock)
        self._sessions = Sessions(zk, layout, self._keys, defer=lambda task: self._worker.submit("lost", task))
        self._writer = Writer(zk, layout, self._keys, self._blobs, self._sessions, self._worker.reap_at, self._delete)
        self._transactions = Transactions(
            zk, layout, self._keys, self._blobs, self._sessions, self._worker.reap_at, self._delete
        )
        zk.on_trim_due = self._worker.trim
        zk.client.add_listener(self._worker.on_state)
        try:
            zk.call(lambda t: self._open_root(t, root))
        except BaseException:
            stop(zk.client)
            raise

    def _open_root(self, t: Try, root: str) -> None:
        """Make the Store's znodes if they are missing, then read the root: a root whose ACL refuses this
        identity (another user's, or this user's with a wrong password) is refused now, not at the first use."""
        layout, client = self._layout, self._zk.client
        for path in (layout.kv, layout.log, layout.blob):
            t.wait(client.ensure_path_async(path))  # ``exists``, and ``create`` if missing: neither reads the root
        try:
            t.wait(client.get_async(root))
        except NoAuthError:
            raise self._zk.security.not_allowed(root) from None

    def describe(self) -> str:
        return self._url

    def _server_time(self) -> ServerTime:
        """The ``ctime`` (the leader's clock, in ms) of a znode made for it with the Store's ACL, then deleted."""
        client = self._zk.client

        def attempt(t: Try) -> ServerTime:
            path, stat = t.wait(
                client.create_async(self._layout.clock, ephemeral=True, sequence=True, include_data=True)
            )
            t.wait(client.delete_async(path))
            return ServerTime(stat.ctime / 1000, 0.001, "ZooKeeper znode ctime")

        return self._zk.call(attempt)

    def _get(self, key: str) -> KVPair | None:
        def attempt(t: Try) -> KVPair | None:
            read = self._keys.read(t, key, self._zk.reader())
            return None if read is None else self._keys.pair(t, key, *read)

        return self._zk.call(attempt)

    def _exists(self, key: str) -> bool:
        def attempt(t: Try) -> bool:
            read = self._keys.read(t, key, self._zk.reader())
            return read is not None and not read[0].expired(read[1])

        return self._zk.call(attempt)

    def _list(self, prefix: str) -> builtins.list[KVPair]:
        def attempt(t: Try) -> builtins.list[KVPair]:
            found = self._keys.scan(t, prefix, self._zk.reader())[0]
            pairs = (self._keys.pair(t, key, node, stat) for key, node, stat in found)
            return [pair for pair in pairs if pair is not None]

        return self._zk.call(attempt)

    def _transaction(self, ops: builtins.list[Op]) -> builtins.list[object]:
        return self._transactions.run(ops)

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        return self._writer.write(key, value, ttl, lease, "any")

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        return self._writer.write(key, value, ttl, lease, "absent" if revision is None else revision)

    def _delete(self, key: str) -> bool:
        paths = self._layout.paths(key)

        def attempt(t: Try) -> bool:
            try:
                self._keys.remove(t, key)
            except Failed as exc:
                if exc.on(NoNodeError, "delete", paths.guard):  # a key without a guard (not written by coord)
                    self._zk.commit(t, [("delete", paths.path), entry(b"D", key)])
                    return True
                if not exc.on(NoNodeError, "delete", paths.path):
                    raise
                self._keys.reap_guard(t, key)
                return t.retried  # a retry that finds nothing: our first try deleted it
            return True

        return self._zk.call(attempt)

    def _atomic_delete(self, key: str, revision: int) -> None:

        def attempt(t: Try) -> None:
            read = self._keys.read(t, key)
            if read is None:
                if t.retried:
                    return
                raise KeyNotFound("the key is gone")
            node, stat = read
            check_expected(revision, node.expired(stat), stat.mzxid)
            try:
                self._keys.remove(t, key, stat.version, node.blob)
            except Failed as exc:
                if isinstance(exc.error, BadVersionError):
                    raise KeyModified("the key changed during the delete") from None
                if isinstance(exc.error, NoNodeError):
                    raise KeyNotFound("the key is gone") from None
                raise

        self._zk.call(attempt)

    def _delete_tree(self, prefix: str) -> None:
        self._zk.call(lambda t: self._delete_under(t, prefix))

    def _delete_under(self, t: Try, prefix: str) -> None:
        for _ in range(100):
            found, dirs = self._keys.scan(t, prefix)
            found.sort()
            try:
                for start in range(0, len(found), _BATCH):
                    ops = []
                    for key, node, _ in found[start : start + _BATCH]:
                        ops += self._keys.removal(key, -1, [node.blob] if node.blob else [])
                    self._zk.commit(t, ops)
            except Failed as exc:
                if isinstance(exc.error, (NoNodeError, NotEmptyError)):
                    continue  # someone deleted or rewrote one meanwhile: look again
                raise
            # Bare directories, deepest first; one that gained a key meanwhile stays.
            for folder in sorted(dirs, key=lambda d: (-d.count("/"), d)):
                if folder.startswith(prefix):
                    with contextlib.suppress(NotEmptyError, NoNodeError):
                        t.wait(self._zk.client.delete_async(self._layout.dir(folder)))
            return

    def _watch(self, watch: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        self._worker.watch(watch, key, tree, start_revision)

    def _unwatch(self, watch: WatchFeed) -> None:
        self._worker.unwatch(watch)

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        return self._sessions.grant(ttl)

    def _lease_keepalive(self, lease: Lease) -> bool:
        return self._sessions.keepalive(lease)

    def _lease_revoke(self, lease: Lease) -> None:
        self._sessions.revoke(lease)

    def _close(self) -> None:
        self._worker.wake()
        self._sessions.close()
        stop(self._zk.client)
