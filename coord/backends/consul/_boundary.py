"""The one boundary between py-consul (and requests, under it) and coord: requests out, coord errors back.

py-consul gives the HTTP client (a kept-alive requests session, TLS and
client certificates) and the URL building; coord sends the requests itself
through it, because py-consul's ``txn.put`` neither sends the ACL token nor
returns a rolled-back transaction's ``Errors``, and lets ``CONSUL_HTTP_TOKEN``
override a token given in code. The token goes in the ``X-Consul-Token``
header only: never in a URL, a message or a repr.

``call`` retries what may pass (no answer, a timeout, Consul without a
leader, 5xx, 429) within the Store's ``timeout``, telling the request whether
it is a retry, so a write can recognise its own earlier success.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import consul
import requests

from ..._errors import ConfigurationError, CoordError, StoreClosed, StoreUnavailable

BACKEND = "consul"
DEFAULT_PORT = 8500
_T = TypeVar("_T")
#: What a 500 from Consul says when the cluster (not the request) is at fault: worth a retry.
_TRANSIENT_500 = ("No cluster leader", "leadership lost", "rpc error", "i/o timeout", "connection refused", "EOF")
_BACKOFF_FIRST, _BACKOFF_MAX = 0.02, 0.5


class Transient(Exception):
    """A request that may pass if sent again (it may also have been applied)."""


@dataclass(frozen=True)
class Answer:
    code: int
    index: int
    body: str
    date: str | None = None  # the HTTP Date header: the agent's clock, to the second

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def _answer(response: Any) -> Answer:
    try:
        index = int(response.headers.get("X-Consul-Index", 0))
    except ValueError:
        index = 0
    return Answer(response.code, index, response.body, response.headers.get("Date"))


@dataclass(frozen=True)
class Settings:
    """How to reach the agent: everything but the token is safe to show."""

    hosts: list[tuple[str, int]]
    tls: bool
    ca: str | None
    cert: str | None
    key: str | None
    dc: str | None
    timeout: float


class Boundary:
    """A py-consul client of the agent, and the one place its errors become coord's."""

    def __init__(self, settings: Settings, token: str | None, *, attempt_timeout: float | None = None) -> None:
        self.settings = settings
        self.shut = False
        self._headers = {"X-Consul-Token": token} if token else {}
        self._token = token
        self._host = 0
        self.attempt_timeout = attempt_timeout or min(settings.timeout, max(1.0, settings.timeout / 3))
        self._client = self._connect()

    def _connect(self) -> Any:
        host, port = self.settings.hosts[self._host]
        verify: bool | str = self.settings.ca or True
        cert = (self.settings.cert, self.settings.key) if self.settings.cert else None
        client = consul.Consul(
            host=host,
            port=port,
            scheme="https" if self.settings.tls else "http",
            verify=verify,
            cert=cert,
            dc=self.settings.dc,
            connections_timeout=self.attempt_timeout,
        )
        client.token = None  # py-consul lets CONSUL_HTTP_TOKEN win over ours: coord sends its own header
        return client

    def sibling(self) -> Boundary:
        """Another client of the same agent (a watch's own connection)."""
        return Boundary(self.settings, self._token, attempt_timeout=self.attempt_timeout)

    def describe(self) -> str:
        scheme = "consuls" if self.settings.tls else "consul"
        return f"{scheme}://" + ",".join(f"{host}:{port}" for host, port in self.settings.hosts)

    def close(self) -> None:
        self.shut = True
        self._client.http.session.close()

    # -- requests ------------------------------------------------------------------------

    def send(self, method: str, path: str, params: dict[str, Any] | None = None, body: str | bytes = "") -> Answer:
        """One HTTP request; ``Transient`` for what a retry may fix, coord errors for what it cannot."""
        query = [(name, value) for name, value in (params or {}).items() if value is not None]
        if self.settings.dc:
            query.append(("dc", self.settings.dc))
        http = self._client.http
        try:
            if method == "GET":
                answer: Answer = http.get(_answer, path, params=query, headers=self._headers)
            elif method == "DELETE":
                answer = http.delete(_answer, path, params=query, headers=self._headers)
            else:
                answer = http.put(_answer, path, params=query, data=body, headers=self._headers)
        except requests.exceptions.SSLError as exc:
            raise ConfigurationError(f"{self.describe()} refused TLS: {_short(exc)}", backend=BACKEND) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            self._next_host()
            raise Transient(f"no answer from {self.describe()}: {_short(exc)}") from exc
        except requests.exceptions.RequestException as exc:
            raise CoordError(f"{self.describe()}: {_short(exc)}", backend=BACKEND) from exc
        if answer.code in (401, 403):
            raise ConfigurationError(
                f"{self.describe()} refused access (ACL token {'given' if self._token else 'missing'}): "
                f"{answer.body[:200]}",
                backend=BACKEND,
            )
        if answer.code == 429 or answer.code in (502, 503, 504):
            raise Transient(f"{self.describe()} answered {answer.code}: {answer.body[:200]}")
        if answer.code == 500 and any(text in answer.body for text in _TRANSIENT_500):
            raise Transient(f"{self.describe()} answered {answer.code}: {answer.body[:200]}")
        if answer.code == 413 and "too many operations" in answer.body:
            raise ValueError(
                f"Consul takes fewer operations in one transaction ({answer.body[:200]}); a put costs 2 or 3"
            )
        if answer.code == 413:
            raise ValueError(
                f"{self.describe()} refused a request this large ({answer.body[:200]}): raise the agent's "
                "limits.kv_max_value_size and limits.txn_max_req_len (docs/backends.md, Consul)"
            )
        return answer

    def call(self, request: Callable[[bool], _T], *, within: float | None = None) -> _T:
        """Run ``request(retried)``, retrying what is transient for ``within`` seconds (default ``timeout``)."""
        budget = self.settings.timeout if within is None else max(0.0, within)
        deadline = time.monotonic() + budget
        delay = _BACKOFF_FIRST
        retried = False
        while True:
            if self.shut:
                raise StoreClosed("the store is closed", backend=BACKEND)
            try:
                return request(retried)
            except Transient as exc:
                if time.monotonic() + delay > deadline:
                    raise StoreUnavailable(f"{exc} (for {budget:g}s)", backend=BACKEND) from exc
            time.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX)
            retried = True

    def _next_host(self) -> None:
        if len(self.settings.hosts) > 1:
            self._host = (self._host + 1) % len(self.settings.hosts)
            self._client = self._connect()


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."
