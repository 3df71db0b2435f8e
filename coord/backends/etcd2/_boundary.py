"""The one boundary between urllib3 and coord: ``request`` and ``call``, where every error becomes coord's.

``request`` sends one request to the member in use (``_members``) and sorts
the answer: etcd's JSON, an ``EtcdError`` (etcd's own errors: 100 key not
found, 101 compare failed, 105 node exists, 401 event index cleared...),
``Transient`` (connection refused or reset, a timeout, a 5xx answer, etcd's
300 "raft internal error" and 301 "leader election"; the member is passed
over, so the next attempt goes to the next one) or a coord error
(credentials or a certificate refused: ``ConfigurationError``). Small form
values travel in the query string (one send per request; etcd reads both),
large ones in the body.

``call`` runs an attempt, retries it while it fails transiently within the
Store's ``timeout`` (then ``StoreUnavailable``), tells each retry that it is
one (an earlier attempt may have been applied though its answer was lost),
and turns any ``EtcdError`` the attempt did not handle, and any answer
shaped unlike etcd's, into a ``CoordError``. No urllib3, socket or JSON
exception gets past this module.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import urllib3
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential
from urllib3.exceptions import HTTPError, ReadTimeoutError, SSLError

from ..._clock import Clock
from ..._errors import ConfigurationError, CoordError, StoreClosed, StoreUnavailable
from ._members import TLS, Interrupted, Lane, Members

__all__ = [
    "BACKEND",
    "COMPARE_FAILED",
    "DEFAULT_PORT",
    "INDEX_CLEARED",
    "KEY_NOT_FOUND",
    "NODE_EXISTS",
    "TLS",
    "Boundary",
    "EtcdError",
    "Idle",
    "Interrupted",
    "Lane",
    "Transient",
]

BACKEND = "etcd2"
DEFAULT_PORT = 2379
T = TypeVar("T")

KEY_NOT_FOUND, COMPARE_FAILED, NODE_EXISTS, INDEX_CLEARED = 100, 101, 105, 401
#: "Raft internal error" (a proposal timed out) and "during leader election": worth another try.
_TRANSIENT_CODES = frozenset({300, 301})
#: Form values up to this size go in the query string.
_INLINE_FORM = 2048
_BACKOFF = wait_exponential(multiplier=0.02, max=0.5)
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class EtcdError(Exception):
    """One of etcd's v2 error answers: ``code`` (etcd's errorCode), its message and cause, and etcd's index."""

    def __init__(self, code: int, message: str, cause: str, index: int) -> None:
        super().__init__(f"{message} ({cause})" if cause else message)
        self.code, self.index = code, index


class Transient(Exception):
    """An attempt failed in a way the next attempt may not."""


class Idle(Exception):
    """A long poll had nothing to say within its read timeout."""


