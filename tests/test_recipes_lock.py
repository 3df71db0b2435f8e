"""Lock and Semaphore: mutual exclusion, arrival order, herd-free wake-ups, lease loss, several processes."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import pytest

import coord
from coord.testing import FaultyStore
from tests.support import Children, run, wait_for

TTL = 2.0
KILL_BOUND = TTL + 1.0 + 1.0  # generous: the precise numbers belong in benchmarks/failover.py


def wakeups(caplog: pytest.LogCaptureFixture) -> Counter[str]:
    """How many times each waiter woke up (the recipes log each wake-up with its key)."""
    return Counter(record.coord_waiter for record in caplog.records if hasattr(record, "coord_waiter"))


# -- Lock, one process, every backend -----------------------------------------------------


def test_lock_excludes_threads_with_their_own_stores(open_store: Callable[[], coord.Store]) -> None:
    counter = open_store()
    counter.put("counter", b"0")
    tokens: list[int] = []

    def work() -> None:
        lock = coord.Lock("count", store=open_store(), ttl=TTL)
        for _ in range(8):
            with lock:
                value = int(counter.get("counter").value)  # read-modify-write, no CAS
                time.sleep(0.001)
                counter.put("counter", str(value + 1).encode())
                tokens.append(lock.token)

    threads = [run(work) for _ in range(4)]
    for thread in threads:
        thread.join(timeout=60)
    assert counter.get("counter").value == b"32"
    assert tokens == sorted(set(tokens)), "fencing tokens must strictly increase from holder to holder"


def test_acquire_without_blocking_or_with_a_timeout(open_store: Callable[[], coord.Store]) -> None:
    holder = coord.Lock("l", store=open_store(), ttl=TTL)
    other = coord.Lock("l", store=open_store(), ttl=TTL)
    assert holder.acquire(blocking=False)
    assert holder.holding
    assert not other.acquire(blocking=False)
    started = time.monotonic()
    assert not other.acquire(timeout=0.3)
    assert time.monotonic() - started >= 0.25
    assert not other.holding
    with pytest.raises(ValueError):
        other.acquire(blocking=False, timeout=1)
    with pytest.raises(RuntimeError):
        other.release()
    holder.release()
    assert not holder.holding
    assert other.acquire(timeout=5)
    assert other.token > holder.token
    other.release()
    assert open_store().list("lock/l") == [], "gave-up and released tickets must be gone"


def test_threads_sharing_one_lock_object_take_turns(store: coord.Store) -> None:
    lock = coord.Lock("shared", store=store, ttl=TTL)
    inside = threading.Semaphore(1)
    overlaps: list[bool] = []

    def work() -> None:
        for _ in range(5):
            with lock:
                overlaps.append(not inside.acquire(blocking=False))
                time.sleep(0.002)
                inside.release()

    for thread in [run(work) for _ in range(3)]:
        thread.join(timeout=30)
    assert overlaps == [False] * 15


def test_each_waiter_wakes_only_when_its_predecessor_leaves(
    open_store: Callable[[], coord.Store], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="coord.recipes")
    observer = open_store()
    holder = coord.Lock("herd", store=observer, ttl=TTL)
    holder.acquire()
    order: list[int] = []
    threads = []
    for i in range(10):
        lock = coord.Lock("herd", store=open_store(), ttl=TTL)

        def work(lock: coord.Lock = lock, i: int = i) -> None:
            with lock:
                order.append(i)

        threads.append(run(work))
        wait_for(lambda: len(observer.list("lock/herd")) == i + 2, 10, f"waiter {i} queued")  # noqa: B023
    holder.release()
    for thread in threads:
        thread.join(timeout=30)
    assert order == list(range(10)), "waiters are served in arrival order"
    counts = wakeups(caplog)
    assert len(counts) == 10 and set(counts.values()) == {1}, f"each waiter must wake exactly once: {counts}"


def test_a_holder_whose_lease_is_lost_stops_holding_before_the_next_holder_gets_it(
    open_store: Callable[[], coord.Store],
) -> None:
    # FaultyStore ignores its inner store's prefix, so every participant uses one, under a name of its own.
    name = f"l-{uuid.uuid4().hex[:8]}"
    frozen = FaultyStore(open_store())
    lock = coord.Lock(name, store=frozen, ttl=TTL)
    lock.acquire()
    callbacks: list[coord.Lock] = []
    lock.on_lost(callbacks.append)
    # As a program would on losing: give up. (On ZooKeeper the lease is a session that kazoo keeps
    # pinging, so freezing the keepalives below does not end it: only this release frees the key.)
    lock.on_lost(lambda lost: lost.release())
    successor = coord.Lock(name, store=FaultyStore(open_store()), ttl=TTL)
    seen: dict[str, bool] = {}

    def take() -> None:
        successor.acquire(timeout=TTL + 10)
        seen["old_holding"] = lock.holding

    thread = run(take)
    assert lock.lease is not None
    frozen.freeze(lock.lease)
    thread.join(timeout=TTL + 12)
    assert successor.holding
    assert seen == {"old_holding": False}
    assert lock.lost.wait(1.0)
    wait_for(lambda: callbacks[:1] == [lock], 1.0, "the on_lost callback ran")
    assert successor.token > lock.token
    successor.release()


# -- Semaphore, one process, every backend --------------------------------------------------


def test_semaphore_admits_at_most_limit_holders(open_store: Callable[[], coord.Store]) -> None:
    active: list[int] = []
    peak: list[int] = []
    guard = threading.Lock()

    def work() -> None:
        semaphore = coord.Semaphore("pool", 2, store=open_store(), ttl=TTL)
        for _ in range(3):
            with semaphore:
                with guard:
                    active.append(1)
                    peak.append(len(active))
                time.sleep(0.02)
                with guard:
                    active.pop()

    for thread in [run(work) for _ in range(5)]:
        thread.join(timeout=60)
    assert len(peak) == 15
    assert max(peak) <= 2  # (that two can hold at once is checked by the tests below)


def test_semaphore_wakes_the_first_waiter_whichever_holder_leaves(open_store: Callable[[], coord.Store]) -> None:
    observer = open_store()
    a, b, c, d = (coord.Semaphore("s", 2, store=open_store(), ttl=TTL) for _ in range(4))
    assert a.acquire(timeout=5) and b.acquire(timeout=5)
    acquired: queue.Queue[str] = queue.Queue()

    def acquire(semaphore: coord.Semaphore, name: str) -> None:
        if semaphore.acquire(timeout=30):
            acquired.put(name)

    run(acquire, c, "c")
    wait_for(lambda: len(observer.list("semaphore/s")) == 3, 10, "c queued")
    run(acquire, d, "d")
    wait_for(lambda: len(observer.list("semaphore/s")) == 4, 10, "d queued")
    b.release()  # not the oldest holder: the first waiter must still wake
    assert acquired.get(timeout=5) == "c"
    assert acquired.empty()
    a.release()  # d has moved up to first waiter meanwhile
    assert acquired.get(timeout=5) == "d"
    assert a.token < b.token < c.token < d.token
    c.release()
    d.release()


def test_a_contender_that_moves_up_wakes_the_successor_watching_it(open_store: Callable[[], coord.Store]) -> None:
    """The race the touch is for: S lists while W still waits, then W finds itself holding."""
    # FaultyStore ignores its inner store's prefix, so every participant uses one, under a name of its own.
    name = f"s-{uuid.uuid4().hex[:8]}"
    observer = FaultyStore(open_store())
    a, b = (coord.Semaphore(name, 2, store=observer, ttl=TTL) for _ in range(2))
    assert a.acquire(timeout=5) and b.acquire(timeout=5)
    slow = FaultyStore(open_store())
    slow.inject("delay", op="list", delay=2.0)  # W's first look at the queue comes late
    w = coord.Semaphore(name, 2, store=slow, ttl=TTL)
    s = coord.Semaphore(name, 2, store=FaultyStore(open_store()), ttl=TTL)
    acquired: queue.Queue[str] = queue.Queue()

    def acquire(semaphore: coord.Semaphore, name: str) -> None:
        if semaphore.acquire(timeout=30):
            acquired.put(name)

    run(acquire, w, "w")
    wait_for(lambda: len(observer.list(f"semaphore/{name}")) == 3, 10, "W queued")
    run(acquire, s, "s")
    wait_for(lambda: len(observer.list(f"semaphore/{name}")) == 4, 10, "S queued")
    time.sleep(0.3)  # S lists: W is the first waiter, S watches W
    a.release()  # ... and only then does W look: it holds at once
    assert acquired.get(timeout=10) == "w"
    b.release()
    assert acquired.get(timeout=5) == "s", "S must move up to first waiter, and get the slot B freed"
    w.release()
    s.release()


def test_semaphore_waiters_wake_at_most_twice(
    open_store: Callable[[], coord.Store], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="coord.recipes")
    observer = open_store()
    holders = [coord.Semaphore("herd", 2, store=observer, ttl=TTL) for _ in range(2)]
    for holder in holders:
        holder.acquire()
    threads = []
    for i in range(10):
        semaphore = coord.Semaphore("herd", 2, store=open_store(), ttl=TTL)
        threads.append(run(lambda semaphore: semaphore.acquire() and semaphore.release(), semaphore))
        wait_for(lambda: len(observer.list("semaphore/herd")) == i + 3, 10, f"waiter {i} queued")  # noqa: B023
    for holder in holders:
        holder.release()
    for thread in threads:
        thread.join(timeout=30)
    counts = wakeups(caplog)
    assert len(counts) == 10
    assert max(counts.values()) <= 2, f"a release must wake the first waiter and at most one more: {counts}"


def test_semaphore_rejects_a_bad_limit() -> None:
    for limit in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            coord.Semaphore("s", limit, store=coord.connect("memory://"))  # type: ignore[arg-type]


# -- several processes: sqlite and the servers --------------------------------------------


def test_a_counter_incremented_under_the_lock_by_several_processes_loses_no_update(
    process_url: str, children: Children
) -> None:
    workers = [children.spawn("lock-counter", process_url, "count", TTL, 15) for _ in range(4)]
    tokens: list[int] = []
    for worker in workers:
        tokens += map(int, worker.expect("DONE", 120)[1].split(","))
        assert worker.wait(10) == 0
    with coord.connect(process_url) as store:
        assert store.get("counter/count").value == b"60"
    assert len(set(tokens)) == 60, "every holding has a token of its own"


def test_a_killed_holders_lock_passes_on_within_the_ttl(process_url: str, children: Children) -> None:
    holder = children.spawn("hold", process_url, "l", TTL)
    holder.expect("HOLDING", 30)
    with coord.connect(process_url) as store:
        lock = coord.Lock("l", store=store, ttl=TTL)
        assert not lock.acquire(blocking=False)
        killed_at = holder.kill()
        assert lock.acquire(timeout=KILL_BOUND + 5)
        assert time.monotonic() - killed_at < KILL_BOUND
        lock.release()


def test_a_released_lock_passes_on_promptly(process_url: str, children: Children) -> None:
    holder = children.spawn("hold", process_url, "l", TTL)
    token = int(holder.expect("HOLDING", 30)[1])
    with coord.connect(process_url) as store:
        lock = coord.Lock("l", store=store, ttl=TTL)
        acquired: queue.Queue[float] = queue.Queue()

        def acquire() -> None:
            if lock.acquire(timeout=30):
                acquired.put(time.monotonic())

        run(acquire)
        wait_for(lambda: len(store.list("lock/l")) == 2, 10, "the waiter queued")
        holder.signal(signal.SIGTERM)
        released_at = float(holder.expect("RELEASED", 10)[2])
        assert acquired.get(timeout=10) - released_at < 2.0
        assert lock.token > token
        lock.release()


def test_a_holder_paused_past_its_ttl_finds_lost_set_on_resuming(process_url: str, children: Children) -> None:
    holder = children.spawn("hold", process_url, "l", TTL)
    token = int(holder.expect("HOLDING", 30)[1])
    with coord.connect(process_url) as store:
        lock = coord.Lock("l", store=store, ttl=TTL)
        holder.signal(signal.SIGSTOP)
        assert lock.acquire(timeout=KILL_BOUND + 5), "the paused holder's lease must expire"
        holder.signal(signal.SIGCONT)
        words = holder.expect("LOST", 10)
        assert int(words[1]) == token
        assert words[3] == "False", "a resumed holder must not believe it holds"
        assert lock.token > token, "fencing tokens strictly increase"
        lock.release()
