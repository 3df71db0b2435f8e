"""Election: in one process on every backend, and across processes that are killed, paused and resumed."""

from __future__ import annotations

import queue
import signal
import time
import uuid
from collections.abc import Callable

import pytest

import coord
from coord.testing import FaultyStore
from tests.support import Child, Children, first, run, wait_for

TTL = 2.0  # etcd's minimum lease; short enough for a fast suite
# Generous bounds for a noisy 2-core machine; the precise numbers belong in benchmarks/failover.py.
KILL_BOUND = TTL + 1.0 + 1.0
RESIGN_BOUND = 2.0


# -- one process, every backend ------------------------------------------------------


def test_a_lone_candidate_leads_and_leader_reports_its_value(store: coord.Store) -> None:
    election = coord.Election("svc", store=store, ttl=TTL, value=b"me")
    assert election.leader() is None
    with election.campaign(timeout=10) as leadership:
        assert leadership.is_leader
        assert leadership.value == b"me"
        assert election.leader() == b"me"
    assert not leadership.is_leader
    assert not leadership.lost.is_set(), "resigning is not losing"
    assert election.leader() is None


def test_candidates_lead_in_campaign_order_with_increasing_tokens(open_store: Callable[[], coord.Store]) -> None:
    first = coord.Election("svc", store=open_store(), ttl=TTL, value=b"0").campaign(timeout=10)
    elected: queue.Queue[tuple[int, coord.Leadership]] = queue.Queue()
    store = open_store()
    observer = coord.Election("svc", store=store)
    for i in (1, 2, 3):
        election = coord.Election("svc", store=open_store(), ttl=TTL, value=str(i).encode())
        run(lambda election, i: elected.put((i, election.campaign(timeout=30))), election, i)
        # Queue them one after another, so that campaign order is known.
        wait_for(lambda: len(store.list("election/svc")) == i + 1, 10, f"candidate {i} queued")  # noqa: B023
    tokens = [first.token]
    first.resign()
    for expected in (1, 2, 3):
        i, leadership = elected.get(timeout=10)
        assert i == expected
        assert observer.leader() == str(i).encode()
        tokens.append(leadership.token)
        leadership.resign()
    assert tokens == sorted(set(tokens)), "fencing tokens must strictly increase"


def test_resign_elects_the_next_candidate_promptly(open_store: Callable[[], coord.Store]) -> None:
    leader = coord.Election("svc", store=open_store(), ttl=TTL).campaign(timeout=10)
    elected: queue.Queue[float] = queue.Queue()
    successor = coord.Election("svc", store=open_store(), ttl=TTL)

    def campaign() -> None:
        successor.campaign(timeout=30)
        elected.put(time.monotonic())

    run(campaign)
    store = open_store()
    wait_for(lambda: len(store.list("election/svc")) == 2, 10, "the successor queued")
    resigned = time.monotonic()
    leader.resign()
    assert elected.get(timeout=10) - resigned < RESIGN_BOUND


def test_campaign_times_out_and_leaves_no_ticket(open_store: Callable[[], coord.Store]) -> None:
    store = open_store()
    leader = coord.Election("svc", store=store, ttl=TTL).campaign(timeout=10)
    other = open_store()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        coord.Election("svc", store=other, ttl=TTL).campaign(timeout=0.5)
    assert 0.4 < time.monotonic() - started < 5
    assert [pair.created for pair in store.list("election/svc")] == [leader.token]


def test_observe_reports_each_new_leader_and_proclaimed_value(open_store: Callable[[], coord.Store]) -> None:
    observer = coord.Election("svc", store=open_store())
    values: queue.Queue[bytes] = queue.Queue()
    observed = observer.observe()

    def follow() -> None:
        for value in observed:
            values.put(value)

    run(follow)
    first = coord.Election("svc", store=open_store(), ttl=TTL, value=b"a").campaign(timeout=10)
    assert values.get(timeout=10) == b"a"
    first.proclaim(b"a2")
    assert values.get(timeout=10) == b"a2"
    second = coord.Election("svc", store=open_store(), ttl=TTL, value=b"b")
    elected: queue.Queue[coord.Leadership] = queue.Queue()
    run(lambda: elected.put(second.campaign(timeout=30)))
    time.sleep(0.3)
    assert values.empty(), "a new candidate is not a new leader"
    first.resign()
    assert values.get(timeout=10) == b"b"
    elected.get(timeout=10).resign()


@pytest.fixture
def faulty(open_store: Callable[[], coord.Store]) -> Callable[[], FaultyStore]:
    """FaultyStores on the backend under test, each another client.

    FaultyStore does not apply its inner store's ``prefix`` (keys land at the
    root of the server), so every participant of a fault test goes through
    one, and the tests use names of their own.
    """
    return lambda: FaultyStore(open_store())


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_a_leader_whose_lease_is_lost_stops_leading_before_anyone_else_leads(
    faulty: Callable[[], FaultyStore],
) -> None:
    name = unique("svc")
    frozen = faulty()
    leadership = coord.Election(name, store=frozen, ttl=TTL).campaign(timeout=10)
    callbacks: list[coord.Leadership] = []
    leadership.on_lost(callbacks.append)
    # As a program would on losing: step down. (On ZooKeeper the lease is a session that kazoo keeps
    # pinging, so freezing the keepalives below does not end it: only this resign frees the key.)
    leadership.on_lost(lambda lost: lost.resign())
    seen: dict[str, object] = {}

    def rival() -> None:
        successor = coord.Election(name, store=faulty(), ttl=TTL).campaign(timeout=30)
        # The moment a successor leads, the old leader must already know it does not.
        seen.update(old_is_leader=leadership.is_leader, token=successor.token)

    thread = run(rival)
    frozen.freeze(leadership.lease)  # its keepalives stop, as if its process were frozen
    thread.join(timeout=TTL + 10)
    assert seen["old_is_leader"] is False
    # ``lost`` is set by the lease keeper's thread at the lease's deadline: within moments.
    assert leadership.lost.wait(1.0)
    assert isinstance(seen["token"], int) and seen["token"] > leadership.token
    wait_for(lambda: callbacks == [leadership], 1.0, "the on_lost callback ran")
    with pytest.raises(coord.LeaseExpired):
        leadership.proclaim(b"still me?")


