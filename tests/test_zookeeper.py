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
    keys = ["emoji/😀", "specials\ufff9", "private\ue000use", "100%/=eq/~tilde", "zookeeper/x"]
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


# -- transactions: one multi-op, its reads behind it ----------------------------------------------------------


def test_a_transaction_mixes_every_kind_of_write_in_one_multi_op(store: coord.Store) -> None:
    """Big values, swaps, deletes, a lease and a ttl in one multi-op: every write at one zxid, one event each."""
    old = store.put("t/old", BIG)
    store.put("t/gone", BIG)
    with store.watch_tree("t") as watch:
        drain(watch, 2)
        txn = store.transaction()
        txn.put("t/old", b"small", previous=old)
        txn.put("t/big", BIG, previous=None)
        txn.delete("t/gone")
        txn.put("t/leased", b"l", lease=store.session(10))
        txn.put("t/ttl", b"t", ttl=30)
        txn.list("t")
        swapped, big, existed, leased, ttl, listed = txn.commit()
        events = drain(watch, 5)
    assert swapped.created == old.created and big.created == big.revision and existed is True
    assert {swapped.revision, big.revision, leased.revision, ttl.revision} == {big.revision}
    assert [(e.type, e.key) for e in events] == [
        ("put", "t/old"),
        ("put", "t/big"),
        ("delete", "t/gone"),
        ("put", "t/leased"),
        ("put", "t/ttl"),
    ]
    assert {p.key: p.value for p in listed} == {"t/old": b"small", "t/big": BIG, "t/leased": b"l", "t/ttl": b"t"}
    assert store.get("t/big").value == BIG and store.get("t/leased").lease == leased.lease


def test_a_read_followed_by_a_write_to_its_key_sees_the_state_before_that_write(store: coord.Store) -> None:
    before = store.put("r/a", b"0")
    txn = store.transaction()
    txn.get("r/a")
    txn.list("r")
    txn.put("r/a", b"1")
    txn.get("r/a")
    txn.put("r/b", b"2", previous=None)
    txn.list("r")
    txn.delete("r/a")
    txn.get("r/a")
    first, listed, put, second, _, relisted, _, third = txn.commit()
    assert first == before and keys(listed) == ["r/a"] and listed[0].value == b"0"
    assert second == put and second.value == b"1"
    assert {p.key: p.value for p in relisted} == {"r/a": b"1", "r/b": b"2"}
    assert third is None and keys(store.list("r")) == ["r/b"]


def keys(pairs: list[coord.KVPair]) -> list[str]:
    return sorted(pair.key for pair in pairs)


def test_a_key_written_twice_in_one_transaction_keeps_the_last_value(store: coord.Store) -> None:
    txn = store.transaction()
    txn.put("w", b"1", previous=None)
    txn.put("w", b"2")
    txn.delete("w")
    txn.put("w", BIG)
    *_, last = txn.commit()
    assert store.get("w") == last and last.value == BIG


def test_create_only_in_a_transaction_replaces_an_expired_ttl_key(store: coord.Store) -> None:
    store.put("e", b"old", ttl=1.0)
    time.sleep(1.2)
    (created,) = store.transaction().put("e", b"new", previous=None).commit()
    assert store.get("e") == created and created.value == b"new"


def test_create_only_in_a_transaction_logs_the_delete_of_a_key_whose_session_expired(
    url: str, store: coord.Store
) -> None:
    """Nobody watched the key when its owner died: the transaction logs the delete before it creates the key."""
    child = Child.from_code(HOLDER, env={"COORD_URL": url})
    try:
        child.expect("ready", 30)
        child.signal(signal.SIGKILL)
    finally:
        child.close()
    deadline = time.monotonic() + 10
    while store.exists("k") and time.monotonic() < deadline:
        time.sleep(0.1)
    with store.watch("k") as watch:
        (created,) = store.transaction().put("k", b"new", previous=None).commit()
        events = drain(watch, 2)
    assert [(e.type, e.value) for e in events] == [("delete", None), ("put", b"new")]
    assert created.value == b"new" and events[1].revision == created.revision


def test_writes_bound_to_leases_of_two_ttls_in_one_transaction_are_not_supported(store: coord.Store) -> None:
    txn = store.transaction()
    txn.put("a", b"", lease=store.session(10))
    txn.put("b", b"", lease=store.session(20))
    with pytest.raises(coord.NotSupported, match="one ttl"):
        txn.commit()
    assert store.list("") == []


