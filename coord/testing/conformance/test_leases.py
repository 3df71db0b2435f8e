"""Ttl keys and leases: kept alive while their owner lives, gone within ttl + grace when it dies.

Part of the Store conformance suite (``coord.testing.conformance``). Time
bounds follow the contract (ttl + 1 s) and otherwise stay generous: precise
timing is for benchmarks. The tests that kill or freeze an owner run it in a
child process, so they need a store that several processes share
(the ``process_url`` fixture).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

import coord
from coord import KeyExists, LeaseExpired

from ._child import Child
from ._events import GRACE, TTL, drain, next_event, put_event, summary


def test_ttl_key_vanishes_with_a_delete_event(store: coord.Store) -> None:
    store.put("ttl", b"v", ttl=TTL)
    with store.watch("ttl") as watch:
        drain(watch, 1)
        event, took = next_event(watch, lambda e: e.type == "delete", timeout=TTL + GRACE + 2)
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
print("report", "lost" if lease.lost.is_set() else "alive", flush=True)
"""


def test_a_killed_owners_lease_keys_vanish_within_ttl(process_url: str) -> None:
    child = Child.from_code(HOLDER, str(TTL), env={"COORD_URL": process_url})
    with coord.connect(process_url) as store:
        try:
            child.expect("ready", 30)
            with store.watch("owned/key") as watch:
                drain(watch, 1)
                killed = time.monotonic()
                child.signal(signal.SIGKILL)
                next_event(watch, lambda e: e.type == "delete", timeout=TTL + GRACE + 5)
                took = time.monotonic() - killed
        finally:
            child.close()
        assert took <= TTL + GRACE, f"the key outlived its dead owner by {took:.2f}s"
        assert not store.exists("owned/key")


def test_a_frozen_owner_finds_its_lease_lost(process_url: str) -> None:
    child = Child.from_code(HOLDER, str(TTL), env={"COORD_URL": process_url})
    with coord.connect(process_url) as store:
        try:
            child.expect("ready", 30)
            with store.watch("owned/key") as watch:
                drain(watch, 1)
                child.signal(signal.SIGSTOP)
                next_event(watch, lambda e: e.type == "delete", timeout=TTL + GRACE + 5)
            child.signal(signal.SIGCONT)
            time.sleep(0.2)  # let the woken keeper notice its deadline passed
            child.send("report")
            assert child.expect("report", 30)[1] == "lost"
        finally:
            child.close()


def test_close_revokes_the_stores_leases(open_store: Callable[[], coord.Store]) -> None:
    owner, other = open_store(), open_store()
    lease = owner.lease(TTL)
    owner.put("bye", b"", lease=lease)
    owner.close()
    assert not other.exists("bye")
