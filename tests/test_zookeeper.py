"""What the ZooKeeper backend adds to the shared suite: its own mapping onto znodes.

Runs against $COORD_TEST_ZOOKEEPER (``pytest.mark.server``: skipped when it is unset, failed under COORD_REQUIRE_SERVERS=1).
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient

import coord
from tests.support import Child, drain, next_event, url_of

URL = url_of("zookeeper")
pytestmark = pytest.mark.server("zookeeper")


@pytest.fixture
def url() -> str:
    return f"{URL}?prefix=z{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(url: str) -> Iterator[coord.Store]:
    with coord.connect(url) as opened:
        yield opened


def test_keys_zookeeper_would_refuse_are_escaped(store: coord.Store) -> None:
    keys = ["emoji/😀", "c1\x85control", "private\ue000use", "100%/=eq/~tilde", "zookeeper/x"]
    for key in keys:
        store.put(key, key.encode())
    assert [pair.key for pair in store.list("")] == sorted(keys)
    assert all(store.get(key).value == key.encode() for key in keys)


def test_a_lease_ttl_below_the_servers_minimum_is_rounded_up(store: coord.Store) -> None:
    with store.lease(0.2) as lease:
        assert lease.ttl == 1.0  # the test server's minSessionTimeout


def test_a_watcher_reaps_a_ttl_key_whose_writer_is_gone(url: str, store: coord.Store) -> None:
    with coord.connect(url) as writer:
        writer.put("t", b"v", ttl=1.0)
    with store.watch("t") as watch:
        drain(watch, 1)
        next_event(watch, lambda event: event.type == "delete", timeout=3.0)
    assert not store.exists("t")


HOLDER = """
import coord
store = coord.connect()
store.put("k", b"old", lease=store.lease(1.0))
print("ready", flush=True)
input()
"""


def test_a_key_of_an_expired_session_can_be_created_again(url: str, store: coord.Store) -> None:
    """Nobody watched the key when its session expired: the first writer logs the delete before creating it."""
    child = Child.from_code(HOLDER, env={"COORD_URL": url})
    try:
        child.expect("ready", 30)
        child.signal(signal.SIGKILL)
    finally:
        child.close()
    deadline = time.monotonic() + 10
    while store.exists("k") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not store.exists("k")
    with store.watch("k") as watch:
        assert store.atomic_put("k", b"new", None).value == b"new"
        events = drain(watch, 2)
    assert [(event.type, event.value) for event in events] == [("delete", None), ("put", b"new")]


# -- big values: their chunks are freed on every path that drops the value -------------------------------

BIG = b"b" * (1024 * 1024)  # over the 400 KiB kept inline: two chunks under ROOT/blob


@pytest.fixture
def zk() -> Iterator[KazooClient]:
    """A kazoo client of its own, to look at the znodes behind a Store."""
    client = KazooClient(hosts=URL.removeprefix("zookeeper://"))
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()


@pytest.fixture
def root(zk: KazooClient) -> Iterator[str]:
    """A root of its own (so ROOT/blob holds only this test's chunks), deleted afterwards."""
    path = f"/coord-test-{uuid.uuid4().hex[:12]}"
    yield path
    zk.delete(path, recursive=True)


@pytest.fixture
def blob_url(root: str) -> str:
    return f"{URL}?root={root}&history=1"  # history=1: freed chunks go at the next trim


def chunks(zk: KazooClient, root: str) -> list[str]:
    return sorted(zk.get_children(f"{root}/blob"))


def settle(store: coord.Store, zk: KazooClient, root: str, keep: int = 0) -> list[str]:
    """Write until the log has been trimmed past every freed value; the chunks left."""
    deadline = time.monotonic() + 20
    left = chunks(zk, root)
    while len(left) > keep and time.monotonic() < deadline:
        for _ in range(16):  # the log is trimmed every 64th write
            store.put("pad", b"")
        left = chunks(zk, root)
    return left


def expire_session(store: coord.Store) -> None:
    """End the ZooKeeper session behind ``store``'s leases, as the server does when it misses the client."""
    (session,) = store._sessions._sessions.values()  # type: ignore[attr-defined]
    other = KazooClient(hosts=URL.removeprefix("zookeeper://"), client_id=session.client.client_id)
    other.start(timeout=10)
    other.stop()  # closing the session deletes its ephemerals, unlogged, like an expiry
    other.close()


def overwrite(store: coord.Store) -> None:
    store.put("k", BIG)
    store.put("k", b"small")


def swap(store: coord.Store) -> None:
    pair = store.put("k", BIG)
    store.atomic_put("k", b"small", pair)


def delete(store: coord.Store) -> None:
    store.put("k", BIG)
    store.delete("k")


def atomic_delete(store: coord.Store) -> None:
    store.atomic_delete("k", store.put("k", BIG))


def delete_tree(store: coord.Store) -> None:
    store.put("tree/a", BIG)
    store.put("tree/deeper/b", BIG)
    store.delete_tree("tree")


def expire(store: coord.Store) -> None:
    store.put("k", BIG, ttl=1.0)
    deadline = time.monotonic() + 10
    while store.exists("k") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not store.exists("k")


def revoke(store: coord.Store) -> None:
    with store.lease(1.0) as lease:
        store.put("k", BIG, lease=lease)


@pytest.mark.parametrize("drop", [overwrite, swap, delete, atomic_delete, delete_tree, expire, revoke])
def test_the_chunks_of_a_dropped_value_are_freed(
    drop: Callable[[coord.Store], None], blob_url: str, zk: KazooClient, root: str
) -> None:
    with coord.connect(blob_url) as store:
        drop(store)
        assert settle(store, zk, root) == []
        assert not store.exists("k") or store.get("k").value == b"small"


def test_a_value_replaced_by_another_big_one_keeps_only_its_own_chunks(
    blob_url: str, zk: KazooClient, root: str
) -> None:
    with coord.connect(blob_url) as store:
        store.put("k", BIG)
        first = chunks(zk, root)
        store.put("k", BIG[1:] + b"2")
        left = settle(store, zk, root, keep=2)
        assert len(left) == 2 and not set(left) & set(first)
        assert store.get("k").value == BIG[1:] + b"2"


def test_the_chunks_of_a_refused_write_are_freed_at_once(blob_url: str, zk: KazooClient, root: str) -> None:
    with coord.connect(blob_url) as store:
        store.put("k", b"there")
        with pytest.raises(coord.KeyExists):
            store.atomic_put("k", BIG, None)
        assert chunks(zk, root) == []


def test_the_chunks_of_an_expired_lease_are_freed_by_its_owner(blob_url: str, zk: KazooClient, root: str) -> None:
    with coord.connect(blob_url) as store:
        lease = store.lease(1.0)
        store.put("k", BIG, lease=lease)
        expire_session(store)
        assert lease.lost.wait(10)
        assert settle(store, zk, root) == []
        assert not store.exists("k")


def test_the_chunks_of_a_writer_that_died_before_its_write_are_freed(blob_url: str, zk: KazooClient, root: str) -> None:
    """Chunks are written before the key, under a free record: a crash in between leaves nothing for good."""
    with coord.connect(blob_url) as store:
        zoo: Any = store
        zoo._zk.call(lambda t: zoo._blobs.stage(t, BIG))  # what a writer does before the key's write
        assert len(chunks(zk, root)) == 2
        assert settle(store, zk, root) == []


BIG_HOLDER = """
import coord
store = coord.connect()
store.put("k", b"b" * (1024 * 1024), lease=store.lease(1.0))
print("ready", flush=True)
input()
"""


def test_the_chunks_of_a_killed_owners_lease_are_freed_by_a_watcher(blob_url: str, zk: KazooClient, root: str) -> None:
    with coord.connect(blob_url) as store:
        child = Child.from_code(BIG_HOLDER, env={"COORD_URL": blob_url})
        try:
            child.expect("ready", 30)
            with store.watch("k") as watch:
                assert drain(watch, 1)[0].value == BIG
                child.signal(signal.SIGKILL)
                next_event(watch, lambda event: event.type == "delete", timeout=10.0)
        finally:
            child.close()
        assert settle(store, zk, root) == []


def test_a_lagging_watch_still_gets_a_big_value_that_was_replaced(blob_url: str) -> None:
    """Chunks outlive their value until the log is trimmed past it: a watch reading the log needs them."""
    with coord.connect(blob_url) as watcher, coord.connect(blob_url) as writer:
        watch = watcher.watch("k")
        with watcher._worker.log._lock:  # type: ignore[attr-defined]  # holds up the watcher's delivery
            writer.put("k", BIG)
            writer.put("k", b"small")
            writer.delete("k")
        events = drain(watch, 3)
        assert [(event.type, event.value) for event in events] == [("put", BIG), ("put", b"small"), ("delete", None)]
        watch.close()
