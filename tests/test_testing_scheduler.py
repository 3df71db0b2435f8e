"""coord.testing's additions for the stateful tests: crash, freezing a whole client, leases(), and the Scheduler."""

from __future__ import annotations

import threading

import pytest

import coord
from coord.testing import FaultyStore, Killed, Scheduler, Stalled


def client(clock: coord.ManualClock, name: str = "shared") -> FaultyStore:
    return FaultyStore(coord.connect(f"memory://scheduler-{name}", clock=clock))


def test_a_crashed_client_does_nothing_and_its_leases_expire(clock: coord.ManualClock) -> None:
    dying, other = client(clock, "crash"), client(clock, "crash")
    lease = dying.lease(3)
    dying.put("held", b"", lease=lease)
    assert dying.leases() == [lease]
    dying.crash()
    with pytest.raises(coord.StoreUnavailable, match="crashed"):
        dying.get("held")
    clock.advance(2.9)
    assert other.exists("held"), "a crash cleans nothing up"
    clock.advance(0.2)
    assert not other.exists("held"), "the store expires a dead client's lease after its ttl"


def test_freezing_a_client_stops_every_lease_even_later_ones(clock: coord.ManualClock) -> None:
    store = client(clock, "freeze")
    first = store.lease(3)
    store.freeze()
    second = store.lease(3)
    clock.advance(3)
    assert first.lost.is_set() and second.lost.is_set()
    store.thaw()
    third = store.lease(3)
    clock.advance(10)
    assert third.alive


def test_a_blocked_call_parks_and_resumes_when_its_event_comes(clock: coord.ManualClock) -> None:
    holder, waiter = coord.Lock("l", store=client(clock), ttl=3), coord.Lock("l", store=client(clock), ttl=3)
    scheduler = Scheduler(clock, stall_timeout=5)
    assert scheduler.start(holder.acquire).result() is True
    waiting = scheduler.start(waiter.acquire)
    assert not waiting.done and scheduler.tasks == [waiting]
    clock.advance(30)
    scheduler.settle()
    assert not waiting.done, "a held lock stays held while its holder's lease is renewed"
    holder.release()
    scheduler.settle()
    assert waiting.result() is True and waiter.holding and waiter.token > holder.token


def test_timeouts_are_measured_on_the_clock(clock: coord.ManualClock) -> None:
    store = client(clock, "timeouts")
    scheduler = Scheduler(clock, stall_timeout=5)
    watch = store.watch("k")
    waiting = scheduler.start(lambda: watch.get(timeout=10))
    clock.advance(9.9)
    scheduler.settle()
    assert not waiting.done
    clock.advance(0.1)
    scheduler.settle()
    assert waiting.done and waiting.result() is None


def test_parked_calls_run_one_at_a_time_in_the_order_they_started(clock: coord.ManualClock) -> None:
    store = client(clock, "order")
    scheduler = Scheduler(clock, stall_timeout=5)
    order: list[int] = []

    def wait(n: int) -> None:
        with store.watch("go") as watch:
            watch.get()
            order.append(n)

    for n in range(5):
        scheduler.start(lambda n=n: wait(n))
    store.put("go", b"")
    scheduler.settle()
    assert order == [0, 1, 2, 3, 4]


def test_a_frozen_task_is_not_resumed_until_thawed(clock: coord.ManualClock) -> None:
    store = client(clock, "frozen")
    scheduler = Scheduler(clock, stall_timeout=5)
    watch = store.watch("k")
    task = scheduler.start(lambda: watch.get(timeout=1))
    scheduler.freeze(task)
    clock.advance(2)
    scheduler.settle()
    assert not task.done
    scheduler.thaw(task)
    scheduler.settle()
    assert task.done


def test_kill_raises_killed_where_the_task_waits(clock: coord.ManualClock) -> None:
    store = client(clock, "kill")
    scheduler = Scheduler(clock, stall_timeout=5)
    watch = store.watch("k")
    task = scheduler.start(lambda: watch.get())
    scheduler.kill(task)
    assert task.done and isinstance(task.error, Killed)
    with pytest.raises(Killed):
        task.result()


def test_a_task_blocked_elsewhere_is_reported(clock: coord.ManualClock) -> None:
    scheduler = Scheduler(clock, stall_timeout=0.2)
    gate = threading.Event()
    with pytest.raises(Stalled, match="cannot drive"):
        scheduler.start(gate.wait)
    gate.set()


def test_watches_outside_tasks_wait_in_real_time(clock: coord.ManualClock) -> None:
    watch = client(clock, "plain").watch("k")
    assert watch.get(timeout=0.01) is None
