"""Watches across server restarts and cut connections, on every server backend.

The server is killed with SIGKILL and started again on the same data, or the
client's connection is reset by a proxy while other clients write. In both
cases the watch must deliver every change exactly once, in order, and the
Store must keep working afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

import coord
from tests.support import Proxy, drain, server_of, summary


@pytest.fixture
def proxied(server_url: str) -> Iterator[tuple[str, Proxy]]:
    """The same namespace as ``server_url``, reached through a proxy the test controls."""
    parts = urlsplit(server_url)
    assert parts.hostname and parts.port
    with Proxy((parts.hostname, parts.port)) as proxy:
        yield server_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}", 1), proxy


def test_a_watch_survives_a_server_restart(server_backend: str, server_url: str) -> None:
    server = server_of(server_backend)
    # A server that has just restarted may take a while to answer a new session
    # (ZooKeeper sometimes sits on the handshake until kazoo's connect timeout):
    # a generous timeout lets the first operations ride that out.
    with coord.connect(server_url, timeout=30) as watcher, coord.connect(server_url, timeout=30) as writer:
        watch = watcher.watch_tree("r")
        writer.put("r/before", b"1")
        assert summary(drain(watch, 1)) == [("put", "r/before", b"1")]
        time.sleep(1.2)  # past Redis's once-a-second fsync, so the write survives the kill
        server.restart()
        writer.put("r/after", b"2")
        writer.delete("r/before")
        events = drain(watch, 2, timeout=60)
        assert summary(events) == [("put", "r/after", b"2"), ("delete", "r/before", None)]
        assert watch.get(timeout=1.0) is None, "an event was delivered twice"
        assert watcher.get("r/after").value == b"2"
        watcher.put("r/again", b"3")
        assert summary(drain(watch, 1)) == [("put", "r/again", b"3")]
        watch.close()


def test_a_watch_survives_a_cut_connection(proxied: tuple[str, Proxy], server_url: str) -> None:
    url, proxy = proxied
    with coord.connect(url) as watcher, coord.connect(server_url) as writer:
        watch = watcher.watch_tree("c")
        writer.put("c/1", b"1")
        assert summary(drain(watch, 1)) == [("put", "c/1", b"1")]
        proxy.refuse()
        proxy.cut()
        # Changes made while the watcher cannot reach the server.
        writer.put("c/2", b"2")
        writer.put("c/1", b"1b")
        writer.delete("c/2")
        time.sleep(1.0)
        proxy.accept()
        events = drain(watch, 3, timeout=60)
        assert summary(events) == [("put", "c/2", b"2"), ("put", "c/1", b"1b"), ("delete", "c/2", None)]
        assert watch.get(timeout=1.0) is None, "an event was delivered twice"
        watcher.put("c/3", b"3")
        assert summary(drain(watch, 1)) == [("put", "c/3", b"3")]
        assert [pair.key for pair in watcher.list("c")] == ["c/1", "c/3"]
        watch.close()


def test_operations_fail_cleanly_when_the_server_is_unreachable(proxied: tuple[str, Proxy]) -> None:
    url, proxy = proxied
    with coord.connect(url, timeout=2.0) as store:
        store.put("u", b"1")
        proxy.refuse()
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(coord.StoreUnavailable) as info:
            store.put("u", b"2")
        assert time.monotonic() - started < 30, "retries must be bounded"
        assert info.value.backend == store.backend
        proxy.accept()
        deadline = time.monotonic() + 30
        while True:
            try:
                assert store.get("u").value in (b"1", b"2")
                break
            except coord.StoreUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
