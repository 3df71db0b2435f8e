"""Keys and values: put, get, exists, delete, list and delete_tree, namespaces kept apart by prefixes; the server's clock.

Part of the Store conformance suite (``coord.testing.conformance``): every test
runs against the store under test, and names the guarantee it checks.
"""

from __future__ import annotations

import time

import pytest

import coord
from coord import InvalidKey, KeyNotFound

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


# -- namespaces ---------------------------------------------------------------------


def test_prefixes_keep_namespaces_apart(store_url: str) -> None:
    url = store_url
    joiner = "&" if "?" in url else "?"
    with coord.connect(f"{url}{joiner}prefix=one") as one, coord.connect(f"{url}{joiner}prefix=two") as two:
        one.put("k", b"1")
        assert not two.exists("k")
        assert [pair.key for pair in one.list("")] == ["k"]
        assert two.list("") == []


# -- the server's clock ------------------------------------------------------------


def test_server_time_reads_the_servers_clock_and_writes_no_key(store: coord.Store) -> None:
    """``server_time()`` reads the server's clock over the Store's own connection (its credentials and TLS).

    A store with no server of its own (sqlite, memory: it runs on this
    host's clock) says ``None``. The test's server runs on a host whose
    clock agrees with this one's to within seconds.
    """
    before = time.time()
    reading = store.server_time()
    after = time.time()
    if reading is not None:
        assert 0 < reading.resolution <= 1 and reading.source
        assert before - 30 <= reading.seconds <= after + 30, (before, reading, after)
    assert store.list("") == [], "reading the clock wrote a key"
