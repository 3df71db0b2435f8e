"""The one boundary between pyetcd (gRPC) and coord: the client, and ``call``, where their errors become coord's.

TLS (``etcds://``, or any ``tls_*`` option) makes every channel a secure one
that verifies the members' certificates and host names, with a client
certificate if given; a user and password get a token (``_auth``) that every
request carries and that is renewed when etcd refuses it. A certificate
refused by either side, and a user or password etcd refuses, raise
``ConfigurationError`` at once: no retry can change them.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import grpc
import pyetcd
from pyetcd import exceptions as etcd_errors
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from ..._errors import ConfigurationError, CoordError, LeaseExpired, StoreClosed, StoreUnavailable
from ..._types import KVPair
from ._auth import Credentials, StaleToken, TokenInterceptor, refused_identity

BACKEND = "etcd"
_T = TypeVar("_T")

DEFAULT_PORT = 2379
#: The longest a single request may take before it is retried (or fails).
_LONGEST_ATTEMPT = 86400.0
#: How long an endpoint that failed is passed over before it is tried again (when there are others).
_ENDPOINT_PAUSE = 1.0
_GRPC_OPTIONS = [
    # gRPC's reconnect backoff grows to two minutes; a restarted etcd should be used at once.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    # Notice a dead connection (a frozen or partitioned server) under an idle watch stream. etcd
    # refuses pings more often than every 5 s, and only while a stream is open.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # A list of many large values may exceed gRPC's default 4 MiB; etcd itself sends any size.
    ("grpc.max_receive_message_length", -1),
]
# RESOURCE_EXHAUSTED is etcd's "too many requests" as well as a full database: both worth a wait.
_TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
# What pyetcd turns those codes (and its own connection troubles) into.
_TRANSIENT_ERRORS = (
    etcd_errors.ConnectionFailedError,
    etcd_errors.ConnectionTimeoutError,
    etcd_errors.InternalServerError,
    etcd_errors.NoServerAvailableError,
    etcd_errors.WatchTimedOut,
)
# What makes pyetcd pass an endpoint over (``_manage_grpc_errors``), for the stubs coord calls itself.
_ENDPOINT_FAILURES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
)
_BACKOFF = wait_exponential(multiplier=0.02, max=0.5)


@dataclass(frozen=True)
class TLS:
    """The PEM contents of a CA to verify the members with (None: the system's), a client certificate and key."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    cert_file: str | None = None  # the files they were read from (Python's ssl loads a certificate from a file)
    key_file: str | None = None


