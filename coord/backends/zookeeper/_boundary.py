"""The one boundary between kazoo and coord: every request goes through ``Boundary.call``.

``call`` retries transient failures (lost connection, timeout, moved or
expired session) within the Store's timeout and translates every kazoo
exception into a coord error, chained with ``raise ... from``. Inside a call,
``commit`` runs one multi-op and names the operation that failed, so callers
decide by what failed, not by an index they would have to keep in step.

Read your own writes across sessions: a Store writes through its main
session and through its lease sessions, which may be connected to different
servers, and a follower serves reads from what it has applied. ``fence`` is
the newest zxid a write of this Store returned. ``reader()`` is a client
whose reads see it: the main one once it has seen a zxid that new, else the
session that made that write (a server that applied a zxid applied every
earlier one), so the usual case costs nothing. Where the session is given
(a transaction reads on the session it writes with), ``fresh(client)`` sends
a ``sync`` ahead of the reads if that session is behind: ZooKeeper holds a
session's later requests behind its sync, so it costs no round trip of the
client's, only the server's wait for the leader.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    OperationTimeoutError,
    RolledBackError,
    RuntimeInconsistency,
    SessionClosedRequireSaslError,
    SessionExpiredError,
    SessionMovedError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from ..._errors import StoreClosed, StoreUnavailable
from ._security import HideCredentials, Security, refusal, watch_refusals

log = logging.getLogger("coord.zookeeper")
log.addFilter(HideCredentials())  # the logger kazoo logs to (``open_client``)
T = TypeVar("T")

TRANSIENT = (ConnectionLoss, OperationTimeoutError, SessionExpiredError, SessionMovedError, KazooTimeoutError)
# One operation of a multi-op: ("create", path, data[, ephemeral]), ("set", path, data[, version]),
# ("delete", path[, version]), ("check", path, version), ("log", name, entry) or ("free", blob name);
# the last two create ROOT/log/<name><seq> and ROOT/log/b<seq>.
Op = tuple[Any, ...]
_TRIM_EVERY = 64  # commits between two trims of the log
_MAX_SESSION = (2**31 - 1) / 1000  # seconds: the most a session timeout can ask for
_MAX_WAIT = min(threading.TIMEOUT_MAX, 365 * 86400.0)  # the longest wait threading takes


@dataclass
class Try:
    """One call's attempts: their common deadline, and whether this is a retry (an earlier reply may be lost)."""

    deadline: float
    retried: bool = False

    def wait(self, result: Any) -> Any:
        return result.get(timeout=min(_MAX_WAIT, max(0.001, self.deadline - time.monotonic())))


class Failed(Exception):
    """One operation of a multi-op failed: which one (and its place in the multi-op), and why."""

    def __init__(self, op: Op, error: Exception, index: int = -1) -> None:
        super().__init__(op, error)
        self.op, self.error, self.index = op, error, index

    def on(self, error: type[Exception] | tuple[type[Exception], ...], op: str, path: str) -> bool:
        """Whether ``op`` on ``path`` failed with ``error``."""
        return isinstance(self.error, error) and self.op[0] == op and self.op[1] == path


class Retry(Exception):
    """Start the call over: what it read or prepared is gone (retried like a lost connection)."""


def connect(hosts: str, ttl: float, timeout: float, security: Security) -> KazooClient:
    """A started kazoo client whose session times out after ``ttl``; kazoo reconnects it forever."""
    client = open_client(hosts, ttl, security)
    start(client, hosts, timeout, security)
    return client


def open_client(hosts: str, ttl: float, security: Security) -> KazooClient:
    # command_retry=None: retries are ours (``call``), so a write retried after a lost reply can check itself.
    retry = KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0)
    # The protocol carries the session timeout as a signed 32-bit count of ms; the server grants at most its
    # maxSessionTimeout anyway (40 s by default), and the lease reports what it granted.
    timeout = min(ttl, _MAX_SESSION)
    client = KazooClient(
        hosts=hosts, timeout=timeout, connection_retry=retry, command_retry=None, logger=log, **security.client_args()
    )
    watch_refusals(client)
    return client


def start(client: KazooClient, hosts: str, timeout: float, security: Security) -> None:
    """Connect ``client`` within ``timeout``; a refused certificate fails at once, not at the timeout."""
    deadline = time.monotonic() + min(_MAX_WAIT, timeout)
    connected, refused = client.start_async(), refusal(client)
    while not connected.is_set() and time.monotonic() < deadline:
        if refused is not None and refused.reason is not None:
            stop(client)
            raise security.refused(refused.reason)
        connected.wait(min(0.02, max(0.0, deadline - time.monotonic())))
    if not client.connected:
        stop(client)
        raise StoreUnavailable(f"cannot reach ZooKeeper at {hosts}")


def stop(client: KazooClient) -> None:
    try:
        client.stop()
        client.close()
    except Exception:  # closing is best effort: the server expires what is left
        log.debug("closing a kazoo client failed", exc_info=True)


