"""Guarantees that must survive ordinary events (issue: clock steps, suspend, close, fork, slow callbacks).

Each test names the guarantee and the event; most fail on the code before the fix.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import coord
from coord.testing import FaultyStore
from tests.support import Child, Children, wait_for

TTL = 3.0


@pytest.fixture
def children() -> Iterator[Children]:
    made = Children()
    yield made
    made.close()


# -- the client's clock ---------------------------------------------------------------------


def test_the_system_clock_counts_suspended_time() -> None:
    """Lease deadlines are on CLOCK_BOOTTIME: a host resumed from a suspend finds its leases past their time."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        pytest.fail("this test runs on Linux, which has CLOCK_BOOTTIME")
    before = time.clock_gettime(boottime)
    now = coord.SystemClock().now()
    after = time.clock_gettime(boottime)
    assert before <= now <= after


def test_lost_is_set_no_later_than_alive_turns_false() -> None:
    """A holder reading ``lost`` right after a pause sees it set, even before the keeper's timer has run."""
    clock = coord.ManualClock()
    store = FaultyStore(coord.connect("memory://", clock=clock))
    lease = store.lease(TTL)
    store.freeze()  # the whole process stops: its timers (the deadline watch included) wait for the thaw
    clock.advance(TTL + 0.1)
    assert not lease.alive
    assert lease.lost.is_set(), "lost must never lag behind alive"
    store.thaw()
    store.close()


def test_a_slow_on_lost_callback_delays_no_renewal() -> None:
    """Callbacks run on a thread of their own: one that takes 3 s must not let the store's other leases expire."""
    store = FaultyStore(coord.connect("memory://"))
    doomed, kept = store.lease(1.0), store.lease(1.0)
    started = threading.Event()

    def slow(lease: coord.Lease) -> None:
        started.set()
        time.sleep(3.0)

    doomed.on_lost(slow)
    store.expire(doomed)  # its next renewal learns it is gone, and its callback starts
    assert started.wait(5.0)
    time.sleep(2.0)  # two ttls of the other lease, while the callback still sleeps
    assert kept.alive, "a slow callback stopped the renewals"
    store.close()


def test_closed_memory_stores_leave_no_thread_behind() -> None:
    before = threading.active_count()
    for _ in range(50):
        store = coord.connect("memory://")
        store.put("k", b"", ttl=60)
        store.lease(60)
        store.close()
    wait_for(lambda: threading.active_count() <= before + 2, 10, "the closed stores' threads ended")


# -- fork ------------------------------------------------------------------------------------

FORK = """
import os, sys, coord
store = coord.connect(sys.argv[1])
lock = coord.Lock("forked", store=store, ttl=3)
assert lock.acquire(timeout=10)
pid = os.fork()
if pid == 0:
    try:
        store.put("from-child", b"")
        os._exit(3)
    except coord.StoreClosed as exc:
        ok = "fork" in str(exc) and not lock.holding and store.closed
        os._exit(0 if ok else 4)
_, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status), flush=True)
import time; time.sleep(4)  # past the ttl: the parent's lease is still renewed
print("PARENT", lock.holding, store.exists("from-child"), flush=True)
"""


def test_a_store_opened_before_fork_refuses_the_child_and_keeps_serving_the_parent(process_url: str) -> None:
    child = Child.from_code(FORK, process_url)
    try:
        assert child.expect("CHILD", 30) == ["CHILD", "0"], child.describe()
        assert child.expect("PARENT", 30) == ["PARENT", "True", "False"], child.describe()
    finally:
        child.close()


# -- a clean exit is not a crash --------------------------------------------------------------

LEADER = """
import signal, sys, time, coord
mode = sys.argv[2]
if mode == "own-handler":
    signal.signal(signal.SIGTERM, lambda *_: (print("HANDLED", flush=True), sys.exit(7)))
store = coord.connect(sys.argv[1], release_on_exit=(mode != "no-release"))
leadership = coord.Election("clean", store=store, ttl=30).campaign(timeout=20)
print("LEADER", flush=True)
if mode == "exit":
    sys.stdin.readline()
    sys.exit(0)
time.sleep(60)
"""


