"""RedisStore: each operation one script, run through the one boundary with redis-py (``_call``)."""

from __future__ import annotations

import builtins
import functools
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ConnectionError,
    NoPermissionError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from ..._clock import Clock
from ..._errors import ConfigurationError, CoordError, StoreUnavailable
from ..._lease import Lease
from ..._store import Store
from ..._txn import Op
from ..._types import KVPair, ServerTime
from ..._url import Location, flag
from ..._watch import WatchFeed
from ._feed import Feed
from ._identity import client_options, refusal
from ._replies import ERRORS, failed_op, ms, pair, record, txn_args, txn_results
from ._scripts import MUTATIONS
from ._wire import Connection, ReplicaShortfall, Wire

__all__ = ["RedisStore"]

T = TypeVar("T")

log = logging.getLogger("coord.redis")

# Failures after which the same request may succeed: retried within the timeout.
_TRANSIENT = (ConnectionError, TimeoutError, ReadOnlyError, TryAgainError)
_FATAL = (AuthenticationError, AuthorizationError, NoPermissionError)


def _parse_db(location: Location) -> int:
    path = location.path.strip("/")
    try:
        return int(path) if path else 0
    except ValueError:
        raise ConfigurationError(f"the path of a redis URL is a database number, not {path!r}") from None


