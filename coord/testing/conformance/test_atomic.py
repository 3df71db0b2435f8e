"""Compare-and-swap: create-only writes, swaps and deletes of the revision read, and no lost update.

Part of the Store conformance suite (``coord.testing.conformance``).
"""

from __future__ import annotations

import threading

import pytest

import coord
from coord import KeyExists, KeyModified, KeyNotFound


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