def test_a_lost_create_reply_leaves_no_orphaned_ticket(faulty: Callable[[], FaultyStore]) -> None:
    name = unique("svc")
    store = faulty()
    store.inject("lose_reply", op="transaction")  # the create lands, but the candidate hears an error
    leadership = coord.Election(name, store=store, ttl=TTL).campaign(timeout=10)
    assert store.injected == [("transaction", "lose_reply")]
    assert [pair.created for pair in store.list(f"election/{name}")] == [leadership.token]
    leadership.resign()
    assert store.list(f"election/{name}") == []


def test_a_waiter_whose_lease_is_lost_queues_again(faulty: Callable[[], FaultyStore]) -> None:
    name = unique("svc")
    prefix = f"election/{name}"
    observer = faulty()
    leader = coord.Election(name, store=observer, ttl=TTL).campaign(timeout=10)
    store = faulty()
    store.inject("fail", op="keepalive", count=1000)  # the waiter's lease cannot be renewed
    elected: queue.Queue[coord.Leadership] = queue.Queue()
    waiter = coord.Election(name, store=store, ttl=TTL)
    run(lambda: elected.put(waiter.campaign(timeout=60)))
    wait_for(lambda: len(observer.list(prefix)) == 2, 10, "the waiter queued")
    (first_ticket,) = [pair.key for pair in observer.list(prefix) if pair.created != leader.token]
    wait_for(lambda: first_ticket not in {pair.key for pair in observer.list(prefix)}, TTL + 10, "the ticket expired")
    store.clear()
    wait_for(lambda: len(observer.list(prefix)) == 2, TTL + 10, "the waiter queued again")
    assert first_ticket not in {pair.key for pair in observer.list(prefix)}
    leader.resign()
    assert elected.get(timeout=TTL + 10).is_leader


# -- several processes: sqlite and the servers --------------------------------------------


def test_failover_across_processes_has_at_most_one_leader_at_a_time(process_url: str, children: Children) -> None:
    """SIGKILL, resign and SIGSTOP the leader in turn; check who believed it led, and when."""
    candidates = [children.spawn("campaign", process_url, "svc", TTL, "--alive") for _ in range(4)]
    for child in candidates:
        child.expect("READY", 30)
    leaders: list[tuple[int, Child]] = []  # (token, child) in the order they led

    def next_leader(timeout: float) -> tuple[float, Child]:
        child, words = first([child for child in candidates if child not in {c for _, c in leaders}], "LEADER", timeout)
        leaders.append((int(words[1]), child))
        return float(words[2]), child

    _, leader = next_leader(30)
    # 1. SIGKILL: a successor within ttl + expiry.
    killed_at = leader.kill()
    elected_at, leader = next_leader(KILL_BOUND + 5)
    assert elected_at - killed_at < KILL_BOUND
    # 2. Resign: a successor at once.
    leader.signal(signal.SIGTERM)
    resigned_at = float(leader.expect("RESIGNED", 10)[2])
    elected_at, leader = next_leader(RESIGN_BOUND + 5)
    assert elected_at - resigned_at < RESIGN_BOUND
    # 3. SIGSTOP past the ttl: the last candidate leads; the frozen one, resumed, knows it lost.
    leader.signal(signal.SIGSTOP)
    stopped = leader
    _, leader = next_leader(KILL_BOUND + 5)
    stopped.signal(signal.SIGCONT)
    lost = stopped.expect("LOST", 10)
    assert lost[3] == "True", "a resumed leader must find `lost` set"
    tokens = [token for token, _ in leaders]
    assert tokens == sorted(set(tokens)), f"fencing tokens must strictly increase: {tokens}"
    leader.signal(signal.SIGTERM)
    leader.expect("RESIGNED", 10)
    # At most one leader at any moment: the ALIVE stamps of each leader form one block in time.
    stamps = sorted(
        (float(line.split()[1]), i)
        for i, child in enumerate(candidates)
        for line in child.output
        if line.startswith("ALIVE")
    )
    blocks = [i for n, (_, i) in enumerate(stamps) if n == 0 or stamps[n - 1][1] != i]
    in_order = [candidates.index(child) for _, child in leaders]
    # (A leader told to resign at once may resign before its first stamp: it then has no block.)
    assert blocks == [i for i in in_order if i in blocks], f"leaderships overlapped: {blocks}, led: {in_order}"
    assert len(blocks) >= 3


def test_proclaim_survives_a_lost_reply() -> None:
    """A proclaim applied with its reply lost must not make the next proclaim think leadership is gone."""
    store = FaultyStore(coord.connect("memory://"))
    leadership = coord.Election("lost-reply", store=store, ttl=5).campaign(timeout=5)
    store.inject("lose_reply", op="atomic_put")
    with pytest.raises(coord.StoreUnavailable):
        leadership.proclaim(b"first")
    leadership.proclaim(b"second")
    assert leadership.is_leader
    assert coord.Election("lost-reply", store=store).leader() == b"second"
    leadership.resign()
    store.close()