class Boundary:
    """The Store's main client, and the one place kazoo's errors become coord's."""

    def __init__(self, hosts: str, timeout: float, session_timeout: float, log_path: str, security: Security) -> None:
        self.hosts, self.timeout, self._log, self.security = hosts, min(timeout, _MAX_WAIT), log_path, security
        self.client = connect(hosts, session_timeout, timeout, security)
        self.on_trim_due: Callable[[], None] = lambda: None
        self._commits = itertools.count(1)
        self.fence = 0  # the newest zxid a write of this Store returned, on any of its sessions
        self._fenced: KazooClient | None = None  # the session that returned it

    def call(self, fn: Callable[[Try], T], timeout: float | None = None) -> T:
        """Run ``fn``, retrying transient failures within the timeout; translate kazoo's errors."""
        limit = self.timeout if timeout is None else timeout
        attempt = Try(time.monotonic() + limit)
        try:
            for round_ in Retrying(
                stop=stop_after_delay(limit),
                wait=wait_exponential(multiplier=0.02, max=0.5),
                retry=retry_if_exception_type((*TRANSIENT, Retry)),
                reraise=True,
            ):
                with round_:
                    try:
                        return fn(attempt)
                    finally:
                        attempt.retried = True
        except (*TRANSIENT, Retry) as exc:
            refused = refusal(self.client)
            if refused is not None and refused.reason is not None:  # reconnecting, each time refused
                raise self.security.refused(refused.reason) from exc
            raise StoreUnavailable(f"ZooKeeper at {self.hosts} did not answer within {limit}s: {exc!r}") from exc
        except ConnectionClosedError as exc:
            raise StoreClosed("the ZooKeeper connection is closed") from exc
        except Failed as exc:
            self.refuse(exc.error, exc.op[1] if exc.op[0] not in ("log", "free") else self._log)
            raise StoreUnavailable(f"ZooKeeper refused a write: {exc.error!r}") from exc.error
        except KazooException as exc:
            self.refuse(exc, None)
            raise StoreUnavailable(f"ZooKeeper refused the request: {exc!r}") from exc
        raise AssertionError("unreachable")

    def refuse(self, error: Exception, path: str | None) -> None:
        """Raise ``ConfigurationError`` if ``error`` is the server refusing this identity: never worth a retry."""
        if isinstance(error, NoAuthError):
            raise self.security.not_allowed(path) from error
        if isinstance(error, SessionClosedRequireSaslError):
            raise self.security.refused("the server requires authentication: a user and password") from error
        if isinstance(error, AuthFailedError):
            raise self.security.refused("authentication failed") from error

    def commit(self, t: Try, ops: Iterable[Op], client: KazooClient | None = None, count: bool = True) -> list[Any]:
        """One multi-op (on ``client``, default the main one); raise ``Failed`` naming the operation that failed."""
        return self.settle(t, self.send(ops, client), count)

    def send(self, ops: Iterable[Op], client: KazooClient | None = None) -> Sent:
        """Send a multi-op without waiting for it, so that reads can follow it in the same flight."""
        ops = list(ops)
        client = client or self.client
        tx = client.transaction()
        for op, *args in ops:
            if op == "create":
                tx.create(args[0], args[1], ephemeral=args[2] if len(args) > 2 else False)
            elif op == "log":
                tx.create(f"{self._log}/{args[0]}", args[1], sequence=True)
            elif op == "free":
                tx.create(f"{self._log}/b", args[0].encode(), sequence=True)
            elif op == "set":
                tx.set_data(args[0], args[1], args[2] if len(args) > 2 else -1)
            elif op == "check":
                tx.check(args[0], args[1])
            else:
                tx.delete(args[0], args[1] if len(args) > 1 else -1)
        return Sent(ops, client, tx.commit_async())

    def settle(self, t: Try, sent: Sent, count: bool = True) -> list[Any]:
        """Wait for a multi-op ``send`` sent; raise ``Failed`` naming the operation that failed."""
        results: list[Any] = t.wait(sent.result)
        for index, (op, result) in enumerate(zip(sent.ops, results, strict=False)):
            if isinstance(result, Exception) and not isinstance(result, (RolledBackError, RuntimeInconsistency)):
                if isinstance(result, TRANSIENT):
                    raise result
                raise Failed(op, result, index)
        if sent.client.last_zxid >= self.fence:
            self.fence, self._fenced = sent.client.last_zxid, sent.client
        if count and next(self._commits) % _TRIM_EVERY == 0:  # trims do not count: they log nothing
            self.on_trim_due()
        return results

    def reader(self) -> KazooClient:
        """A client whose reads see every write of this Store (see the module docstring)."""
        client = self.client
        if client.last_zxid >= self.fence:
            return client
        fenced = self._fenced
        if fenced is not None and fenced.connected and fenced.last_zxid >= self.fence:
            return fenced
        self.fresh(client)
        return client

    def fresh(self, client: KazooClient) -> None:
        """Before reads on ``client``: make them see every write of this Store (see the module docstring)."""
        if client.last_zxid < self.fence:
            client.sync_async(self._log)  # its reply needs no wait: the session's reads queue behind it


@dataclass
class Sent:
    """A multi-op on its way: its operations, the session it went on, and kazoo's pending result."""

    ops: list[Op]
    client: KazooClient
    result: Any