def lose_first_reply(store: coord.Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first multi-op's reply is lost after the server applied it, as when the connection drops."""
    from kazoo.exceptions import ConnectionLoss

    zk: Any = store._zk  # type: ignore[attr-defined]
    settle = zk.settle
    calls: list[int] = []

    def lossy(*args: Any, **kwargs: Any) -> Any:
        result = settle(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionLoss()
        return result

    monkeypatch.setattr(zk, "settle", lossy)
    return calls


def test_a_transaction_whose_reply_was_lost_recognises_its_own_writes(
    store: coord.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put("gone", b"")
    with store.watch_tree("") as watch:
        drain(watch, 1)
        calls = lose_first_reply(store, monkeypatch)
        txn = store.transaction().put("q/me", b"1", previous=None).delete("gone").list("q")
        mine, existed, listed = txn.commit()
        events = drain(watch, 2)
        assert watch.get(timeout=0.3) is None  # written once
    assert len(calls) == 1  # the retry found its nonce: it did not write again (no KeyExists either)
    assert existed is True and listed == [mine] and store.get("q/me") == mine
    assert [(e.type, e.key) for e in events] == [("put", "q/me"), ("delete", "gone")]


def test_a_transaction_of_deletes_whose_reply_was_lost_reports_them_done(
    store: coord.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = store.put("d", b"")
    lose_first_reply(store, monkeypatch)
    assert store.transaction().delete("d", previous=pair).commit() == [True]  # not KeyNotFound
    assert not store.exists("d")


def test_a_list_of_many_keys_is_two_requests(store: coord.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    txn = store.transaction()
    for i in range(100):
        txn.put(f"many/k{i:03d}", b"v")
    txn.commit()
    client: Any = store._zk.client  # type: ignore[attr-defined]
    sent = count_requests(client, monkeypatch)
    assert len(store.list("many")) == 100
    assert len(sent) <= 2  # the children, then every value (a sync only if a write went through another session)


def test_a_transaction_that_creates_its_only_key_and_lists_it_is_one_round_trip(store: coord.Store) -> None:
    """The multi-op and the listing go out together, and the new key is not read back."""
    session = store.session(10)
    store.transaction().put("q/warm", b"", previous=None, lease=session).commit()
    store.delete("q/warm")
    with pytest.MonkeyPatch.context() as monkeypatch:
        sent = count_requests(store._sessions._sessions[10000].client, monkeypatch)  # type: ignore[attr-defined]
        mine, queue = store.transaction().put("q/me", b"", previous=None, lease=session).list("q").commit()
    assert queue == [mine] and len(sent) == 2


def count_requests(client: Any, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The requests ``client`` sends from now on."""
    sent: list[object] = []
    call = client._call

    def counted(request: object, result: object) -> object:
        sent.append(request)
        return call(request, result)

    monkeypatch.setattr(client, "_call", counted)
    return sent


def test_a_read_after_a_write_through_a_lease_session_goes_through_a_session_that_saw_it(
    store: coord.Store,
) -> None:
    """Issue 10 item 9: a follower behind the write must not serve the read that follows it."""
    session = store.session(10)
    store.transaction().put("s/ticket", b"", previous=None, lease=session).commit()
    zk: Any = store._zk  # type: ignore[attr-defined]
    zk.client.last_zxid = 0  # as if the main session's server had not seen the write yet
    reader = zk.reader()
    assert reader is not zk.client and reader.last_zxid >= zk.fence
    assert store.exists("s/ticket") and [p.key for p in store.list("s")] == ["s/ticket"]


# -- watches: re-syncs, announcements ----------------------------------------------------------------------------


def test_a_watch_that_fell_behind_the_history_gets_the_deletes_it_missed(
    blob_url: str, zk: KazooClient, root: str
) -> None:
    """Issue 10 item 10: the re-sync emits a delete for every key it had that is gone, and nothing for the rest."""
    with coord.connect(blob_url) as watcher, coord.connect(blob_url) as writer:
        writer.put("r/gone", b"1")
        writer.put("r/stays", b"1")
        watch = watcher.watch_tree("r")
        assert len(drain(watch, 2)) == 2
        with watcher._worker.log._lock:  # type: ignore[attr-defined]  # the watcher hears nothing meanwhile
            writer.delete("r/gone")
            writer.put("r/new", b"2")
            for _ in range(70):  # past a trim: history=1 keeps one entry
                writer.put("pad", b"")
            deadline = time.monotonic() + 10
            while len(zk.get_children(f"{root}/log")) > 8 and time.monotonic() < deadline:
                time.sleep(0.05)
        events = drain(watch, 2)
        assert sorted((e.type, e.key) for e in events) == [("delete", "r/gone"), ("put", "r/new")]
        assert watch.get(timeout=0.5) is None
        watch.close()


def test_entries_announced_as_a_watch_closes_do_not_silence_the_next_watch(store: coord.Store) -> None:
    for i in range(30):
        watch = store.watch("k")
        store.put("k", b"%d" % i)
        watch.close()  # maybe before the worker read what was announced
        with store.watch("k") as again:
            drain(again, 1)
            store.put("k", b"again %d" % i)
            assert drain(again, 1)[0].value == b"again %d" % i
