"""What the servers themselves say: their versions, and how many requests they have received.

The request counters let a benchmark count round trips where coord's own
count cannot see them (inside a backend, or in a peer's client library):
Redis's ``total_reads_processed`` (read events: a script, a pipeline or a
transaction sent at once is one; ``commandstats`` would count each command a
script calls), ZooKeeper's ``srvr`` (packets received, pings included) and
etcd's ``/metrics`` (gRPC messages received, stream messages included). The
reads of this module's own ``INFO`` are taken off. The counters count
every client of the server, so a benchmark reads them only around windows
in which it alone uses the server. Each read is one request; ``None`` when
the server does not answer.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from contextlib import suppress

from ._endpoints import Endpoint

__all__ = ["request_count", "server_version"]

_TIMEOUT = 5.0


def request_count(endpoint: Endpoint) -> int | None:
    """Requests the server of ``endpoint`` has received so far (``None`` for memory, sqlite, or no answer)."""
    with suppress(OSError, ValueError):
        if endpoint.backend == "redis":
            found = re.search(r"total_reads_processed:(\d+)", _redis_info(endpoint, "stats"))
            return int(found.group(1)) - _own_reads[0] if found else None
        if endpoint.backend == "zookeeper":
            found = re.search(r"Received: (\d+)", _zookeeper_word(endpoint, b"srvr"))
            return int(found.group(1)) if found else None
        if endpoint.backend == "etcd":
            metrics = _http(endpoint, "/metrics")
            return int(
                sum(float(v) for v in re.findall(r"^grpc_server_msg_received_total\{.*\} (\S+)$", metrics, re.M))
            )
    return None


def server_version(endpoint: Endpoint) -> str | None:
    with suppress(OSError, ValueError, KeyError):
        if endpoint.backend == "redis":
            found = re.search(r"redis_version:(\S+)", _redis_info(endpoint, "server"))
            return f"Redis {found.group(1)}" if found else None
        if endpoint.backend == "zookeeper":
            found = re.search(r"Zookeeper version: ([^-,\s]+)", _zookeeper_word(endpoint, b"srvr"))
            return f"ZooKeeper {found.group(1)}" if found else None
        if endpoint.backend in ("etcd", "etcd2"):
            api = " (v2 API)" if endpoint.backend == "etcd2" else ""
            return f"etcd {json.loads(_http(endpoint, '/version'))['etcdserver']}{api}"
        if endpoint.backend == "consul":  # a real agent says its version; the tests' emulator has no /v1/agent/self
            return f"Consul {json.loads(_http(endpoint, '/v1/agent/self'))['Config']['Version']}"
    return None


_own_reads = [0]  # INFO requests this process sent: each is one read event on the server


def _redis_info(endpoint: Endpoint, section: str) -> str:
    _own_reads[0] += 1
    with socket.create_connection((endpoint.host, endpoint.port or 6379), timeout=_TIMEOUT) as sock:
        sock.sendall(f"INFO {section}\r\n".encode())
        header = b""
        while not header.endswith(b"\r\n"):
            header += sock.recv(1)
        if not header.startswith(b"$"):
            raise ValueError(f"unexpected reply to INFO: {header!r}")
        size = int(header[1:-2]) + 2
        body = b""
        while len(body) < size:
            chunk = sock.recv(size - len(body))
            if not chunk:
                break
            body += chunk
        return body.decode(errors="replace")


def _zookeeper_word(endpoint: Endpoint, word: bytes) -> str:
    host, _, port = endpoint.hosts.split(",")[0].partition(":")
    with socket.create_connection((host, int(port or 2181)), timeout=_TIMEOUT) as sock:
        sock.sendall(word)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")


def _http(endpoint: Endpoint, path: str) -> str:
    host, _, port = endpoint.hosts.split(",")[0].partition(":")
    with urllib.request.urlopen(f"http://{host}:{port or 2379}{path}", timeout=_TIMEOUT) as reply:
        text: str = reply.read().decode()
        return text