class Boundary:
    """The Store's requests to etcd, and the one place their errors become coord's."""

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
        self.members = Members(scheme, hosts, clock, tls=tls, auth=auth)
        self.timeout = timeout
        self.shut = False
        # Each attempt gets a third of the budget, so a hung member leaves time to try the next one.
        self.attempt_timeout = min(timeout, max(1.0, timeout / 3))

    def describe(self) -> str:
        return self.members.describe()

    def lane(self) -> Lane:
        """Connections of their own, for a thread that holds a request open for long."""
        return self.members.lane()

    def close(self) -> None:
        self.shut = True
        self.members.close()

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
        number = self.members.pick()
        url = "/v2/keys" + quote(path)
        params = urlencode(query or {})
        body = urlencode(form) if form else None
        if body is not None and len(body) <= _INLINE_FORM:
            params, body = f"{params}&{body}" if params else body, None
        if params:
            url += "?" + params
        pool = self.members.pool(number) if lane is None else lane.pool(number)
        # A long poll's headers come at once (etcd flushes them as it registers the watch): only its
        # body may take ``read_timeout``, so a connection that went silent is given up within an attempt.
        timeout = urllib3.Timeout(connect=self.attempt_timeout, read=self.attempt_timeout)
        sent = self.members.now()
        try:
            response = pool.urlopen(
                method,
                url,
                body=body,
                headers={**self.members.headers, **_FORM} if body is not None else None,
                timeout=timeout,
                preload_content=lane is None,
            )
            data = response.data if lane is None else self._wait(lane, number, sent, response, read_timeout)
        except (HTTPError, OSError) as exc:
            raise self._failed(number, exc, lane) from exc
        return self._answer(number, response.status, response.headers, data)

    def date(self) -> str | None:
        """The member in use's HTTP ``Date`` header (on ``GET /version``): its clock, to the second."""
        if self.shut:
            raise StoreClosed("the store is closed", backend=BACKEND)
        number = self.members.pick()
        timeout = urllib3.Timeout(connect=self.attempt_timeout, read=self.attempt_timeout)
        try:
            response = self.members.pool(number).urlopen(
                "GET", "/version", headers=self.members.headers, timeout=timeout
            )
        except (HTTPError, OSError) as exc:
            raise self._failed(number, exc, None) from exc
        if response.status >= 500:
            self.members.failed(number)
            raise Transient(f"{self.members.name(number)} answered {response.status}")
        date: str | None = response.headers.get("Date")
        return date

    @staticmethod
    def _wait(lane: Lane, number: int, sent: float, response: Any, read_timeout: float | None) -> bytes:
        """The body of a long poll from member ``number``: ``Idle`` if none came within ``read_timeout``."""
        lane.reading(response, number, sent)
        sock = getattr(response.connection, "sock", None)
        if sock is not None and read_timeout is not None:
            sock.settimeout(read_timeout)
        try:
            data: bytes = response.read()
        except ReadTimeoutError as exc:
            if not lane.closed:
                raise Idle from exc
            raise
        finally:
            lane.reading(None)
            response.release_conn()
        if lane.aborted:  # what was read may be cut short: ask again, from the same index, elsewhere
            raise Transient("the long poll was broken off: its member failed")
        return data

    def _failed(self, number: int, exc: Exception, lane: Lane | None) -> Exception:
        """What a request that failed in urllib3 or the socket raises."""
        if lane is not None and lane.closed:
            return Interrupted()
        if lane is not None and lane.aborted:  # broken off because another request found the member failed
            return Transient(f"{self.members.name(number)}: given up, the member failed")
        if isinstance(exc, SSLError) and _refused_identity(exc):
            return ConfigurationError(f"{self.describe()}: TLS refused: {_detail(exc)}", backend=BACKEND)
        self.members.failed(number)
        return Transient(f"{self.members.name(number)}: {_detail(exc)}")

    def _answer(self, number: int, status: int, headers: Any, data: bytes) -> tuple[dict[str, Any], int]:
        try:
            index = int(headers.get("X-Etcd-Index") or 0)
            body = json.loads(data) if data else {}
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            if status >= 500:
                self.members.failed(number)
                raise Transient(f"{self.members.name(number)} answered {status}") from exc
            raise CoordError(
                f"{self.describe()} answered {status} with something other than etcd's JSON", backend=BACKEND
            ) from exc
        if status < 300:
            return body, index
        if status in (401, 403):  # etcd's 110 "requires user authentication" and 403 "insufficient permissions"
            raise ConfigurationError(
                f"{self.describe()} refused coord's credentials: {body.get('message', status)}", backend=BACKEND
            )
        if "errorCode" in body:
            code = int(body["errorCode"])
            error = EtcdError(code, str(body.get("message", "")), str(body.get("cause", "")), int(body.get("index", 0)))
            if code in _TRANSIENT_CODES:
                self.members.failed(number)
                raise Transient(f"{self.members.name(number)}: {error}") from error
            raise error
        if status >= 500:
            self.members.failed(number)
            raise Transient(f"{self.members.name(number)} answered {status}: {body.get('message', '')}")
        raise CoordError(
            f"{self.describe()} refused the request ({status}): {body.get('message', '')}", backend=BACKEND
        )

    # -- attempts and retries ----------------------------------------------------------------

    def call(self, attempt: Callable[[bool], T], *, within: float | None = None) -> T:
        """Run ``attempt(retried)``, retried while it fails transiently for ``within`` seconds (default: ``timeout``).

        ``retried`` tells an attempt that an earlier one failed and may
        still have been applied. An ``EtcdError`` the attempt lets through
        becomes a ``CoordError``, and so does an answer shaped unlike
        etcd's (a field missing or of another type); past the budget,
        ``StoreUnavailable``.
        """
        budget = self.timeout if within is None else max(0.0, within)
        try:
            return attempt(False)  # bare: a retry loop set up for every request costs more than the request
        except Transient as exc:
            if budget == 0:
                raise self._unavailable(exc, budget) from exc
        except EtcdError as exc:
            raise self._refused(exc) from exc
        except CoordError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise self._garbled(exc) from exc
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
        except CoordError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise self._garbled(exc) from exc
        raise AssertionError("tenacity neither returned nor raised")

    def _garbled(self, exc: Exception) -> CoordError:
        return CoordError(f"{self.describe()} answered unlike etcd's v2 API: {exc!r}", backend=BACKEND)

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


def _detail(exc: BaseException) -> str:
    """A short description of a connection failure (urllib3 nests the cause; the password never appears here)."""
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"
