"""The clock skew between this host and a store's server, where the server has a clock to read.

coord's Store API shows no server time, so each probe asks the server by a
side channel of its own, with the standard library or the backend's client
library, never through a backend module (a stopgap: an optional
``Store.server_time()`` at each backend's boundary would do it with the
Store's own connection, credentials and TLS; see docs/cli.md):

- Redis: ``TIME`` (microseconds), on a connection of its own;
- etcd: the ``Date`` header of its HTTP ``/version`` (whole seconds: the
  probe times the moment the second changes);
- ZooKeeper: the ``ctime`` of an ephemeral znode it creates (milliseconds);
- Consul: the ``Date`` header of its HTTP ``/v1/status/leader``, as etcd's;
- sqlite and memory: the host's own clock, so there is no skew.

Each gives ``offset`` (server minus this host, seconds) and ``error`` (how
far off it may be: half the round trip that bracketed the reading).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Skew", "measure"]


@dataclass(frozen=True)
class Skew:
    offset: float
    error: float
    how: str


def measure(backend: str, url: str, timeout: float = 3.0) -> Skew | str:
    """The skew, or why it was not measured."""
    probe = _PROBES.get(backend)
    if probe is None:
        return "this host's own clock: no skew" if backend in ("sqlite", "memory") else "no probe for this backend"
    try:
        return probe(url, timeout)
    except Exception as exc:  # a diagnosis must go on: say what failed instead
        return f"not measured: {type(exc).__name__}: {exc}"


def _bracket(read: Callable[[], float], tries: int = 5) -> tuple[float, float]:
    """The server time minus ours, from the reading with the shortest round trip; and its error."""
    best: tuple[float, float] | None = None
    for _ in range(tries):
        sent = time.time()
        server = read()
        back = time.time()
        if best is None or back - sent < 2 * best[1]:
            best = (server - (sent + back) / 2, (back - sent) / 2)
    assert best is not None
    return best


def _redis(url: str, timeout: float) -> Skew:
    import ssl

    parts = urlsplit(url)
    raw = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=timeout)
    with raw, (ssl.create_default_context().wrap_socket(raw, server_hostname=parts.hostname)
               if parts.scheme == "rediss" else raw) as conn:  # fmt: skip
        readline = conn.makefile("rb").readline

        def command(*words: str) -> list[bytes]:
            conn.sendall(f"*{len(words)}\r\n".encode() + b"".join(
                f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words))  # fmt: skip
            return _reply(readline)

        if parts.password is not None:
            command("AUTH", *([unquote(parts.username)] if parts.username else []), unquote(parts.password))
        offset, error = _bracket(lambda: (lambda r: int(r[0]) + int(r[1]) / 1e6)(command("TIME")))
    return Skew(offset, error, "Redis TIME")


def _reply(readline: Callable[[], bytes]) -> list[bytes]:
    """A RESP reply: an array of bulk strings (TIME), or a simple status (AUTH)."""
    line = readline()
    if line.startswith(b"-"):
        raise RuntimeError(line[1:].strip().decode(errors="replace"))
    if not line.startswith(b"*"):
        return [line[1:].strip()]
    items = []
    for _ in range(int(line[1:])):
        readline()  # $<length>
        items.append(readline().strip())
    return items


def _etcd(url: str, timeout: float) -> Skew:
    return _http_date(url, timeout, "http", 2379, "/version", "etcd HTTP Date header")


def _consul(url: str, timeout: float) -> Skew:
    scheme = "https" if urlsplit(url).scheme == "consuls" else "http"
    return _http_date(url, timeout, scheme, 8500, "/v1/status/leader", "Consul HTTP Date header")


def _http_date(url: str, timeout: float, scheme: str, default_port: int, path: str, how: str) -> Skew:
    import email.utils
    import urllib.request

    host, _, port = urlsplit(url).netloc.rsplit("@", 1)[-1].split(",")[0].rpartition(":")
    endpoint = f"{scheme}://{host or '127.0.0.1'}:{port or default_port}{path}"

    def date() -> tuple[float, float, float]:
        sent = time.time()
        with urllib.request.urlopen(endpoint, timeout=timeout) as response:
            stamp = email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp()
        return sent, stamp, time.time()

    # The Date header counts whole seconds: find the moment it turns, bracketed by two requests.
    _, first, before = date()
    stop = time.monotonic() + 2.5
    while time.monotonic() < stop:
        _sent, stamp, back = date()
        if stamp != first:
            # The server's second `stamp` began between `before` (it still said `first`) and `back`.
            return Skew(stamp - (before + back) / 2, (back - before) / 2, how)
        before = back
        time.sleep(0.005)
    raise RuntimeError("the Date header did not change within 2.5 s")


def _zookeeper(url: str, timeout: float) -> Skew:
    from kazoo.client import KazooClient  # the zookeeper extra's client library, only here

    parts = urlsplit(url)
    client = KazooClient(hosts=parts.netloc.rsplit("@", 1)[-1] + parts.path.rstrip("/"), timeout=timeout)
    client.start(timeout=timeout)
    try:
        path = f"/coord-doctor-clock-{uuid.uuid4().hex[:12]}-"

        def ctime() -> float:
            # Ephemeral: they go with the probe's session.
            _created, stat = client.create(path, ephemeral=True, sequence=True, include_data=True)
            return float(stat.ctime) / 1000

        offset, error = _bracket(ctime)
    finally:
        client.stop()
        client.close()
    return Skew(offset, error, "ZooKeeper znode ctime")


_PROBES: dict[str, Callable[[str, float], Skew]] = {
    "redis": _redis,
    "etcd": _etcd,
    "etcd2": _etcd,  # the same server and HTTP port: etcd v2 is its HTTP API
    "zookeeper": _zookeeper,
    "consul": _consul,
}