def start_leader(process_url: str, mode: str) -> tuple[Child, coord.Store, coord.Watch]:
    observer = coord.connect(process_url)
    child = Child.from_code(LEADER, process_url, mode)
    child.expect("LEADER", 30)
    (ticket,) = observer.list("election/clean")
    watch = observer.watch(ticket.key)
    watch.get(timeout=5)  # the ticket's current state
    return child, observer, watch


def gone_within(watch: coord.Watch, seconds: float) -> float | None:
    start = time.monotonic()
    event = watch.get(timeout=seconds)
    return time.monotonic() - start if event is not None and event.type == "delete" else None


@pytest.mark.parametrize("mode", ["exit", "sigterm"])
def test_a_leader_that_exits_cleanly_hands_over_at_once(process_url: str, mode: str) -> None:
    """Normal exit or SIGTERM (no handler of the application's): the session is revoked, not left to expire."""
    child, observer, watch = start_leader(process_url, mode)
    try:
        if mode == "sigterm":
            child.signal(signal.SIGTERM)
        else:
            child.send("exit")
        took = gone_within(watch, 10.0)  # the ttl is 30 s
        assert took is not None, f"the leader's ticket outlived its {mode}: {child.describe()}"
        status = child.wait(10)
        assert status == (0 if mode == "exit" else -signal.SIGTERM), "the process must end as it would have"
    finally:
        watch.close()
        child.close()
        observer.close()


def test_an_applications_own_sigterm_handler_is_never_replaced(process_url: str) -> None:
    child, observer, watch = start_leader(process_url, "own-handler")
    try:
        child.signal(signal.SIGTERM)
        child.expect("HANDLED", 10)
        assert child.wait(10) == 7
        assert gone_within(watch, 10.0) is not None, "sys.exit in the handler is a normal exit: released"
    finally:
        watch.close()
        child.close()
        observer.close()


def test_release_on_exit_can_be_turned_off(process_url: str) -> None:
    child, observer, watch = start_leader(process_url, "no-release")
    try:
        child.signal(signal.SIGTERM)
        assert child.wait(10) == -signal.SIGTERM
        took = gone_within(watch, 2.0)
        if process_url.startswith("sqlite:"):  # the kernel tells at once that a session's owner died (flock)
            assert took is not None, "on sqlite a process that ends releases its sessions at once, whatever it says"
        else:
            assert took is None, "without release_on_exit the session waits for its ttl"
    finally:
        watch.close()
        child.close()
        observer.close()


# -- a key deleted behind its holder's back ----------------------------------------------------


def test_a_holder_whose_ticket_is_deleted_behind_its_back_stops_holding(
    open_store: Callable[[], coord.Store],
) -> None:
    """An operator's delete_tree must not leave two holders whose leases are both alive."""
    store, operator = open_store(), open_store()
    lock = coord.Lock("l", store=store, ttl=TTL)
    assert lock.acquire(timeout=10)
    told: list[coord.Lock] = []
    lock.on_lost(told.append)
    operator.delete_tree("lock")
    wait_for(lambda: not lock.holding, TTL + 3, "the holder learned that its ticket is gone")
    assert lock.lost.is_set() and lock.lease is not None and lock.lease.alive, "its session lives on"
    wait_for(lambda: told == [lock], 5, "on_lost was called")
    assert coord.Lock("l", store=operator, ttl=TTL).acquire(timeout=10)
    lock.release()  # allowed after the loss


def test_a_registration_deleted_behind_its_back_registers_again(open_store: Callable[[], coord.Store]) -> None:
    store, operator = open_store(), open_store()
    registration = coord.register("svc", address="a:1", ttl=TTL, store=store)
    first = registration.token
    operator.delete_tree("services")
    wait_for(lambda: coord.discover("svc", store=operator) != [], TTL + 3, "the instance registered again")
    assert registration.registered and registration.token > first
    registration.close()