class RedisStore(Store):
    """The Store on one Redis 7 primary; see the package docstring.

    Options: ``namespace`` (default ``coord``) names the hash tag of every key;
    ``history`` (default 100 000) is how many changes watches can replay;
    ``tls_ca`` is a CA file to verify a ``rediss://`` server with (the
    system's CAs by default), ``tls_cert`` and ``tls_key`` a client
    certificate and its key; any of them turns TLS on. The server's
    certificate must name the host of the URL, unless
    ``tls_verify_hostname=false`` (a hazard: any certificate of a trusted CA
    then passes, a man in the middle's too);
    ``replicas`` (default 0) makes every write wait until that many replicas
    have it (``WAIT``, up to a quarter of ``timeout``), else it raises
    ``StoreUnavailable``: applied on the primary, outcome unknown. A user and
    password may be given in the URL (``redis://user:pass@host:port/db``).
    """

    backend = "redis"
    OPTIONS: ClassVar[Mapping[str, Callable[[str], object]]] = {
        "namespace": str,
        "history": int,
        "tls_ca": str,
        "tls_cert": str,
        "tls_key": str,
        "tls_verify_hostname": flag,
        "replicas": int,
    }

    def __init__(
        self,
        location: Location,
        *,
        timeout: float = 5.0,
        prefix: str = "",
        clock: Clock | None = None,
        namespace: str = "coord",
        history: int = 100_000,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        tls_verify_hostname: bool = True,
        replicas: int = 0,
    ) -> None:
        super().__init__(prefix=prefix, clock=clock)
        if len(location.hosts) > 1:
            raise ConfigurationError("redis:// takes one host: coord needs the primary, not a list of nodes")
        if history < 1:
            raise ConfigurationError("history must be at least 1")
        if replicas < 0:
            raise ConfigurationError("replicas must be 0 or more")
        if not namespace or any(ch in namespace for ch in "{}"):
            raise ConfigurationError(f"namespace must be non-empty and without braces, not {namespace!r}")
        self._timeout = float(timeout)
        self._namespace = namespace
        self._options = client_options(
            location,
            timeout=self._timeout,
            db=_parse_db(location),
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_verify_hostname=tls_verify_hostname,
        )
        self._where = f"{location.scheme}://{self._options['host']}:{self._options['port']}/{self._options['db']}"
        self._epoch: int | None = None  # the server's epoch, as far as this Store knows (see _booted)
        self._epochs_seen = 0  # how many times it changed under this Store
        self._epoch_lock = threading.Lock()
        self._request = f"{os.urandom(6).hex()}."
        self._requests = itertools.count()
        # Half the timeout per attempt, so a hung server still fails within about ``timeout``.
        self._wire = Wire(
            {**self._options, "socket_timeout": max(self._timeout / 2, 0.1)},
            namespace=namespace,
            head=[str(history), str(int((self._timeout + 10) * 1000))],
            on_boot=self._booted,
            replicas=replicas,
            wait_ms=max(int(self._timeout * 250), 1),
        )
        self._feed = Feed(self)
        try:
            self._call(lambda: self._wire.call("PING"))
        except CoordError:
            self._wire.close()
            raise

    def describe(self) -> str:
        return self._where

    def _server_time(self) -> ServerTime:
        seconds, micros = self._call(lambda: self._wire.call("TIME"))
        return ServerTime(int(seconds) + int(micros) / 1e6, 1e-6, "Redis TIME")

    # -- the one boundary with redis-py -------------------------------------

    def _call(self, fn: Callable[[], T], retry: bool = True) -> T:
        """Run ``fn`` and translate every redis-py error.

        Transient failures are retried within the timeout, unless ``retry``
        is false (the watch thread, which does its own retrying). A refused
        identity (``_identity.refusal``) is a ``ConfigurationError`` at once.
        """
        started = time.monotonic()
        try:
            try:
                return fn()  # the common case, without the cost of setting up tenacity
            except _TRANSIENT as exc:
                if not retry or not self._transient(exc):
                    raise
            for attempt in Retrying(
                stop=stop_after_delay(self._timeout - (time.monotonic() - started)),
                wait=wait_exponential(multiplier=0.02, max=0.5),
                retry=retry_if_exception(self._transient),
                reraise=True,
            ):
                with attempt:
                    return fn()
        except RedisError as exc:
            refused = refusal(exc, self._options, self._namespace)
            if refused is not None:  # redis-py's and the server's texts never hold the password
                raise ConfigurationError(f"{self._where} refused: {refused}", backend="redis") from exc
            raise _translate(exc, self._where) from exc
        except (OSError, ValueError) as exc:  # redis-py's socket code, e.g. a connection closed under it
            raise StoreUnavailable(f"redis connection failed: {exc}", backend="redis") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _transient(self, exc: BaseException) -> bool:
        return (
            isinstance(exc, _TRANSIENT)
            and not isinstance(exc, _FATAL)
            and refusal(exc, self._options, self._namespace) is None
        )

    def _run(self, name: str, *args: str | bytes, conn: Connection | None = None, once: bool = True) -> Any:
        """Run one script. A mutation carries a request id, so a retry cannot apply it twice."""
        if not (once and name in MUTATIONS):
            return self._call(functools.partial(self._wire.run, name, ["", *args], conn), retry=conn is None)
        request = f"{self._request}{next(self._requests)}"
        argv: list[str | bytes] = [f"+{request}", *args]  # '+': a first attempt, with no earlier reply to look up

        def attempt() -> Any:
            try:
                return self._wire.run(name, argv, conn)
            finally:
                argv[0] = request  # whatever happened, the next attempt is a retry

        return self._call(attempt, retry=conn is None)

    def _read(
        self, target: str, mode: str, conn: Connection | None = None, listen: list[str] | None = None
    ) -> tuple[int, list[KVPair]]:
        """The current revision and, read atomically with it, the pairs of a key (mode ``key``),
        of a tree (``tree``) or none (``none``); ``listen`` (a bell and its registrations, see
        ``_feed``) applies them first."""
        reply = self._run("read", target, mode, *(listen or ()), conn=conn)
        return int(reply[0]), [record(reply[i], reply[i + 1]) for i in range(1, len(reply), 2)]

    def _booted(self, epoch: bytes) -> None:
        """A new connection reports the server's epoch: a new one means a server that may have lost
        acknowledged writes (see ``_scripts.new_epoch``), so every lease of this Store is lost."""
        with self._epoch_lock:
            known, self._epoch = self._epoch, max(int(epoch), self._epoch or 0)
            if known is None or int(epoch) <= known:
                return
            self._epochs_seen += 1
        log.warning("%s is a new server (restarted, or failed over): its leases are lost", self.describe())
        for lease in self._keeper.leases():
            lease._mark_lost()

    # -- key/value ---------------------------------------------------------------

    def _get(self, key: str) -> KVPair | None:
        _, pairs = self._read(key, "key")
        return pairs[0] if pairs else None

    def _put(self, key: str, value: bytes, ttl: float | None, lease: Lease | None) -> KVPair:
        return self._write(key, value, "", ttl, lease)

    def _atomic_put(
        self, key: str, value: bytes, revision: int | None, ttl: float | None, lease: Lease | None
    ) -> KVPair:
        return self._write(key, value, "new" if revision is None else str(revision), ttl, lease)

    def _write(self, key: str, value: bytes, expected: str, ttl: float | None, lease: Lease | None) -> KVPair:
        ttl_ms = "" if ttl is None else ms(ttl)
        lease_id = "" if lease is None else str(lease.id)
        return pair(key, value, self._run("put", key, value, expected, ttl_ms, lease_id))

    def _delete(self, key: str) -> bool:
        return bool(self._run("delete", key, "") == b"1")

    def _atomic_delete(self, key: str, revision: int) -> None:
        self._run("delete", key, str(revision))

    def _list(self, prefix: str) -> builtins.list[KVPair]:
        return self._read(prefix, "tree")[1]

    def _delete_tree(self, prefix: str) -> None:
        self._run("delete_tree", prefix)

    def _transaction(self, ops: builtins.list[Op]) -> builtins.list[object]:
        args, writes = txn_args(ops)
        try:
            reply = self._run("txn", *args, once=writes)
        except CoordError as exc:
            index = failed_op(exc)
            if index is not None:
                exc.key = ops[index].key
            raise
        return txn_results(ops, reply)

    # -- leases ----------------------------------------------------------------

    def _lease_grant(self, ttl: float) -> tuple[int, float]:
        while True:
            seen = self._epochs_seen
            lease_id = int(self._run("grant", ms(ttl)))
            if seen == self._epochs_seen:
                return lease_id, ttl
            # The reply may come from the server before the new one, which may not have the lease:
            # grant another (the first, if it exists, expires unrenewed).

    def _lease_keepalive(self, lease: Lease) -> bool:
        return bool(self._run("keepalive", str(lease.id), ms(lease.ttl)) == 1)

    def _lease_revoke(self, lease: Lease) -> None:
        self._run("revoke", str(lease.id))

    # -- watches and closing --------------------------------------------------------

    def _watch(self, watch: WatchFeed, key: str, tree: bool, start_revision: int | None) -> None:
        self._feed.add(watch, key, tree, start_revision)

    def _unwatch(self, watch: WatchFeed) -> None:
        self._feed.remove(watch)

    def _close(self) -> None:
        self._feed.close()
        self._wire.close()


def _translate(exc: RedisError, where: str) -> CoordError:
    if isinstance(exc, ResponseError) and not isinstance(exc, _TRANSIENT):
        code, _, rest = str(exc).partition(" ")
        if code in ERRORS:
            return ERRORS[code](rest)
    if isinstance(exc, ReplicaShortfall):
        return StoreUnavailable(f"{where}: {exc}; the write was applied on the primary and may be lost")
    if isinstance(exc, _TRANSIENT):
        return StoreUnavailable(f"{where} could not be reached: {exc}")
    return StoreUnavailable(f"{where} failed: {exc}")
