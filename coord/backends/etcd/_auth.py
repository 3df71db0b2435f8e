"""etcd's v3 authentication: a token from ``Authenticate``, sent with every request, renewed when etcd refuses it.

etcd answers ``Authenticate(user, password)`` with a token, and refuses it
later: a simple token (etcd's default) once unused for ``--auth-token-ttl``
seconds (300 by default), a JWT at its expiry, either after the auth store
changed (a user or role edited). Like etcd's Go client, coord renews it when
refused: a request refused for its token authenticates again and is sent
again at once, with no wait and whatever its time budget (``renewing``). A
request refused for its token was not applied, so the resend is no retry.

The token travels as gRPC metadata, added to every call on the channel by
an interceptor (``TokenInterceptor``), so raw stubs, pyetcd's helpers and the
watch and keepalive streams all carry the token current when they start.
A watch stream keeps the token it started with: etcd checks it only when a
watch is created on the stream, and refuses a new watch on a stream whose
token has expired (``_watches`` then opens a new stream).

The password is kept in this object only, never in a message: etcd's
errors do not echo it, and the errors raised here name the user alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, TypeVar

import grpc
from pyetcd import etcdrpc

from ..._errors import ConfigurationError

__all__ = ["Credentials", "StaleToken", "TokenInterceptor", "refused_identity", "stale_token"]

_T = TypeVar("_T")
_AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"


class StaleToken(Exception):
    """etcd refused something for a token it no longer takes (a watch created on an old stream)."""


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class TokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds ``token`` (when there is one) to the metadata of every call but ``Authenticate``'s."""

    def __init__(self) -> None:
        self.token: str | None = None

    def _details(self, details: Any) -> Any:
        token = self.token
        if token is None or details.method == _AUTHENTICATE:  # etcd refuses even Authenticate with a stale token
            return details
        metadata = [*(details.metadata or ()), ("token", token)]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Iterator[Any]) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Iterator[Any]) -> Any:
        return continuation(self._details(details), requests)


class Credentials:
    """A user and password, and the token etcd gave for them: got at first, renewed whenever refused."""

    def __init__(self, user: str, password: str, interceptor: TokenInterceptor, where: Callable[[], str]) -> None:
        self.user = user
        self._password = password
        self._interceptor = interceptor
        self._where = where
        self._lock = threading.Lock()
        self.renewals = 0  # how many times etcd was asked for a token (for tests)

    def __repr__(self) -> str:
        return f"Credentials(user={self.user!r}, password=***)"

    def authenticate(self, auth_stub: Any, timeout: float, refused: str | None = None) -> None:
        """Get a token, unless another thread already replaced the ``refused`` one meanwhile.

        Raises ``ConfigurationError`` if etcd refuses the user and password,
        and gRPC's error if etcd could not be asked.
        """
        with self._lock:
            if refused is not None and self._interceptor.token != refused:
                return
            request = etcdrpc.AuthenticateRequest(name=self.user, password=self._password)
            try:
                self.renewals += 1
                answer = auth_stub.Authenticate(request, timeout)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # "authentication is not enabled"
                    self._interceptor.token = None  # as etcd's Go client: go on without a token
                    return
                # "authentication failed, invalid user ID or password", for an unknown user too
                if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise ConfigurationError(
                        f"{self._where()} refused user {self.user!r}: {exc.details()}", backend="etcd"
                    ) from None
                raise
            self._interceptor.token = answer.token

    def renewing(
        self, request: Callable[[bool], _T], auth_stub: Callable[[], Any], timeout: float
    ) -> Callable[[bool], _T]:
        """``request``, sent once more with a new token if etcd refused the one it carried."""

        def attempt(retried: bool) -> _T:
            token = self._interceptor.token
            try:
                return request(retried)
            except grpc.RpcError as exc:
                if not stale_token(exc):
                    raise
            except StaleToken:
                pass
            self.authenticate(auth_stub(), timeout, refused=token)
            try:
                return request(retried)  # the refused one was not applied: this is no retry
            except StaleToken as exc:  # refused with a token just given: no token is the cause
                raise ConfigurationError(f"{self._where()} refused user {self.user!r}: {exc}", backend="etcd") from None

        return attempt


def stale_token(exc: grpc.RpcError) -> bool:
    """Whether etcd refused a request for its token (expired, unknown, or older than the auth store)."""
    details = exc.details() or ""
    if exc.code() == grpc.StatusCode.UNAUTHENTICATED:  # "invalid auth token"
        return True
    return exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "revision of auth store is old" in details


#: What gRPC says when a TLS handshake fails over a certificate: the server's, not trusted by us
#: (CERTIFICATE_VERIFY_FAILED), or ours, refused by the server (TLS 1.3 sends that refusal after the
#: handshake, and gRPC reports it only as data it cannot decrypt: TSI_DATA_CORRUPTED).
_REFUSED_IDENTITY = ("CERTIFICATE_VERIFY_FAILED", "TSI_DATA_CORRUPTED", "ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA")


def refused_identity(exc: grpc.RpcError) -> bool:
    """Whether a failed call is a TLS certificate refused (by either side), not a server out of reach."""
    details = exc.details() or ""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and any(word in details for word in _REFUSED_IDENTITY)
