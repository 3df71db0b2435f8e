"""The HTTP connections to etcd's members, and which member is in use.

Every request is HTTP/1.1 on a kept-alive connection (urllib3): the Store's
requests share one pool per member, and each long poll (a watch) holds a
connection of its own, a ``Lane``, so it never takes one from the pool and
can be interrupted when its watch closes. A member that failed is passed
over for a second when there are others, so a retry goes to the next one;
the long polls then reading from it are broken off, so the watches move to
another member at once rather than wait on a connection that may be dead.
TLS (``etcd2s://``, or a CA, client certificate and key) verifies the
members' certificates and host names; a user and password go in a basic
authentication header, never in a URL or a message.
"""

from __future__ import annotations

import contextlib
import math
import socket
import threading
import weakref
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3

from ..._clock import Clock

__all__ = ["TLS", "Interrupted", "Lane", "Members"]

#: How long a member that failed is passed over (when there are others).
_PAUSE = 1.0
#: Connections kept per member for the Store's own requests.
_POOL_SIZE = 16
# Notice a dead peer under a long poll; the poll's own timeout covers a frozen one.
_KEEPALIVE = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *[
        (socket.IPPROTO_TCP, getattr(socket, name), value)
        for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 2))
        if hasattr(socket, name)
    ],
]


class Interrupted(Exception):
    """The lane was closed while its request ran (a watch was closed)."""


@dataclass(frozen=True)
class TLS:
    """A CA file to verify the members with (None: the system's), and a client certificate and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


class Members:
    """etcd's members as the URL lists them: a connection pool each, and the one in use."""

    def __init__(
        self, scheme: str, hosts: list[tuple[str, int]], clock: Clock, *, tls: TLS | None, auth: str | None
    ) -> None:
        self.scheme = scheme
        self.hosts = hosts
        self._clock = clock
        self._tls = tls
        self._user = auth.partition(":")[0] if auth else None
        self.headers = urllib3.make_headers(basic_auth=auth) if auth else {}
        self._failed_at = [-math.inf] * len(hosts)
        self._pause = _PAUSE if len(hosts) > 1 else 0.0
        self._current = 0
        self._pools = [self.new_pool(number, _POOL_SIZE) for number in range(len(hosts))]
        self._lanes: weakref.WeakSet[Lane] = weakref.WeakSet()
        self._lanes_lock = threading.Lock()

    def describe(self) -> str:
        """The URL, with the password masked."""
        user = f"{quote(self._user)}:***@" if self._user is not None else ""
        return f"{self.scheme}://{user}" + ",".join(f"{host}:{port}" for host, port in self.hosts)

    def name(self, number: int) -> str:
        host, port = self.hosts[number]
        return f"{host}:{port}"

    def pick(self) -> int:
        """The member to use: the current one, unless it failed within the pause and another has not."""
        now = self._clock.now()
        current = self._current
        if now - self._failed_at[current] >= self._pause:
            return current
        count = len(self.hosts)
        for step in range(1, count + 1):
            candidate = (current + step) % count
            if now - self._failed_at[candidate] >= self._pause:
                self._current = candidate
                return candidate
        self._current = (current + 1) % count
        return self._current

    def failed(self, number: int) -> None:
        """A request to member ``number`` failed: pass it over, and break off the long polls reading from it."""
        self._failed_at[number] = self._clock.now()
        if len(self.hosts) == 1:
            return  # nowhere else to go: a long poll on a dead connection fails by itself, or times out
        with self._lanes_lock:
            lanes = list(self._lanes)
        for lane in lanes:
            lane.abort(number)

    def now(self) -> float:
        return self._clock.now()

    def failed_since(self, number: int, moment: float) -> bool:
        """Whether a request to member ``number`` failed at ``moment`` or later (when there are others to go to)."""
        return len(self.hosts) > 1 and self._failed_at[number] >= moment

    def lane(self) -> Lane:
        """Connections of their own, for a thread that holds a request open for long."""
        lane = Lane(self)
        with self._lanes_lock:
            self._lanes.add(lane)
        return lane

    def pool(self, number: int) -> urllib3.HTTPConnectionPool:
        return self._pools[number]

    def new_pool(self, number: int, size: int) -> urllib3.HTTPConnectionPool:
        host, port = self.hosts[number]
        common: dict[str, Any] = {
            "maxsize": size,
            "block": False,
            "retries": False,
            "headers": self.headers,
            "socket_options": [*urllib3.connection.HTTPConnection.default_socket_options, *_KEEPALIVE],
        }
        if self._tls is None:
            return urllib3.HTTPConnectionPool(host, port, **common)
        return urllib3.HTTPSConnectionPool(
            host,
            port,
            cert_reqs="CERT_REQUIRED",
            ca_certs=self._tls.ca,
            cert_file=self._tls.cert,
            key_file=self._tls.key,
            **common,
        )

    def close(self) -> None:
        for pool in self._pools:
            pool.close()


class Lane:
    """The connections of one thread that holds a request open for long (a long poll), apart from the pools."""

    def __init__(self, members: Members) -> None:
        self._members = members
        self._pools: dict[int, urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        self._response: Any = None
        self._number = -1  # the member ``_response`` comes from
        self.closed = False
        self.aborted = False  # its last read was broken off by ``abort``

    def pool(self, number: int) -> urllib3.HTTPConnectionPool:
        with self._lock:
            if self.closed:
                raise Interrupted
            if number not in self._pools:
                self._pools[number] = self._members.new_pool(number, 1)
            return self._pools[number]

    def reading(self, response: Any, number: int = -1, sent: float = math.inf) -> None:
        """``response`` from member ``number``, asked for at ``sent``, is being read (None: no longer).

        ``close`` interrupts it, and so does ``abort``; if the member failed
        since ``sent``, it is broken off at once (the abort came too early).
        """
        with self._lock:
            self._response, self._number = response, number
            if response is not None:
                self.aborted = self._members.failed_since(number, sent)
            closed, aborted = self.closed, self.aborted
        if (closed or aborted) and response is not None:
            _shutdown(response)

    def abort(self, number: int) -> None:
        """Break off the response being read if it comes from member ``number`` (its reader sees a failure)."""
        with self._lock:
            response = self._response if self._number == number else None
            self.aborted = self.aborted or response is not None
        if response is not None:
            _shutdown(response)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            response, pools = self._response, list(self._pools.values())
            self._pools.clear()
        if response is not None:
            _shutdown(response)
        for pool in pools:
            pool.close()


def _shutdown(response: Any) -> None:
    with contextlib.suppress(OSError, ValueError):  # already done, or never connected
        response.shutdown()
