"""What a Store refuses before anything is sent: bad keys, values and ttls, and every call once closed.

Part of the Store conformance suite (``coord.testing.conformance``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import coord
from coord import InvalidKey, StoreClosed

from ._events import TTL

# -- bad input ----------------------------------------------------------------------

BAD_KEYS = ["", "/", "//", "a/../b", "..", "a/./b", "nul\x00", "line\nbreak", "tab\t", "del\x7f", "k" * 1025, 42, None]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_raise_invalid_key_before_anything_is_written(store: coord.Store, key: Any) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put(key, b""),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.atomic_put(key, b"", None),
        lambda: store.watch(key),
        lambda: store.delete_tree(key),
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
def test_values_must_be_bytes(store: coord.Store, value: Any) -> None:
    with pytest.raises(TypeError):
        store.put("v", value)
    with pytest.raises(TypeError):
        store.atomic_put("v", value, None)
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
    not_a_pair: Any = 3
    with pytest.raises(TypeError):
        store.atomic_put("v", b"", not_a_pair)
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