class Boundary:
    """The Store's pyetcd client over every endpoint, and the one place its errors become coord's."""

    def __init__(
        self,
        hosts: list[tuple[str, int]],
        timeout: float,
        *,
        tls: TLS | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.hosts = hosts
        self.timeout = timeout
        self.shut = False  # set by close: from then on every call raises StoreClosed
        self.tls = tls
        pause = _ENDPOINT_PAUSE if len(hosts) > 1 else 0.0  # a lone endpoint is worth retrying at once
        creds = None if tls is None else grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
        endpoints = [
            pyetcd.Endpoint(
                f"[{host}]" if ":" in host else host,
                port,
                secure=tls is not None,
                creds=creds,
                time_retry=pause,
                opts=_GRPC_OPTIONS,
            )
            for host, port in hosts
        ]
        self.credentials: Credentials | None = None
        if user is not None:
            interceptor = TokenInterceptor()
            self.credentials = Credentials(user, password or "", interceptor, self.describe)
            for endpoint in endpoints:
                endpoint.channel = grpc.intercept_channel(endpoint.channel, interceptor)
        # Each attempt gets a third of the budget, so a hung endpoint leaves time to try the next one.
        # gRPC turns a deadline much further off (10**9 s) into one already passed: no attempt needs a day.
        self.attempt_timeout = min(timeout, max(1.0, timeout / 3), _LONGEST_ATTEMPT)
        self.client = pyetcd.MultiEndpointEtcd3Client(endpoints, timeout=self.attempt_timeout, failover=True)

    def describe(self) -> str:
        """The URL, with the password masked."""
        user = f"{quote(self.credentials.user)}:***@" if self.credentials is not None else ""
        scheme = "etcds" if self.tls is not None else "etcd"
        return f"{scheme}://{user}" + ",".join(f"{host}:{port}" for host, port in self.hosts)

    def log_in(self) -> None:
        """Get the first token for the URL's user (nothing without one), within the timeout."""
        credentials = self.credentials
        if credentials is not None:
            self.call(lambda _: credentials.authenticate(self.client.authstub, self.attempt_timeout))

    def date(self) -> str | None:
        """The endpoint in use's HTTP ``Date`` header (``GET /version``; etcd serves HTTP on its gRPC port).

        Its clock, to the second: one request on a connection of its own,
        with the Store's TLS settings (``/version`` needs no credentials).
        """
        if self.shut:
            raise StoreClosed("the store is closed", backend=BACKEND)
        host, _, port = self.client.endpoint_in_use.netloc.rpartition(":")
        host = host.strip("[]")
        tls = self.tls
        try:
            if tls is None:
                conn: http.client.HTTPConnection = http.client.HTTPConnection(
                    host, int(port), timeout=self.attempt_timeout
                )
            else:
                context = ssl.create_default_context(cadata=None if tls.ca is None else tls.ca.decode())
                if tls.cert_file is not None:
                    context.load_cert_chain(tls.cert_file, tls.key_file)
                conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=self.attempt_timeout)
            try:
                conn.request("GET", "/version")
                response = conn.getresponse()
                response.read()
            finally:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            raise StoreUnavailable(f"{self.describe()}: no answer to GET /version: {exc}", backend=BACKEND) from exc
        return response.getheader("Date")

    def close(self) -> None:
        self.shut = True
        self.client.close()

    # -- the one boundary with pyetcd and gRPC ---------------------------------

    @property
    def kv(self) -> Any:
        """The KV stub on the endpoint in use: requests built here skip pyetcd's per-call wrappers."""
        return self.client.kvstub

    @property
    def leases(self) -> Any:
        """The Lease stub on the endpoint in use."""
        return self.client.leasestub

    def call(self, request: Callable[[bool], _T], *, within: float | None = None) -> _T:
        """Run ``request`` against etcd: the one place where pyetcd's and gRPC's errors become coord's.

        Transient failures are retried for ``within`` seconds (the store's
        ``timeout`` by default), then raise ``StoreUnavailable``. ``request``
        is told whether an earlier attempt failed, since that attempt may
        have been applied before its answer was lost: a write can then
        recognise its own result instead of reporting it as a conflict.
        """
        if self.shut:
            raise StoreClosed("the store is closed", backend=BACKEND)
        budget = self.timeout if within is None else max(0.0, within)
        if self.credentials is not None:
            request = self.credentials.renewing(request, lambda: self.client.authstub, self.attempt_timeout)
        # The first attempt runs bare: a retry loop set up for every request costs more than the request.
        try:
            return request(False)
        except StaleToken as exc:  # a watch refused, with no credentials to renew
            raise ConfigurationError(f"{self.describe()} refused access: {exc}", backend=BACKEND) from None
        except (grpc.RpcError, etcd_errors.Etcd3Exception) as exc:
            self._failed(exc)
            if not transient(exc) or budget == 0:
                raise self._coord_error(exc, budget) from exc
        except ValueError as exc:
            if self.shut:  # gRPC's answer to a call racing close(): a renewal, a re-subscription
                raise StoreClosed("the store is closed", backend=BACKEND) from exc
            raise
        return self._retry(request, budget)

    def _retry(self, request: Callable[[bool], _T], budget: float) -> _T:
        """Attempts after the first failed one, for ``budget`` seconds, each told that it is a retry."""
        retrying = Retrying(
            stop=stop_after_delay(budget), wait=_BACKOFF, retry=retry_if_exception(transient), reraise=True
        )
        try:
            for attempt in retrying:
                with attempt:
                    if self.shut:
                        raise StoreClosed("the store is closed", backend=BACKEND)
                    try:
                        return request(True)
                    except grpc.RpcError as exc:
                        self._failed(exc)
                        raise
        except StaleToken as exc:
            raise ConfigurationError(f"{self.describe()} refused access: {exc}", backend=BACKEND) from None
        except (grpc.RpcError, etcd_errors.Etcd3Exception) as exc:
            raise self._coord_error(exc, budget) from exc
        except ValueError as exc:
            if self.shut:
                raise StoreClosed("the store is closed", backend=BACKEND) from exc
            raise
        raise AssertionError("tenacity neither returned nor raised")

    def read_at(self, build: Callable[[int], Any], revision: int) -> tuple[Any, bool]:
        """Run the read-only Txn ``build(revision)``: its answer, and whether it could read at ``revision``.

        If etcd compacted that revision away (or ``revision`` is 0) it reads
        the current state, ``build(0)``, instead.
        """

        def attempt(_: bool) -> tuple[Any, bool]:
            if revision > 0:
                try:
                    return self.kv.Txn(build(revision), self.attempt_timeout), True
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.OUT_OF_RANGE:  # etcd's "required revision has been compacted"
                        raise
            return self.kv.Txn(build(0), self.attempt_timeout), False

        return self.call(attempt)

    def _failed(self, exc: BaseException) -> None:
        """After a raw stub's transient failure, pass the endpoint over, as pyetcd's own methods do."""
        if isinstance(exc, grpc.RpcError) and exc.code() in _ENDPOINT_FAILURES:
            self.client.endpoint_in_use.fail()
            self.client._clear_old_stubs()  # the next stub is made on the next endpoint's channel

    def _coord_error(self, exc: Exception, budget: float) -> CoordError:
        code = exc.code() if isinstance(exc, grpc.RpcError) else None
        detail = exc.details() if isinstance(exc, grpc.RpcError) else str(exc) or type(exc).__name__
        where = self.describe()
        if code == grpc.StatusCode.NOT_FOUND:  # the only NOT_FOUND our calls can get: "requested lease not found"
            return LeaseExpired(f"etcd no longer has the lease: {detail}", backend=BACKEND)
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return ConfigurationError(f"{where} refused access: {detail}", backend=BACKEND)
        if code == grpc.StatusCode.INVALID_ARGUMENT and "user name is empty" in detail:  # auth on, no user given
            return ConfigurationError(
                f"{where} refused access: {detail} (give user:password@ in the URL)", backend=BACKEND
            )
        if isinstance(exc, grpc.RpcError) and refused_identity(exc):
            return ConfigurationError(f"{where}: TLS refused a certificate: {detail}", backend=BACKEND)
        if transient(exc):
            return StoreUnavailable(f"{where} did not answer within {budget:g}s: {detail}", backend=BACKEND)
        return CoordError(f"{where} refused the request: {detail}", backend=BACKEND)


