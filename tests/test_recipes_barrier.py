"""Barrier and DoubleBarrier: in threads on every backend, and across processes, one of which crashes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import coord
from tests.support import Children, run, wait_for

TTL = 2.0
EXPIRY_BOUND = TTL + 1.0 + 1.0  # generous: machines are noisy


def tickets(store: coord.Store, base: str) -> list[str]:
    """The participants' tickets under a barrier's keys, of every round (not its round counter)."""
    return [pair.key for pair in store.list(base) if pair.key != f"{base}/round"]


# -- one process, every backend --------------------------------------------------------------


def test_barrier_opens_when_the_last_party_arrives(open_store: Callable[[], coord.Store]) -> None:
    observer = open_store()
    passed: list[float] = []
    threads = []

    def wait(barrier: coord.Barrier) -> None:
        barrier.wait(timeout=30)
        passed.append(time.monotonic())

    for i in range(2):
        threads.append(run(wait, coord.Barrier("b", 3, store=open_store(), ttl=TTL)))
        wait_for(lambda: len(tickets(observer, "barrier/b")) == i + 1, 10, f"party {i} arrived")  # noqa: B023
    time.sleep(0.3)
    assert passed == [], "two of three parties must not pass"
    arrived = time.monotonic()
    coord.Barrier("b", 3, store=open_store(), ttl=TTL).wait(timeout=10)
    for thread in threads:
        thread.join(timeout=10)
    assert len(passed) == 2 and min(passed) >= arrived
    assert tickets(observer, "barrier/b") == [], "a barrier leaves no ticket behind"
    assert observer.get("barrier/b/round").value == b"1", "only the number of the round now gathering"


def test_a_party_that_timed_out_no_longer_counts(open_store: Callable[[], coord.Store]) -> None:
    store = open_store()
    with pytest.raises(TimeoutError):
        coord.Barrier("b", 2, store=store, ttl=TTL).wait(timeout=0.3)
    assert tickets(store, "barrier/b") == []
    with pytest.raises(TimeoutError):
        coord.Barrier("b", 2, store=open_store(), ttl=TTL).wait(timeout=0.3)


def test_double_barrier_lets_nobody_in_before_all_enter_nor_out_before_all_leave(
    open_store: Callable[[], coord.Store],
) -> None:
    times: dict[str, list[float]] = {"enter": [], "entered": [], "leave": [], "left": []}
    lock = threading.Lock()

    def note(what: str) -> None:
        with lock:
            times[what].append(time.monotonic())

    def party(delay: float) -> None:
        barrier = coord.DoubleBarrier("d", 3, store=open_store(), ttl=TTL)
        time.sleep(delay)
        note("enter")
        barrier.enter(timeout=30)
        note("entered")
        time.sleep(delay)  # the work: the slowest party leaves last
        note("leave")
        barrier.leave(timeout=30)
        note("left")

    threads = [run(party, delay) for delay in (0.0, 0.2, 0.5)]
    for thread in threads:
        thread.join(timeout=60)
    assert all(len(stamps) == 3 for stamps in times.values()), times
    assert min(times["entered"]) >= max(times["enter"])
    assert min(times["left"]) >= max(times["leave"])
    assert tickets(open_store(), "double-barrier/d") == []


# -- several processes, one crashing: sqlite and the servers ----------------------------------------


def test_a_crashed_party_stops_counting_once_its_lease_expires(process_url: str, children: Children) -> None:
    with coord.connect(process_url) as store:

        def arrived() -> int:
            return len(tickets(store, "barrier/b"))

        first = children.spawn("barrier", process_url, "b", 3, TTL)
        crashing = children.spawn("barrier", process_url, "b", 3, TTL)
        wait_for(lambda: arrived() == 2, 30, "two parties arrived")
        crashing.kill()
        wait_for(lambda: arrived() == 1, EXPIRY_BOUND + 5, "the crashed party's arrival expired")
        second = children.spawn("barrier", process_url, "b", 3, TTL)
        wait_for(lambda: arrived() == 2, 30, "a new party arrived")
        assert first.quiet("PASSED", 1.0) and second.quiet("PASSED", 0.1), "the crashed party must not count"
        last = children.spawn("barrier", process_url, "b", 3, TTL)
        for child in (first, second, last):
            child.expect("PASSED", 30)
            assert child.wait(10) == 0
        assert tickets(store, "barrier/b") == []


def test_double_barrier_parties_leave_once_a_crashed_party_expires(process_url: str, children: Children) -> None:
    parties = [children.spawn("double-barrier", process_url, "d", 3, TTL) for _ in range(3)]
    for child in parties:
        child.expect("ENTERED", 30)
    crashed, *rest = parties
    killed_at = crashed.kill()
    for child in rest:
        child.send("leave")
    # The crashed party's ticket lives until its lease expires (at least 2/3 of the ttl after the kill),
    # except on sqlite, where the kernel tells at once that its owner died.
    sqlite = process_url.startswith("sqlite:")  # there the kernel tells at once that a party's owner died
    if not sqlite:
        assert rest[0].quiet("LEFT", 0.5), "nobody leaves before every party has left or expired"
    left = [float(child.expect("LEFT", EXPIRY_BOUND + 10)[1]) for child in rest]
    assert max(left) - killed_at < (2.0 if sqlite else EXPIRY_BOUND)
    with coord.connect(process_url) as store:
        assert tickets(store, "double-barrier/d") == []
