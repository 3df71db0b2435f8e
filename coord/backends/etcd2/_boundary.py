"""The one boundary between urllib3 and coord: connections to etcd's members, and ``call``, where errors become coord's.

Every request is HTTP/1.1 on a kept-alive connection: the Store's requests
share one pool per member, and each long poll (a watch) holds a connection
of its own (a ``Lane``), so it never takes one from the pool. Small form
values travel in the query string (one send per request; etcd reads both),
large ones in the body.

``request`` sends one request to the member in use and sorts the answer:
etcd's JSON, an ``EtcdError`` (etcd's own errors: 100 key not found, 101
compare failed, 105 node exists, 401 event index cleared...), ``Transient``
(connection refused or reset, a timeout, a 5xx answer, etcd's 300 "raft
internal error" and 301 "leader election") or a coord error (credentials or
a certificate refused: ``ConfigurationError``). A transient failure passes
the member over for a second, so the next attempt goes to the next one.

``call`` runs an attempt, retries it while it fails transiently within the
Store's ``timeout`` (then ``StoreUnavailable``), tells each retry that it is
one (an earlier attempt may have been applied though its answer was lost),
and turns any ``EtcdError`` the attempt did not handle into a ``CoordError``.
No urllib3, socket or JSON exception gets past this module.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import urllib3
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential
from urllib3.exceptions import HTTPError, ReadTimeoutError, SSLError

from ..._clock import Clock
from ..._errors import ConfigurationError, CoordError, StoreClosed, StoreUnavailable

__all__ = [
    "BACKEND",
    "COMPARE_FAILED",
    "DEFAULT_PORT",
    "INDEX_CLEARED",
    "KEY_NOT_FOUND",
    "NODE_EXISTS",
    "Boundary",
    "EtcdError",
    "Idle",
    "Interrupted",
    "Lane",
    "TLS",
    "Transient",
]

BACKEND = "etcd2"
DEFAULT_PORT = 2379
T = TypeVar("T")

KEY_NOT_FOUND, COMPARE_FAILED, NODE_EXISTS, INDEX_CLEARED = 100, 101, 105, 401
#: "Raft internal error" (a proposal timed out) and "during leader election": worth another try.
_TRANSIENT_CODES = frozenset({300, 301})
#: How long a member that failed is passed over (when there are others).
_ENDPOINT_PAUSE = 1.0
#: Form values up to this size go in the query string.
_INLINE_FORM = 2048
_BACKOFF = wait_exponential(multiplier=0.02, max=0.5)
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# Notice a dead peer under a long poll; the poll's own timeout covers a frozen one.
_KEEPALIVE = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *[
        (socket.IPPROTO_TCP, getattr(socket, name), value)
        for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 2))
        if hasattr(socket, name)
    ],
]


class EtcdError(Exception):
    """One of etcd's v2 error answers: ``code`` (etcd's errorCode), its message and cause, and etcd's index."""

    def __init__(self, code: int, message: str, cause: str, index: int) -> None:
        super().__init__(f"{message} ({cause})" if cause else message)
        self.code, self.index = code, index


class Transient(Exception):
    """An attempt failed in a way the next attempt may not."""


class Idle(Exception):
    """A long poll had nothing to say within its read timeout."""


class Interrupted(Exception):
    """The lane was closed while its request ran (a watch was closed)."""