def transient(exc: BaseException) -> bool:
    if isinstance(exc, grpc.RpcError):
        # gRPC's own limit on a request's size is RESOURCE_EXHAUSTED too, and no wait will change it;
        # nor will it change a certificate refused.
        return (
            exc.code() in _TRANSIENT_CODES
            and "larger than max" not in (exc.details() or "")
            and not refused_identity(exc)
        )
    return isinstance(exc, _TRANSIENT_ERRORS)


def key_range(key: str, tree: bool) -> tuple[bytes, bytes | None]:
    """The etcd range of one key, or of every key strictly under ``key`` (every key at all for "")."""
    if not tree:
        return key.encode(), None
    if not key:
        return b"\0", b"\0"
    start = f"{key}/".encode()
    return start, pyetcd.utils.prefix_range_end(start)


def text(key: bytes) -> str:
    return key.decode("utf-8", errors="replace")


def mod_revision(kv: Any) -> int:
    return int(kv.mod_revision)


def pair(kv: Any) -> KVPair:
    return KVPair(text(kv.key), kv.value, kv.mod_revision, kv.create_revision, kv.lease or None)


def written(key: str, value: bytes, lease_id: int, response: Any) -> KVPair:
    """The pair a Put (or a Txn's put) wrote; ``created`` comes from the previous pair, if there was one."""
    revision = response.header.revision
    created = response.prev_kv.create_revision if response.HasField("prev_kv") else revision
    return KVPair(key, value, revision, created, lease_id or None)


#: etcd's revisions and lease ids are int64: a number beyond that cannot match any, and protobuf refuses it.
INT64_MAX = 2**63 - 1


def int64(number: int) -> int:
    """``number`` clamped to int64, for a comparison that a number out of range can only fail."""
    return max(-INT64_MAX - 1, min(INT64_MAX, number))
