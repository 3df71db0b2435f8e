"""coord.testing.FaultyStore injects exactly the faults it is told to, on a virtual clock."""

from __future__ import annotations

import pytest

import coord
from coord.testing import FaultyStore


@pytest.fixture
def faulty(clock: coord.ManualClock) -> FaultyStore:
    return FaultyStore(coord.connect("memory://", clock=clock))


def test_a_failed_operation_never_reaches_the_store(faulty: FaultyStore) -> None:
    faulty.inject("fail", op="atomic_put")
    with pytest.raises(coord.StoreUnavailable, match="before reaching"):
        faulty.atomic_put("k", b"1", None)
    assert not faulty.exists("k")
    faulty.atomic_put("k", b"1", None)  # the fault was used up
    assert faulty.injected == [("atomic_put", "fail")]


def test_a_lost_reply_hides_an_applied_write(faulty: FaultyStore) -> None:
    faulty.inject("lose_reply", op="atomic_put")
    with pytest.raises(coord.StoreUnavailable, match="reply was lost"):
        faulty.atomic_put("k", b"1", None)
    assert faulty.get("k").value == b"1"
    with pytest.raises(coord.KeyExists):
        faulty.atomic_put("k", b"1", None)  # the naive retry


def test_a_delay_moves_the_virtual_clock(faulty: FaultyStore, clock: coord.ManualClock) -> None:
    before = clock.now()
    faulty.inject("delay", op="get", delay=3.0)
    faulty.put("k", b"")
    faulty.get("k")
    assert clock.now() - before == pytest.approx(3.0)


def test_a_delay_inside_a_timer_never_turns_the_clock_back(faulty: FaultyStore, clock: coord.ManualClock) -> None:
    """A timer that sleeps past the end of the advance running it (a delayed call in a keeper or a guard)
    leaves the clock at the later time: what expired meanwhile stays expired, for every holder."""
    start = clock.now()
    lease = faulty.lease(2)
    faulty.freeze(lease)
    faulty.inject("delay", op="get", delay=5.0)
    faulty.put("k", b"")
    clock.timers("test").call_at(start + 0.5, lambda: faulty.get("k"))
    clock.advance(1.0)
    assert clock.now() == pytest.approx(start + 5.5)
    assert not lease.alive and lease.lost.is_set()


def test_a_frozen_lease_expires_and_its_holder_sees_lost(faulty: FaultyStore, clock: coord.ManualClock) -> None:
    lease = faulty.lease(10)
    faulty.put("held", b"", lease=lease)
    clock.advance(25)
    assert lease.alive and faulty.exists("held"), "a healthy lease is renewed as virtual time passes"
    faulty.freeze(lease)
    clock.advance(10)
    assert lease.lost.is_set() and not lease.alive
    assert not faulty.exists("held")


def test_an_expired_lease_is_noticed_at_the_next_renewal(faulty: FaultyStore, clock: coord.ManualClock) -> None:
    lease = faulty.lease(9)
    faulty.put("held", b"", lease=lease)
    faulty.expire(lease)
    assert not faulty.exists("held")
    clock.advance(3.1)
    assert lease.lost.is_set()


def test_dropped_watches_end_with_store_unavailable(faulty: FaultyStore) -> None:
    watch = faulty.watch_tree("")
    faulty.drop_watches()
    with pytest.raises(coord.StoreUnavailable):
        watch.get(timeout=1)


def test_unknown_operations_are_refused(faulty: FaultyStore) -> None:
    with pytest.raises(ValueError):
        faulty.inject("fail", op="teleport")


def test_the_inner_stores_prefix_is_kept() -> None:
    name = "faulty-prefix"
    with coord.connect(f"memory://{name}") as observer:
        faulty = FaultyStore(coord.connect(f"memory://{name}?prefix=app"))
        faulty.put("k", b"")
        assert [pair.key for pair in faulty.list("")] == ["k"]
        assert [pair.key for pair in observer.list("")] == ["app/k"]
        faulty.close()
