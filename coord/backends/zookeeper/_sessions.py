"""Leases: one extra ZooKeeper session per distinct lease ttl, whose ephemeral znodes are the lease's keys.

The session's timeout *is* the ttl (the server's ``minSessionTimeout`` is the
minimum; the granted ttl is what the server negotiated), and every lease of
that ttl shares it, so a lost session loses all of them. Keep-alive is any
request on the session, which the server times on its own clock. A lease is
tied to the session id it was granted under: after kazoo reconnects with a
new session, the old lease is gone (its keys were deleted by the server).
A session that expires deletes its ephemerals without a log entry: the
owner, if still running, then logs those deletes (``Keys.reap_guard``), as
do watchers of the keys and the next writer of each.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NoNodeError

from ..._errors import LeaseExpired, NotSupported, StoreUnavailable
from ..._lease import Lease
from ..._store import labelled
from ._boundary import Boundary, Failed, Try, open_client, start, stop
from ._keys import Keys
from ._layout import Layout


@dataclass(eq=False)
class _Session:
    """A ZooKeeper session holding the ephemeral keys of every lease of one ttl."""

    client: KazooClient
    granted: float
    connected: threading.Event = field(default_factory=threading.Event)
    leases: dict[int, set[str]] = field(default_factory=dict)  # lease id -> keys written with it
    closing: bool = False
    granting: int = 0  # grants waiting for it to connect: it is not idle

    @property
    def sid(self) -> int | None:
        return None if self.client.client_id is None else int(self.client.client_id[0])


class Sessions:
    def __init__(self, zk: Boundary, layout: Layout, keys: Keys, defer: Callable[[Callable[[], None]], None]) -> None:
        self._zk, self._layout, self._keys, self._defer = zk, layout, keys, defer
        self._lock = threading.RLock()
        self._sessions: dict[int, _Session] = {}  # requested ttl in ms -> session
        self._lease_of: dict[int, tuple[_Session, int]] = {}  # lease id -> (session, its session id)
        self._lease_objects: dict[int, Lease] = {}  # to mark them lost when their session is

    def grant(self, ttl: float) -> tuple[int, float]:
        ms = math.ceil(ttl * 1000)
        with self._lock:
            session = self._sessions.get(ms)
            if session is None or session.closing:  # none, or its last lease just ended: a new one
                session = self._sessions[ms] = self._open(ttl)
            session.granting += 1
        try:
            if not session.connected.wait(self._zk.timeout) or session.sid is None:
                raise StoreUnavailable(f"cannot reach ZooKeeper at {self._zk.hosts}")
            lease_id = random.getrandbits(63) or 1
            with self._lock:
                session.leases[lease_id] = set()
                self._lease_of[lease_id] = (session, session.sid)
        finally:
            with self._lock:
                session.granting -= 1
        return lease_id, session.granted

    def _open(self, ttl: float) -> _Session:
        session = _Session(open_client(self._zk.hosts, ttl, self._zk.security), ttl)
        connect = session.client._connection._connect

        def granted(*args: Any) -> Any:  # kazoo keeps the negotiated timeout to itself: read_timeout = 2/3 of it
            timeouts = connect(*args)
            session.granted = round(timeouts[0] * 1.5) / 1000
            return timeouts

        session.client._connection._connect = granted
        session.client.add_listener(lambda state: self._on_state(session, state))
        start(session.client, self._zk.hosts, self._zk.timeout, self._zk.security)
        session.connected.set()
        return session

    def _on_state(self, session: _Session, state: str) -> None:
        if state == KazooState.CONNECTED:
            session.connected.set()
            return
        session.connected.clear()
        if state == KazooState.LOST and not session.closing:
            self._defer(lambda: self._lost(session))  # not on kazoo's thread: it must not block

    def _lost(self, session: _Session) -> None:
        with self._lock:
            leases = [self._lease_objects.get(lease_id) for lease_id in session.leases]
            keys = sorted({key for keys in session.leases.values() for key in keys})
        for lease in leases:
            if lease is not None:
                lease._mark_lost()
        # The server deleted their keys unlogged: log that, and free their chunks, now (reaping is idempotent).
        self._zk.call(lambda t: [self._keys.reap_guard(t, key) for key in keys])

    def hold(self, lease: Lease, key: str) -> tuple[KazooClient, int]:
        """The client and session id to write ``key`` under ``lease`` with; LeaseExpired if its session is gone."""
        return self.hold_many([(lease, key)])

    def hold_many(self, leased: list[tuple[Lease, str]]) -> tuple[KazooClient, int]:
        """``hold`` for the keys of one multi-op, which runs on one session: their leases must share it."""
        with self._lock:
            entries = []
            for lease, key in leased:
                entry = self._lease_of.get(lease.id)
                if entry is None or entry[0].sid != entry[1]:
                    if entry is not None:
                        lease._mark_lost()  # its session was replaced: it is gone, and the Store's next session is new
                    with labelled(key):
                        raise LeaseExpired(f"lease {lease.id} expired")
                entries.append(entry)
            if len({id(session) for session, _ in entries}) > 1:
                raise NotSupported(
                    "on ZooKeeper, the writes of one transaction bound to leases must use leases of one ttl:"
                    " a multi-op runs on one session, and each lease ttl has a session of its own"
                )
            for (lease, key), (session, _) in zip(leased, entries, strict=True):
                # Before sending: revoke must find the key even if the write's reply is lost.
                session.leases.setdefault(lease.id, set()).add(key)
                self._know(lease)
        return entries[0][0].client, entries[0][1]

    def _know(self, lease: Lease) -> None:
        """Keep the Lease object, and end the lease here too once the keeper counts it lost (lock held).

        kazoo keeps a session alive by itself, so a lease whose renewals
        stopped reaching coord (its deadline passed on the client) would
        outlive its deadline on the server: its keys are deleted then, as
        the server would if the lease were its own.
        """
        if lease.id not in self._lease_objects:
            lease.on_lost(lambda lost: self._defer(lambda: self.revoke(lost)))
        self._lease_objects[lease.id] = lease

    def held(self, lease_id: int, sid: int) -> bool:
        """Whether the lease is still held by the session ``sid`` (a write just made under it counts)."""
        entry = self._lease_of.get(lease_id)
        return entry is not None and entry[0].sid == sid

    def keepalive(self, lease: Lease) -> bool:
        with self._lock:
            entry = self._lease_of.get(lease.id)
            if entry is not None:
                self._know(lease)
        if entry is None:
            return False
        session, sid = entry

        def ping(t: Try) -> bool:  # any request renews the session, on the server's clock
            if session.sid != sid:
                return False
            t.wait(session.client.exists_async(self._layout.kv))
            return session.sid == sid

        return self._zk.call(ping, timeout=max(0.2, lease.ttl / 3))

    def revoke(self, lease: Lease) -> None:
        with self._lock:
            entry = self._lease_of.pop(lease.id, None)
            if entry is None:
                return
            keys = entry[0].leases.pop(lease.id, set())
            self._lease_objects.pop(lease.id, None)
        try:
            self._zk.call(lambda t: self._delete_keys(t, lease.id, entry[1], sorted(keys)))
        finally:
            self._close_if_idle(entry[0])

    def _delete_keys(self, t: Try, lease_id: int, sid: int, keys: list[str]) -> None:
        """Delete the keys still held by the lease (another may have taken one over since)."""
        for key in keys:
            read = self._keys.read(t, key)
            if read is None:
                self._keys.reap_guard(t, key)
                continue
            node, stat = read
            if stat.ephemeralOwner == sid and node.lease == lease_id:
                try:
                    self._keys.remove(t, key, stat.version, node.blob)
                except Failed as exc:
                    if not isinstance(exc.error, (BadVersionError, NoNodeError)):
                        raise

    def _close_if_idle(self, session: _Session) -> None:
        with self._lock:
            idle = not session.leases and not session.granting
            if idle:
                session.closing = True
                self._sessions = {ms: s for ms, s in self._sessions.items() if s is not session}
        if idle:
            stop(session.client)

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for session in sessions:
            session.closing = True
            stop(session.client)