@dataclass(frozen=True)
class TLS:
    """A CA file to verify the members with (None: the system's), and a client certificate and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


class _Member:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.failed_at = -math.inf


class Lane:
    """The connections of one thread that holds a request open for long (a long poll), apart from the pool."""

    def __init__(self, boundary: Boundary) -> None:
        self._boundary = boundary
        self._pools: dict[int, urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()
        self._response: Any = None
        self.closed = False

    def pool(self, number: int) -> urllib3.HTTPConnectionPool:
        with self._lock:
            if self.closed:
                raise Interrupted
            if number not in self._pools:
                self._pools[number] = self._boundary.new_pool(number, 1)
            return self._pools[number]

    def reading(self, response: Any) -> None:
        """``response`` is being read (None: no longer): ``close`` interrupts it."""
        with self._lock:
            self._response = response
            closed = self.closed
        if closed and response is not None:
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


class Boundary:
    """The Store's connections to etcd's members, and the one place their errors become coord's."""

    def __init__(
        self,
        scheme: str,
        hosts: list[tuple[str, int]],
        timeout: float,
        clock: Clock,
        *,
        tls: TLS | None,
        auth: str | None,
    ) -> None:
        self.scheme = scheme
        self._clock = clock
        self.timeout = timeout
        self.shut = False
        # Each attempt gets a third of the budget, so a hung member leaves time to try the next one.
        self.attempt_timeout = min(timeout, max(1.0, timeout / 3))
        self._tls = tls
        self._user = auth.partition(":")[0] if auth else None
        self._headers = urllib3.make_headers(basic_auth=auth) if auth else {}
        self._members = [_Member(host, port) for host, port in hosts]
        self._pools = [self.new_pool(number, 16) for number in range(len(hosts))]
        self._current = 0
        self._pause = _ENDPOINT_PAUSE if len(hosts) > 1 else 0.0

    def describe(self) -> str:
        """The URL, with the password masked."""
        user = f"{quote(self._user)}:***@" if self._user is not None else ""
        return f"{self.scheme}://{user}" + ",".join(f"{m.host}:{m.port}" for m in self._members)

    def new_pool(self, number: int, size: int) -> urllib3.HTTPConnectionPool:
        member = self._members[number]
        host = member.host
        common: dict[str, Any] = {
            "maxsize": size,
            "block": False,
            "retries": False,
            "headers": self._headers,
            "socket_options": [*urllib3.connection.HTTPConnection.default_socket_options, *_KEEPALIVE],
        }
        if self._tls is None:
            return urllib3.HTTPConnectionPool(host, member.port, **common)
        return urllib3.HTTPSConnectionPool(
            host,
            member.port,
            cert_reqs="CERT_REQUIRED",
            ca_certs=self._tls.ca,
            cert_file=self._tls.cert,
            key_file=self._tls.key,
            **common,
        )

    def close(self) -> None:
        self.shut = True
        for pool in self._pools:
            pool.close()

    # -- one request -----------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        form: dict[str, str] | None = None,
        *,
        lane: Lane | None = None,
        read_timeout: float | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Send one request for the v2 key ``path`` to the member in use: etcd's JSON answer and its index.

        Raises ``EtcdError``, ``Transient``, ``Interrupted`` (the lane was
        closed) or ``ConfigurationError`` (see the module docstring).
        """
        if self.shut:
            raise StoreClosed("the store is closed", backend=BACKEND)
        number = self._member()
        member = self._members[number]
        url = "/v2/keys" + quote(path)
        params = urlencode(query or {})
        body = urlencode(form) if form else None
        if body is not None and len(body) <= _INLINE_FORM:
            params, body = f"{params}&{body}" if params else body, None
        if params:
            url += "?" + params
        pool = self._pools[number] if lane is None else lane.pool(number)
        timeout = urllib3.Timeout(connect=self.attempt_timeout, read=read_timeout or self.attempt_timeout)
        try:
            response = pool.urlopen(
                method,
                url,
                body=body,
                headers={**self._headers, **_FORM} if body is not None else None,
                timeout=timeout,
                preload_content=lane is None,
            )
            data = response.data if lane is None else self._wait(lane, response)
        except (HTTPError, OSError) as exc:
            raise self._failed(member, exc, lane) from exc
        return self._answer(member, response.status, response.headers, data)

    @staticmethod
    def _wait(lane: Lane, response: Any) -> bytes:
        """The body of a long poll: ``Idle`` if none came within its read timeout."""
        lane.reading(response)
        try:
            data: bytes = response.read()
        except ReadTimeoutError as exc:
            if not lane.closed:
                raise Idle from exc
            raise
        finally:
            lane.reading(None)
            response.release_conn()
        return data

    def _failed(self, member: _Member, exc: Exception, lane: Lane | None) -> Exception:
        """What a request that failed in urllib3 or the socket raises."""
        if lane is not None and lane.closed:
            return Interrupted()
        if isinstance(exc, SSLError) and _refused_identity(exc):
            return ConfigurationError(f"{self.describe()}: TLS refused: {_detail(exc)}", backend=BACKEND)
        member.failed_at = self._clock.now()
        return Transient(f"{member.host}:{member.port}: {_detail(exc)}")

    def _answer(self, member: _Member, status: int, headers: Any, data: bytes) -> tuple[dict[str, Any], int]:
        try:
            index = int(headers.get("X-Etcd-Index") or 0)
            body = json.loads(data) if data else {}
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if status >= 500:
                member.failed_at = self._clock.now()
                raise Transient(f"{member.host}:{member.port} answered {status}") from exc
            raise CoordError(
                f"{self.describe()} answered {status} with something other than etcd's JSON", backend=BACKEND
            ) from exc
        if status < 300:
            return body, index
        if "errorCode" in body:
            code = int(body["errorCode"])
            error = EtcdError(code, str(body.get("message", "")), str(body.get("cause", "")), int(body.get("index", 0)))
            if code in _TRANSIENT_CODES:
                member.failed_at = self._clock.now()
                raise Transient(f"{member.host}:{member.port}: {error}") from error
            raise error
        if status in (401, 403):
            raise ConfigurationError(
                f"{self.describe()} refused coord's credentials: {body.get('message', status)}", backend=BACKEND
            )
        if status >= 500:
            member.failed_at = self._clock.now()
            raise Transient(f"{member.host}:{member.port} answered {status}: {body.get('message', '')}")
        raise CoordError(
            f"{self.describe()} refused the request ({status}): {body.get('message', '')}", backend=BACKEND
        )

    def _member(self) -> int:
        """The member to use: the current one, unless it failed within the pause and another has not."""
        current = self._current
        now = self._clock.now()
        if now - self._members[current].failed_at >= self._pause:
            return current
        count = len(self._members)
        for step in range(1, count + 1):
            candidate = (current + step) % count
            if now - self._members[candidate].failed_at >= self._pause:
                self._current = candidate
                return candidate
        self._current = (current + 1) % count
        return self._current

    # -- attempts and retries ----------------------------------------------------------------

    def call(self, attempt: Callable[[bool], T], *, within: float | None = None) -> T:
        """Run ``attempt(retried)``, retried while it fails transiently for ``within`` seconds (default: ``timeout``).

        ``retried`` tells an attempt that an earlier one failed and may
        still have been applied. An ``EtcdError`` the attempt lets through
        becomes a ``CoordError``; past the budget, ``StoreUnavailable``.
        """
        budget = self.timeout if within is None else max(0.0, within)
        try:
            return attempt(False)  # bare: a retry loop set up for every request costs more than the request
        except Transient as exc:
            if budget == 0:
                raise self._unavailable(exc, budget) from exc
        except EtcdError as exc:
            raise self._refused(exc) from exc
        retrying = Retrying(
            stop=stop_after_delay(budget), wait=_BACKOFF, retry=retry_if_exception_type(Transient), reraise=True
        )
        try:
            for tried in retrying:
                with tried:
                    return attempt(True)
        except Transient as exc:
            raise self._unavailable(exc, budget) from exc
        except EtcdError as exc:
            raise self._refused(exc) from exc
        raise AssertionError("tenacity neither returned nor raised")

    def _unavailable(self, exc: Exception, budget: float) -> CoordError:
        if self.shut:
            return StoreClosed("the store is closed", backend=BACKEND)
        return StoreUnavailable(f"{self.describe()} did not answer within {budget:g}s: {exc}", backend=BACKEND)

    def _refused(self, exc: EtcdError) -> CoordError:
        return CoordError(f"{self.describe()} refused the request: etcd error {exc.code}: {exc}", backend=BACKEND)


def _refused_identity(exc: SSLError) -> bool:
    """Whether a TLS failure is a certificate refused (ours, or the server's by us), not a broken connection."""
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, ssl.SSLCertVerificationError):
        return True
    text = str(exc).upper()
    return any(word in text for word in ("CERTIFICATE", "ALERT_BAD", "UNKNOWN_CA", "HANDSHAKE_FAILURE"))


def _shutdown(response: Any) -> None:
    with contextlib.suppress(OSError, ValueError):  # already done, or never connected
        response.shutdown()


def _detail(exc: BaseException) -> str:
    """A short description of a connection failure (urllib3 nests the cause; the password never appears here)."""
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"
