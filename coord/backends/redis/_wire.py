"""The connections of a RedisStore: redis-py Connections in a small pool of its own, each script packed once.

redis-py's generic command path (its pool's bookkeeping, its retry wrapper,
its metrics, packing ~20 arguments a call) cost more than the round trip
itself on coord's hot path. Here a script call is the packed prefix made
once per script (``EVALSHA <sha> 1 {ns} <history> <reply ms>``) plus the
call's own arguments, sent with one ``sendall``, and read with redis-py's
parser. A connection whose reply was not read in full (any error but a
script's own) is closed rather than reused.

Every new connection first runs the ``boot`` script (see ``_scripts``),
before any other command goes through it, and hands its reply to
``on_boot``: this is where the Store learns that the server is a new one.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable
from hashlib import sha1
from typing import Any, Protocol, cast

import redis
from redis.exceptions import NoScriptError, ResponseError

from ._identity import read_alert
from ._scripts import SCRIPTS, WRITES, source

#: Idle connections kept for reuse; more are opened while more threads call at once.
MAX_IDLE = 16


class Connection(Protocol):
    """What coord uses of a redis-py Connection (typed here: redis-py's are not)."""

    pid: int

    def send_packed_command(self, command: list[bytes], check_health: bool = True) -> None: ...
    def read_response(self) -> Any: ...
    def disconnect(self) -> None: ...
    def on_connect(self) -> None: ...


def pack(args: Iterable[str | bytes]) -> bytes:
    """Bulk strings of the Redis protocol, without the array header."""
    out = []
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def command(*args: str | bytes) -> bytes:
    return b"*%d\r\n" % len(args) + pack(args)


class Wire:
    """Connections to one Redis server for one namespace, and its scripts.

    ``replicas`` > 0 sends ``WAIT replicas wait_ms`` after every script that
    writes, in the same round trip, and ``run`` raises ``ReplicaShortfall``
    when fewer replicas acknowledged in time.
    """

    def __init__(
        self,
        options: dict[str, Any],
        *,
        namespace: str,
        head: list[str],
        on_boot: Callable[[Any], None],
        replicas: int = 0,
        wait_ms: int = 0,
    ) -> None:
        pool = redis.Redis(**options).connection_pool  # redis-py's own mapping of the options (TLS, auth, db)
        self._class = pool.connection_class
        self._kwargs = {**pool.connection_kwargs, "redis_connect_func": self._boot}
        self._idle: collections.deque[Connection] = collections.deque()
        self._pid = os.getpid()
        self._closed = False
        self._on_boot = on_boot
        key = self._tag = "{" + namespace + "}"
        self._width = 4 + len(head)  # EVALSHA, sha, 1, key, head...
        self._sha: dict[str, bytes] = {}
        self._eval: dict[str, bytes] = {}
        for name in SCRIPTS:
            text = source(name)
            self._sha[name] = pack(("EVALSHA", sha1(text.encode()).hexdigest(), "1", key, *head))
            self._eval[name] = pack(("EVAL", text, "1", key, *head))
        self._boot_command = command("EVAL", source("boot"), "1", key, *head, "")
        self._wait = command("WAIT", str(replicas), str(wait_ms)) if replicas > 0 else b""
        self._replicas = replicas

    def key(self, name: str) -> str:
        """The full name of one of the namespace's keys (see the package docstring)."""
        return f"{self._tag}:{name}"

    def connection(self, **overrides: Any) -> Connection:
        """A new connection (it connects on first use), for a caller that keeps it to itself."""
        return cast(Connection, self._class(**{**self._kwargs, **overrides}))

    def run(self, name: str, args: list[str | bytes], conn: Connection | None = None) -> Any:
        """Run script ``name`` (its arguments after the head: the request id first); one round trip."""
        tail = pack(args)
        count = b"*%d\r\n" % (self._width + len(args))
        wait = self._wait if name in WRITES else b""

        def send(conn: Connection) -> Any:
            try:
                return self._roundtrip(conn, count + self._sha[name] + tail + wait, wait)
            except NoScriptError:  # a new server, or its scripts were flushed: send the text, which loads it
                return self._roundtrip(conn, count + self._eval[name] + tail + wait, wait)

        return self._on(conn, send)

    def call(self, *args: str | bytes, conn: Connection | None = None) -> Any:
        """Any other command (XREAD, XRANGE, CLIENT ...)."""

        def send(conn: Connection) -> Any:
            conn.send_packed_command([command(*args)], check_health=False)
            return conn.read_response()

        return self._on(conn, send)

    def _on(self, conn: Connection | None, send: Callable[[Connection], Any]) -> Any:
        """``send`` on ``conn``, or on a pooled connection given back after; a broken connection is dropped."""
        own = conn is None
        used = self._take() if conn is None else conn
        try:
            return send(used)
        except ResponseError:
            raise  # a server's error (a script's, say): the connection is in order
        except BaseException:
            used.disconnect()
            raise
        finally:
            if own:
                self._give(used)

    def pipeline(self, commands: list[tuple[str, ...]], conn: Connection) -> list[Any]:
        """Several commands in one send, their replies in order (a blocking one delays the next)."""
        try:
            conn.send_packed_command([b"".join(command(*args) for args in commands)], check_health=False)
            replies: list[Any] = []
            error: ResponseError | None = None
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:  # read the other replies first: the connection stays in order
                    error = error or exc
                    replies.append(None)
        except BaseException:
            conn.disconnect()
            raise
        if error is not None:
            raise error
        return replies

    def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().disconnect()

    def _roundtrip(self, conn: Connection, packed: bytes, wait: bytes) -> Any:
        conn.send_packed_command([packed], check_health=False)
        if not wait:
            return conn.read_response()
        try:
            reply = conn.read_response()
        finally:
            acknowledged = conn.read_response()  # WAIT's reply, read even after the script's error
        if acknowledged < self._replicas:
            raise ReplicaShortfall(acknowledged, self._replicas)
        return reply

    def _take(self) -> Connection:
        if self._pid != os.getpid():  # a forked child must not share its parent's sockets
            self._idle.clear()
            self._pid = os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return self.connection()

    def _give(self, conn: Connection) -> None:
        if self._closed or len(self._idle) >= MAX_IDLE or conn.pid != self._pid:
            conn.disconnect()
        else:
            self._idle.append(conn)

    def _boot(self, conn: Connection) -> None:
        """redis-py's hook on every new connection: its handshake, then the boot script. A TLS
        connection that breaks here may be the server refusing our certificate: its alert says so."""
        try:
            conn.on_connect()
        except redis.exceptions.ConnectionError as exc:
            alert = read_alert(conn, exc)
            if alert is not None:
                raise alert from exc
            raise
        conn.send_packed_command([self._boot_command], check_health=False)
        self._on_boot(conn.read_response())


class ReplicaShortfall(redis.exceptions.RedisError):
    """A write was applied on the primary, but fewer replicas than asked acknowledged it in time."""

    def __init__(self, acknowledged: int, wanted: int) -> None:
        super().__init__(f"only {acknowledged} of {wanted} replicas acknowledged the write in time")
