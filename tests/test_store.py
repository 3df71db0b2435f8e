"""The Store conformance suite: every test runs against every backend (see conftest.py).

Each test names the guarantee it checks. Time bounds follow the contract
(ttl + 1 s) and otherwise stay generous: precise timing is for benchmarks/.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import pytest

import coord
from coord import Event, InvalidKey, KeyExists, KeyModified, KeyNotFound, LeaseExpired, StoreClosed
from tests.helpers import Child, drain, wait_for

#: Lease and ttl length for expiry tests: etcd's minimum lease is 2 s with the test server's settings.
TTL = 2.0
#: The contract's bound on how long a dead lease's keys outlive its ttl.
GRACE = 1.0


def put_event(key: str, value: bytes) -> tuple[str, str, bytes | None]:
    return ("put", key, value)


def summary(events: list[Event]) -> list[tuple[str, str, bytes | None]]:
    return [(event.type, event.key, event.value) for event in events]


# -- put, get, exists, delete -------------------------------------------------


@pytest.mark.parametrize("key", ["plain", "a/b/c", "ünïcode/ключ", "with space/x"])
def test_put_get_exists_delete_round_trip(store: coord.Store, key: str) -> None:
    assert not store.exists(key)
    written = store.put(key, b"value")
    assert written.key == key and written.value == b"value" and written.lease is None
    assert store.get(key) == written
    assert store.exists(key)
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(KeyNotFound):
        store.get(key)


def test_keys_are_normalised_in_one_way(store: coord.Store) -> None:
    store.put("/a//b/", b"1")
    assert store.get("a/b").key == "a/b"
    assert [pair.key for pair in store.list("/a/")] == ["a/b"]


def test_values_are_bytes_kept_exactly(store: coord.Store) -> None:
    every_byte = bytes(range(256))
    assert store.put("bin", every_byte).value == every_byte
    assert store.get("bin").value == every_byte
    assert store.put("empty", b"").value == b""
    assert store.get("empty").value == b""
    big = b"x" * (1024 * 1024)
    store.put("big", big)
    assert store.get("big").value == big


def test_overwrite_changes_revision_and_keeps_created(store: coord.Store) -> None:
    first = store.put("k", b"1")
    second = store.put("k", b"2")
    assert second.revision != first.revision
    assert second.created == first.created
    assert store.get("k").value == b"2"


def test_missing_key_errors_carry_key_and_backend(store: coord.Store) -> None:
    with pytest.raises(KeyNotFound) as info:
        store.get("nope")
    assert info.value.key == "nope" and info.value.backend == store.backend
    with pytest.raises(KeyNotFound):
        store.delete("nope")


def test_a_key_and_its_children_coexist(store: coord.Store) -> None:
    store.put("dir", b"parent")
    store.put("dir/child", b"child")
    assert store.get("dir").value == b"parent"
    assert [pair.key for pair in store.list("dir")] == ["dir/child"]
    store.delete("dir")
    assert store.get("dir/child").value == b"child"


def test_a_parent_created_implicitly_is_not_a_key(store: coord.Store) -> None:
    store.put("p/q/r", b"1")
    assert not store.exists("p")
    assert not store.exists("p/q")
    with pytest.raises(KeyNotFound):
        store.get("p/q")
    with pytest.raises(KeyNotFound):
        store.delete("p/q")


# -- list and delete_tree ---------------------------------------------------------


def test_list_is_recursive_sorted_and_strictly_under_the_prefix(store: coord.Store) -> None:
    for key in ["d/b", "d/a/2", "d/a/1", "d/c/x/y", "d", "dx", "e/1"]:
        store.put(key, key.encode())
    assert [pair.key for pair in store.list("d")] == ["d/a/1", "d/a/2", "d/b", "d/c/x/y"]
    assert [pair.value for pair in store.list("d/a")] == [b"d/a/1", b"d/a/2"]
    assert store.list("missing") == []
    assert store.list("d/b") == []


def test_list_of_the_root_is_every_key(store: coord.Store) -> None:
    store.put("x", b"1")
    store.put("y/z", b"2")
    assert [pair.key for pair in store.list("")] == ["x", "y/z"]


def test_delete_tree_removes_only_what_is_under(store: coord.Store) -> None:
    for key in ["t/1", "t/2/3", "t", "tt/1", "u"]:
        store.put(key, b"")
    store.delete_tree("t")
    assert store.list("t") == []
    assert [pair.key for pair in store.list("")] == ["t", "tt/1", "u"]
    store.delete_tree("t")  # deleting nothing is no error


def test_delete_tree_refuses_the_root(store: coord.Store) -> None:
    store.put("keep", b"")
    with pytest.raises(InvalidKey):
        store.delete_tree("")
    assert store.exists("keep")


# -- compare-and-swap -------------------------------------------------------------


def test_atomic_put_create_only(store: coord.Store) -> None:
    created = store.atomic_put("cas", b"1", None)
    assert created.value == b"1"
    with pytest.raises(KeyExists) as info:
        store.atomic_put("cas", b"2", None)
    assert info.value.key == "cas"
    assert store.get("cas").value == b"1"


def test_atomic_put_swaps_only_the_revision_it_read(store: coord.Store) -> None:
    first = store.put("cas", b"1")
    second = store.atomic_put("cas", b"2", first)
    assert second.value == b"2" and second.created == first.created
    with pytest.raises(KeyModified):
        store.atomic_put("cas", b"3", first)  # stale revision
    assert store.get("cas").value == b"2"
    third = store.atomic_put("cas", b"3", second)
    assert store.get("cas") == third


def test_atomic_put_on_a_gone_key(store: coord.Store) -> None:
    first = store.put("cas", b"1")
    store.delete("cas")
    with pytest.raises(KeyNotFound):
        store.atomic_put("cas", b"2", first)
    assert not store.exists("cas")


def test_atomic_put_after_delete_and_recreate_is_modified(store: coord.Store) -> None:
    first = store.put("cas", b"1")
    store.delete("cas")
    store.put("cas", b"again")
    with pytest.raises(KeyModified):
        store.atomic_put("cas", b"2", first)


def test_atomic_delete(store: coord.Store) -> None:
    first = store.put("cas", b"1")
    second = store.put("cas", b"2")
    with pytest.raises(KeyModified):
        store.atomic_delete("cas", first)
    assert store.exists("cas")
    store.atomic_delete("cas", second)
    assert not store.exists("cas")
    with pytest.raises(KeyNotFound):
        store.atomic_delete("cas", second)


def test_concurrent_compare_and_swap_loses_no_update(store: coord.Store) -> None:
    store.put("counter", b"0")
    threads, rounds = 4, 25

    def worker() -> None:
        for _ in range(rounds):
            while True:
                current = store.get("counter")
                try:
                    store.atomic_put("counter", str(int(current.value) + 1).encode(), current)
                    break
                except KeyModified:
                    continue

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert int(store.get("counter").value) == threads * rounds


def test_created_strictly_increases_in_creation_order(store: coord.Store) -> None:
    pairs = [store.atomic_put(f"order/{name}", b"", None) for name in "zyxwv"]
    createds = [pair.created for pair in pairs]
    assert createds == sorted(createds) and len(set(createds)) == len(createds)
    rewritten = store.put("order/z", b"again")
    assert rewritten.created == pairs[0].created
    assert [pair.created for pair in store.list("order")] == createds[::-1]


# -- watches ------------------------------------------------------------------------


def test_watch_sees_current_state_then_changes_in_order(store: coord.Store) -> None:
    store.put("w", b"0")
    with store.watch("w") as watch:
        assert summary(drain(watch, 1)) == [put_event("w", b"0")]
        store.put("w", b"1")
        store.put("other", b"x")
        store.delete("w")
        store.put("w", b"2")
        events = drain(watch, 3)
    assert summary(events) == [put_event("w", b"1"), ("delete", "w", None), put_event("w", b"2")]
    revisions = [event.revision for event in events]
    assert revisions == sorted(revisions) and len(set(revisions)) == 3


def test_watch_of_an_absent_key_starts_quiet(store: coord.Store) -> None:
    with store.watch("later") as watch:
        assert watch.get(timeout=0.3) is None
        store.put("later", b"now")
        assert summary(drain(watch, 1)) == [put_event("later", b"now")]


def test_watch_tree_sees_children_and_nothing_else(store: coord.Store) -> None:
    store.put("tree/a", b"1")
    store.put("tree", b"self")
    with store.watch_tree("tree") as watch:
        assert summary(drain(watch, 1)) == [put_event("tree/a", b"1")]
        store.put("treehouse", b"no")
        store.put("tree/b/c", b"2")
        store.delete("tree/a")
        store.put("elsewhere", b"no")
        store.delete_tree("tree")
        events = drain(watch, 3)
        assert watch.get(timeout=0.3) is None
    assert summary(events) == [put_event("tree/b/c", b"2"), ("delete", "tree/a", None), ("delete", "tree/b/c", None)]


def test_watch_from_a_start_revision_replays_history(store: coord.Store) -> None:
    first = store.put("h", b"1")
    store.put("h", b"2")
    store.delete("h")
    store.put("h", b"3")
    with store.watch("h", start_revision=first.revision) as watch:
        events = drain(watch, 4)
    assert summary(events) == [put_event("h", b"1"), put_event("h", b"2"), ("delete", "h", None), put_event("h", b"3")]
    assert events[0].revision == first.revision


def test_watch_close_ends_iteration(store: coord.Store) -> None:
    watch = store.watch_tree("")
    done = threading.Event()

    def consume() -> None:
        for _ in watch:
            pass
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    watch.close()
    assert done.wait(5)
    with pytest.raises(StoreClosed):
        watch.get(timeout=0)


# -- ttl and leases ----------------------------------------------------------------


def test_ttl_key_vanishes_with_a_delete_event(store: coord.Store) -> None:
    store.put("ttl", b"v", ttl=TTL)
    with store.watch("ttl") as watch:
        drain(watch, 1)
        event, took = wait_for(watch, lambda e: e.type == "delete", timeout=TTL + GRACE + 2)
    assert event.key == "ttl"
    assert took <= TTL + GRACE
    assert not store.exists("ttl")


def test_writing_a_ttl_key_again_without_ttl_keeps_it(store: coord.Store) -> None:
    store.put("ttl", b"v", ttl=TTL)
    store.put("ttl", b"forever")
    time.sleep(TTL + GRACE)
    assert store.get("ttl").value == b"forever"


def test_lease_kept_alive_past_several_ttls(store: coord.Store) -> None:
    with store.lease(TTL) as lease:
        pair = store.put("held", b"", lease=lease)
        assert pair.lease == lease.id
        time.sleep(2.5 * lease.ttl)
        assert lease.alive and not lease.lost.is_set()
        assert store.get("held").lease == lease.id


def test_revoke_removes_the_leases_keys(store: coord.Store) -> None:
    lease = store.lease(TTL)
    store.put("l/1", b"", lease=lease)
    store.put("l/2", b"", lease=lease)
    store.put("l/plain", b"")
    with store.watch_tree("l") as watch:
        drain(watch, 3)
        lease.revoke()
        events = drain(watch, 2)
    assert sorted(event.key for event in events) == ["l/1", "l/2"]
    assert {event.type for event in events} == {"delete"}
    assert [pair.key for pair in store.list("l")] == ["l/plain"]
    assert not lease.alive and not lease.lost.is_set()
    with pytest.raises(LeaseExpired):
        store.put("l/3", b"", lease=lease)
    assert not store.exists("l/3")


def test_on_lost_runs_at_once_when_registered_after_the_loss(store: coord.Store) -> None:
    lease = store.lease(TTL)
    lease._mark_lost()
    seen: list[coord.Lease] = []
    lease.on_lost(seen.append)
    assert seen == [lease] and not lease.alive


def test_two_stores_see_each_others_writes_and_events(open_store: Callable[[], coord.Store]) -> None:
    one, two = open_store(), open_store()
    with two.watch_tree("shared") as watch:
        written = one.put("shared/k", b"from one")
        assert two.get("shared/k") == written
        assert summary(drain(watch, 1)) == [put_event("shared/k", b"from one")]
        two.delete("shared/k")
        assert not one.exists("shared/k")
        assert summary(drain(watch, 1)) == [("delete", "shared/k", None)]
    with pytest.raises(KeyExists):
        two.atomic_put("shared/once", b"", one.atomic_put("shared/once", b"", None) and None)


HOLDER = """
import sys, coord
store = coord.connect()
lease = store.lease(float(sys.argv[1]))
store.put("owned/key", b"mine", lease=lease)
print("ready", lease.id, flush=True)
sys.stdin.readline()
print("lost" if lease.lost.is_set() else "alive", flush=True)
"""


def test_a_killed_owners_lease_keys_vanish_within_ttl(process_url: str) -> None:
    child = Child(HOLDER, process_url, str(TTL))
    with coord.connect(process_url) as store:
        try:
            child.expect("ready")
            with store.watch("owned/key") as watch:
                drain(watch, 1)
                killed = time.monotonic()
                child.signal(signal.SIGKILL)
                wait_for(watch, lambda e: e.type == "delete", timeout=TTL + GRACE + 5)
                took = time.monotonic() - killed
        finally:
            child.stop()
        assert took <= TTL + GRACE, f"the key outlived its dead owner by {took:.2f}s"
        assert not store.exists("owned/key")


def test_a_frozen_owner_finds_its_lease_lost(process_url: str) -> None:
    child = Child(HOLDER, process_url, str(TTL))
    with coord.connect(process_url) as store:
        try:
            child.expect("ready")
            with store.watch("owned/key") as watch:
                drain(watch, 1)
                child.signal(signal.SIGSTOP)
                wait_for(watch, lambda e: e.type == "delete", timeout=TTL + GRACE + 5)
            child.signal(signal.SIGCONT)
            time.sleep(0.2)  # let the woken keeper notice its deadline passed
            child.send("report")
            assert child.expect("") == "lost"
        finally:
            child.stop()


# -- bad input ----------------------------------------------------------------------

BAD_KEYS = ["", "/", "//", "a/../b", "..", "a/./b", "nul\x00", "line\nbreak", "tab\t", "del\x7f", "k" * 1025, 42, None]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_raise_invalid_key_before_anything_is_written(store: coord.Store, key: object) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put(key, b""),  # type: ignore[arg-type]
        lambda: store.get(key),  # type: ignore[arg-type]
        lambda: store.exists(key),  # type: ignore[arg-type]
        lambda: store.delete(key),  # type: ignore[arg-type]
        lambda: store.atomic_put(key, b"", None),  # type: ignore[arg-type]
        lambda: store.watch(key),  # type: ignore[arg-type]
        lambda: store.delete_tree(key),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(InvalidKey) as info:
            call()
        assert info.value.backend == store.backend
    assert store.list("") == []


def test_a_key_of_exactly_1024_bytes_is_fine(store: coord.Store) -> None:
    key = "k" * 1024
    store.put(key, b"")
    assert store.exists(key)


@pytest.mark.parametrize("value", ["text", 1, None, bytearray(b"x"), memoryview(b"x")], ids=repr)
def test_values_must_be_bytes(store: coord.Store, value: object) -> None:
    with pytest.raises(TypeError):
        store.put("v", value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.atomic_put("v", value, None)  # type: ignore[arg-type]
    assert not store.exists("v")


def test_values_over_one_mib_are_refused_before_sending(store: coord.Store) -> None:
    with pytest.raises(ValueError):
        store.put("v", b"x" * (1024 * 1024 + 1))
    assert not store.exists("v")


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
def test_bad_ttls_are_refused(store: coord.Store, ttl: float) -> None:
    with pytest.raises(ValueError):
        store.put("v", b"", ttl=ttl)
    with pytest.raises(ValueError):
        store.lease(ttl)
    assert not store.exists("v")


def test_previous_must_be_a_kvpair(store: coord.Store) -> None:
    with pytest.raises(TypeError):
        store.atomic_put("v", b"", 3)  # type: ignore[arg-type]
    assert not store.exists("v")


def test_ttl_and_lease_together_are_refused(store: coord.Store) -> None:
    with store.lease(TTL) as lease, pytest.raises(ValueError):
        store.put("v", b"", ttl=TTL, lease=lease)


# -- closing ------------------------------------------------------------------------


def test_operations_after_close_raise_store_closed(open_store: Callable[[], coord.Store]) -> None:
    store = open_store()
    watch = store.watch_tree("")
    store.close()
    store.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: store.put("k", b""),
        lambda: store.get("k"),
        lambda: store.exists("k"),
        lambda: store.delete("k"),
        lambda: store.list(""),
        lambda: store.delete_tree("k"),
        lambda: store.atomic_put("k", b"", None),
        lambda: store.watch("k"),
        lambda: store.lease(TTL),
    ]
    for call in calls:
        with pytest.raises(StoreClosed):
            call()
    assert list(watch) == []


def test_close_revokes_the_stores_leases(open_store: Callable[[], coord.Store]) -> None:
    owner, other = open_store(), open_store()
    lease = owner.lease(TTL)
    owner.put("bye", b"", lease=lease)
    owner.close()
    assert not other.exists("bye")


def test_prefixes_keep_namespaces_apart(backend: str, tmp_path: object) -> None:
    from tests.conftest import make_url

    url = make_url(backend, tmp_path)  # type: ignore[arg-type]
    joiner = "&" if "?" in url else "?"
    with coord.connect(f"{url}{joiner}prefix=one") as one, coord.connect(f"{url}{joiner}prefix=two") as two:
        one.put("k", b"1")
        assert not two.exists("k")
        assert [pair.key for pair in one.list("")] == ["k"]
        assert two.list("") == []
