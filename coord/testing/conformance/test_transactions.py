"""Transactions and sessions: conditions checked first, writes all or none, reads that see them.

Part of the Store conformance suite (``coord.testing.conformance``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import coord
from coord import InvalidKey, KeyExists, KeyModified, KeyNotFound, LeaseExpired, NotSupported

from . import fresh_namespace
from ._events import drain


def keys(pairs: list[coord.KVPair]) -> list[str]:
    return [pair.key for pair in pairs]


def commit_or_refused(store: coord.Store, txn: coord.Transaction) -> list[Any] | None:
    """Commit a transaction of several writes (or checks of keys it does not write).

    A backend that declares it cannot (``multi_key_transactions`` false) must
    refuse with ``NotSupported``: then ``None``, and the caller checks nothing
    was written.
    """
    if store.multi_key_transactions:
        return txn.commit()
    with pytest.raises(NotSupported):
        txn.commit()
    return None


def test_writes_apply_together_and_reads_see_them(store: coord.Store) -> None:
    old = store.put("q/old", b"0")
    txn = store.transaction()
    txn.put("q/a", b"1", previous=None)
    txn.put("q/old", b"2", previous=old)
    txn.delete("gone")
    txn.list("q")
    txn.get("q/a")
    results = commit_or_refused(store, txn)
    if results is None:
        assert keys(store.list("")) == ["q/old"] and store.get("q/old") == old
        return
    created, swapped, existed, listed, got = results
    assert created.key == "q/a" and created.value == b"1" and created.lease is None
    assert swapped.key == "q/old" and swapped.value == b"2" and swapped.created == old.created
    assert swapped.revision != old.revision
    assert existed is False
    assert keys(listed) == ["q/a", "q/old"] and [p.value for p in listed] == [b"1", b"2"]
    assert got == store.get("q/a")
    assert store.get("q/old").value == b"2"


def test_a_failed_condition_writes_nothing_and_names_its_key(store: coord.Store) -> None:
    there = store.put("there", b"x")
    store.put("moved", b"1")
    stale = store.get("moved")
    store.put("moved", b"2")
    cases: list[tuple[Callable[[coord.Transaction], object], type[coord.CoordError], str]] = [
        (lambda txn: txn.put("there", b"y", previous=None), KeyExists, "there"),
        (lambda txn: txn.put("moved", b"3", previous=stale), KeyModified, "moved"),
        (lambda txn: txn.delete("moved", previous=stale), KeyModified, "moved"),
        (lambda txn: txn.check("absent", there), KeyNotFound, "absent"),
        (lambda txn: txn.check("there", None), KeyExists, "there"),
    ]
    for add, error, key in cases:
        txn = store.transaction()
        txn.put("new", b"would be written")
        add(txn)
        txn.delete("there")
        if store.multi_key_transactions:
            with pytest.raises(error) as info:
                txn.commit()
            assert info.value.key == key and info.value.backend == store.backend
        else:
            with pytest.raises(NotSupported):
                txn.commit()
        assert not store.exists("new")
        assert store.get("there").value == b"x"
        assert store.get("moved").value == b"2"


def test_conditions_are_checked_against_the_store_before_the_transaction(store: coord.Store) -> None:
    txn = store.transaction()
    txn.put("k", b"1", previous=None)
    txn.check("k", None)  # absent before the transaction, though its own put comes first
    txn.get("k")
    _, _, got = txn.commit()
    assert got.value == b"1"


def test_checks_pass_on_the_revision_read(store: coord.Store) -> None:
    pair = store.put("k", b"1")
    txn = store.transaction()
    txn.check("k", pair)
    txn.check("absent", None)
    txn.delete("k", previous=pair)
    results = commit_or_refused(store, txn)
    if results is None:
        assert store.get("k") == pair
        return
    assert results == [None, None, True]
    assert not store.exists("k")


def test_a_write_bound_to_a_dead_lease_writes_nothing(store: coord.Store) -> None:
    lease = store.lease(10)
    txn = store.transaction()
    txn.put("a", b"1")
    txn.put("b", b"2", lease=lease)
    lease.revoke()
    with pytest.raises(LeaseExpired if store.multi_key_transactions else NotSupported):
        txn.commit()
    assert not store.exists("a") and not store.exists("b")
    with pytest.raises(LeaseExpired):
        store.transaction().put("b", b"2", lease=lease).list("").commit()
    assert not store.exists("b")


def test_keys_written_with_a_lease_go_with_it(store: coord.Store) -> None:
    lease = store.lease(10)
    txn = store.transaction()
    txn.put("l/a", b"1", lease=lease)
    txn.put("l/b", b"2", lease=lease)
    results = commit_or_refused(store, txn)
    if results is None:
        results = [
            store.transaction().put(key, value, lease=lease).commit()[0]
            for key, value in [("l/a", b"1"), ("l/b", b"2")]
        ]
    a, b = results
    assert a.lease == lease.id and b.lease == lease.id
    lease.revoke()
    assert store.list("l") == []


def test_each_write_is_one_watch_event(store: coord.Store) -> None:
    store.put("w/gone", b"")
    with store.watch_tree("w") as watch:
        drain(watch, 1)
        txn = store.transaction()
        txn.put("w/a", b"1")
        txn.delete("w/gone")
        txn.put("w/b", b"2")
        if commit_or_refused(store, txn) is None:
            txn = store.transaction().put("w/a", b"1").get("w/a")
            assert [pair.value for pair in txn.commit()] == [b"1", b"1"]
            assert drain(watch, 1)[0].key == "w/a"
            return
        events = drain(watch, 3)
    assert [(e.type, e.key) for e in events] == [("put", "w/a"), ("delete", "w/gone"), ("put", "w/b")]
    assert [e.revision for e in events] == sorted(e.revision for e in events)


def test_a_transaction_is_committed_once(store: coord.Store) -> None:
    txn = store.transaction()
    txn.put("k", b"")
    txn.commit()
    with pytest.raises(RuntimeError):
        txn.commit()
    with pytest.raises(RuntimeError):
        txn.put("k", b"")


def test_bad_operations_are_refused_when_added(store: coord.Store) -> None:
    txn = store.transaction()
    with pytest.raises(InvalidKey):
        txn.put("", b"")
    with pytest.raises(InvalidKey):
        txn.get("a/../b")
    with pytest.raises(TypeError):
        txn.put("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        txn.put("k", b"", previous="rev")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        txn.delete("k", previous=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        txn.put("k", b"", ttl=1, lease=store.lease(10))
    other = coord.connect("memory://")
    try:
        txn.put("k", b"", lease=other.lease(10))
        with pytest.raises(TypeError):
            txn.commit()
    finally:
        other.close()
    assert store.list("") == []


def test_an_empty_transaction_does_nothing(store: coord.Store) -> None:
    assert store.transaction().commit() == []


def test_the_prefix_applies_to_every_key_of_a_transaction(
    open_store: Callable[[], coord.Store], store_url: str
) -> None:
    inner_url = fresh_namespace(store_url)  # a namespace below the test's own
    tag = inner_url.rsplit("prefix=", 1)[1].rsplit("/", 1)[-1]
    inner = coord.connect(inner_url)
    try:
        txn = inner.transaction()
        txn.put("k", b"1", previous=None)
        txn.list("")
        written, listed = txn.commit()
        assert written.key == "k" and keys(listed) == ["k"]
        with pytest.raises(KeyExists) as info:
            inner.transaction().put("k", b"", previous=None).commit()
        assert info.value.key == "k"
        assert keys(open_store().list("")) == [f"{tag}/k"]
    finally:
        inner.close()


# -- sessions ------------------------------------------------------------------------


def test_a_session_is_one_lease_per_ttl(store: coord.Store) -> None:
    first = store.session(10)
    assert store.session(10) is first and first.alive
    assert store.session(20) is not first
    assert store.session(10.0) is first


def test_a_new_session_follows_one_that_ended(store: coord.Store) -> None:
    first = store.session(10)
    store.put("s/k", b"", lease=first)
    first.revoke()
    assert not store.exists("s/k")
    second = store.session(10)
    assert second is not first and second.alive and second.id != first.id


def test_a_session_takes_a_ttl_as_a_lease_does(store: coord.Store) -> None:
    with pytest.raises(ValueError):
        store.session(0)
    with pytest.raises(TypeError):
        store.session("10")  # type: ignore[arg-type]


def test_a_watch_holds_the_current_state_when_it_returns(store: coord.Store) -> None:
    """The recipes rely on it: a fresh watch's first events are queued before ``watch()`` returns."""
    store.put("here", b"1")
    with store.watch("here") as watch:
        event = watch.get(timeout=0)
        assert event is not None and (event.type, event.value) == ("put", b"1")
    with store.watch("absent") as watch:
        assert watch.get(timeout=0) is None
    store.put("t/a", b"")
    store.put("t/b", b"")
    with store.watch_tree("t") as watch:
        first, second = watch.get(timeout=0), watch.get(timeout=0)
        assert first is not None and second is not None and (first.key, second.key) == ("t/a", "t/b")
