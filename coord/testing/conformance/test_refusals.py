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

BAD_KEYS = [
    "",
    "/",
    "//",
    "a/../b",
    "..",
    "a/./b",
    "nul\x00",
    "line\nbreak",
    "tab\t",
    "del\x7f",
    "c1\x85next-line",
    "c1\x9f",
    "line\u2028separator",
    "paragraph\u2029separator",
    "\U0010ffff-noncharacter first",
    "nonchar\ufffe",
    "nonchar\ufdd0",
    "k" * 1025,
    42,
    None,
]


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


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), 30 * 24 * 3600 + 1, 1e10, 1e300, 2**63])
def test_bad_ttls_are_refused(store: coord.Store, ttl: float) -> None:
    """A ttl is positive and at most 30 days: larger ones overflow backends' fields and every timer's wait."""
    with pytest.raises(ValueError):
        store.put("v", b"", ttl=ttl)
    with pytest.raises(ValueError):
        store.lease(ttl)
    with pytest.raises(ValueError):
        store.session(ttl)
    assert not store.exists("v")


def test_the_longest_ttl_is_thirty_days(store: coord.Store) -> None:
    """Thirty days is accepted everywhere; a lease reports the ttl the backend granted.

    A backend may grant less (a ZooKeeper session is capped by the server's
    maxSessionTimeout), never nothing: the keeper renews it all the same.
    """
    longest = 30 * 24 * 3600
    assert store.put("v", b"", ttl=longest).key == "v"
    assert store.exists("v")
    with store.lease(longest) as lease:
        assert lease.alive and lease.ttl > 0
        assert store.put("l", b"", lease=lease).lease == lease.id


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1", "0", "soon"])
def test_bad_store_timeouts_are_configuration_errors(store_url: str, timeout: str) -> None:
    joiner = "&" if "?" in store_url else "?"
    with pytest.raises(coord.ConfigurationError, match="timeout"):
        coord.connect(f"{store_url}{joiner}timeout={timeout}")
    with pytest.raises(coord.ConfigurationError, match="timeout"):
        coord.connect(store_url, timeout=float(timeout) if timeout != "soon" else timeout)


@pytest.mark.parametrize("timeout", [float("nan"), -1.0, "soon"])
def test_bad_recipe_timeouts_are_refused_before_anything_is_written(store: coord.Store, timeout: Any) -> None:
    error = TypeError if isinstance(timeout, str) else ValueError
    calls: list[Callable[[], object]] = [
        lambda: coord.Lock("l", store=store).acquire(timeout=timeout),
        lambda: coord.Semaphore("s", 2, store=store).acquire(timeout=timeout),
        lambda: coord.Election("e", store=store).campaign(timeout=timeout),
        lambda: coord.Barrier("b", 2, store=store).wait(timeout=timeout),
    ]
    for call in calls:
        with pytest.raises(error):
            call()
    assert store.list("") == []


def test_an_infinite_timeout_means_no_timeout(store: coord.Store) -> None:
    lock = coord.Lock("l", store=store)
    assert lock.acquire(timeout=float("inf"))
    lock.release()


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
        lambda: store.server_time(),
    ]
    for call in calls:
        with pytest.raises(StoreClosed):
            call()
    assert list(watch) == []


def test_after_close_no_holder_of_its_leases_holds(open_store: Callable[[], coord.Store]) -> None:
    """Closing a Store revokes its leases here too: its holders report not held at once, none reports lost."""
    store = open_store()
    lock = coord.Lock("l", store=store)
    assert lock.acquire(timeout=10)
    leadership = coord.Election("e", store=store).campaign(timeout=10)
    lease = store.lease(TTL)
    store.close()
    assert not lock.holding and not leadership.is_leader and not lease.alive
    assert not lock.lost.is_set() and not leadership.lost.is_set() and not lease.lost.is_set()
    other = open_store()
    assert coord.Lock("l", store=other).acquire(timeout=10), "the lock was free again on the store's side too"
