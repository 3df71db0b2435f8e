"""etcd v3 backend: what the shared suite cannot reach from the Store API alone.

Compaction (a watch that must re-sync rather than skip), leases etcd dropped
behind the Store's back, ttl rounding, and endpoint failover. Runs against
$COORD_TEST_ETCD; connections are cut through a proxy, never by stopping the
shared server.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import grpc
import pytest
from pyetcd import etcdrpc

import coord
from coord.backends.etcd import EtcdStore
from coord.backends.etcd._expiry import FINE, Expiries
from tests.support import Proxy, drain, summary, url_of

URL = url_of("etcd")
pytestmark = pytest.mark.server("etcd")


@pytest.fixture
def server() -> tuple[str, int]:
    parts = urlsplit(URL)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


@pytest.fixture
def tag() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def direct(server: tuple[str, int], tag: str) -> Iterator[EtcdStore]:
    """A store that talks to the server directly, for writing behind a proxied store's back."""
    store = coord.connect(f"etcd://{server[0]}:{server[1]}?prefix={tag}")
    assert isinstance(store, EtcdStore)
    yield store
    store.close()


@pytest.fixture
def proxy(server: tuple[str, int]) -> Iterator[Proxy]:
    with Proxy(server) as made:
        yield made


def test_a_running_watch_resyncs_when_its_history_was_compacted(proxy: Proxy, direct: EtcdStore, tag: str) -> None:
    with coord.connect(f"etcd://127.0.0.1:{proxy.port}?prefix={tag}") as watcher:
        watch = watcher.watch_tree("c")
        direct.put("c/a", b"1")
        direct.put("c/b", b"1")
        assert summary(drain(watch, 2)) == [("put", "c/a", b"1"), ("put", "c/b", b"1")]
        proxy.refuse()
        proxy.cut()
        direct.put("c/a", b"2")
        direct.delete("c/b")
        direct.put("c/c", b"1")
        direct._etcd.client.compact(direct.put("c/d", b"1").revision)
        time.sleep(0.5)
        proxy.accept()
        # The keys written since, in revision order, then the deletes the compaction hid.
        events = drain(watch, 4, timeout=30)
        assert summary(events) == [
            ("put", "c/a", b"2"),
            ("put", "c/c", b"1"),
            ("put", "c/d", b"1"),
            ("delete", "c/b", None),
        ]
        assert watch.get(timeout=0.5) is None, "an event was delivered twice"
        direct.put("c/e", b"live")
        assert summary(drain(watch, 1)) == [("put", "c/e", b"live")]
        watch.close()


def test_a_single_key_watch_resyncs_a_delete_that_compaction_hid(proxy: Proxy, direct: EtcdStore, tag: str) -> None:
    lease = direct.lease(10)
    direct.put("one", b"1", lease=lease)
    with coord.connect(f"etcd://127.0.0.1:{proxy.port}?prefix={tag}") as watcher, watcher.watch("one") as watch:
        assert summary(drain(watch, 1)) == [("put", "one", b"1")]
        proxy.refuse()
        proxy.cut()
        direct.delete("one")
        direct._etcd.client.compact(direct.put("other", b"").revision)
        time.sleep(0.5)
        proxy.accept()
        assert summary(drain(watch, 1, timeout=30)) == [("delete", "one", None)]
        assert watch.get(timeout=0.5) is None
        direct.put("one", b"2")
        assert summary(drain(watch, 1)) == [("put", "one", b"2")]


def test_a_watch_from_a_compacted_revision_starts_from_the_current_state(direct: EtcdStore) -> None:
    old = direct.put("h/a", b"1")
    direct.put("h/b", b"1")
    direct.put("h/a", b"2")
    direct._etcd.client.compact(direct.put("h/c", b"1").revision)
    with direct.watch_tree("h", start_revision=old.revision) as watch:
        assert summary(drain(watch, 3)) == [("put", "h/a", b"2"), ("put", "h/b", b"1"), ("put", "h/c", b"1")]
        assert watch.get(timeout=0.3) is None
        direct.delete("h/b")
        assert summary(drain(watch, 1)) == [("delete", "h/b", None)]


def test_a_lease_etcd_dropped_behind_the_stores_back(direct: EtcdStore) -> None:
    lease = direct.lease(5)
    direct.put("l", b"", lease=lease)
    direct._etcd.client.revoke_lease(lease.id)  # as if it expired while its holder was cut off
    with pytest.raises(coord.LeaseExpired) as info:
        direct.put("l", b"", lease=lease)
    assert info.value.key == "l" and info.value.backend == "etcd"
    with pytest.raises(coord.LeaseExpired):
        direct.atomic_put("l2", b"", None, lease=lease)
    # The next renewal hears that etcd no longer has it.
    assert lease.lost.wait(lease.ttl)
    assert not direct.exists("l")


def test_ttls_are_rounded_up_to_what_etcd_grants(direct: EtcdStore) -> None:
    assert direct.lease(0.2).ttl == 2.0  # whole seconds, and the test server's minimum
    assert direct.lease(2.5).ttl == 3.0
    short = direct.put("t", b"", ttl=0.2)
    assert short.lease is not None
    time.sleep(0.5)
    assert direct.exists("t"), "a ttl is rounded up, never down"


def test_a_dead_endpoint_in_the_url_is_passed_over(server: tuple[str, int], tag: str) -> None:
    with Proxy(server) as dead:
        dead.refuse()
        # pyetcd starts on a random endpoint: open a few stores so the dead one comes first at least once.
        for _ in range(6):
            with coord.connect(f"etcd://127.0.0.1:{dead.port},{server[0]}:{server[1]}?prefix={tag}") as store:
                for number in range(5):
                    store.put("k", str(number).encode())
                assert store.get("k").value == b"4"


def test_the_store_moves_to_the_next_endpoint_when_its_own_goes_away(server: tuple[str, int], tag: str) -> None:
    with (
        Proxy(server) as one,
        Proxy(server) as two,
        coord.connect(f"etcd://127.0.0.1:{one.port},127.0.0.1:{two.port}?prefix={tag}") as store,
    ):
        assert isinstance(store, EtcdStore)
        watch = store.watch_tree("f")
        store.put("f/1", b"1")
        assert summary(drain(watch, 1)) == [("put", "f/1", b"1")]
        in_use = one if store._etcd.client.endpoint_in_use.netloc.endswith(f":{one.port}") else two
        in_use.refuse()
        in_use.cut()
        for number in range(2, 6):  # no error reaches the caller: only latency
            store.put(f"f/{number}", str(number).encode())
        assert [pair.key for pair in store.list("f")] == [f"f/{n}" for n in range(1, 6)]
        events = drain(watch, 4, timeout=30)
        assert summary(events) == [("put", f"f/{n}", str(n).encode()) for n in range(2, 6)]
        assert watch.get(timeout=0.5) is None, "an event was delivered twice"
        watch.close()


def test_a_watch_that_cannot_reconnect_ends_with_store_unavailable(proxy: Proxy, tag: str) -> None:
    with coord.connect(f"etcd://127.0.0.1:{proxy.port}?prefix={tag}&watch_retry=1") as store:
        watch = store.watch("w")
        proxy.refuse()
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(coord.StoreUnavailable) as info:
            watch.get(timeout=30)
        assert time.monotonic() - started < 10
        assert info.value.backend == "etcd" and info.value.key == "w"
        assert watch.closed


# -- transactions ------------------------------------------------------------------------


class _Unavailable(grpc.RpcError):
    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "injected: the reply was lost"


class _LoseOneReply:
    """The store's KV stub, except that its next Txn gets UNAVAILABLE: applied first if ``apply``, as a lost reply.

    The store drops the stub after that failure (it passes the endpoint over),
    so only one request is affected. ``after`` runs before the failure is
    raised, with etcd's answer if the Txn was applied.
    """

    def __init__(self, store: EtcdStore, *, apply: bool = True, after: Callable[[Any], object] | None = None) -> None:
        self._stub = store._etcd.kv
        self._apply = apply
        self._after = after
        self.lost = 0
        store._etcd.client._stubs["kvstub"] = self

    def Txn(self, request: Any, timeout: float) -> Any:
        self.lost += 1
        response = self._stub.Txn(request, timeout) if self._apply else None
        if self._after is not None:
            self._after(response)
        raise _Unavailable()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)


def test_a_transaction_whose_reply_was_lost_recognises_its_own_commit(direct: EtcdStore) -> None:
    session = direct.session(10)
    other = direct.put("q/a", b"")
    with direct.watch_tree("q") as watch:
        drain(watch, 1)
        lost = _LoseOneReply(direct)
        txn = direct.transaction()
        txn.list("q")  # before the put: the state just before the commit
        txn.put("q/me", b"ticket", previous=None, lease=session)
        txn.check("q/a", other)
        txn.list("q")
        before, mine, _, after = txn.commit()  # not KeyExists: the retry sees its own ticket
        assert lost.lost == 1
        assert [p.key for p in before] == ["q/a"] and [p.key for p in after] == ["q/a", "q/me"]
        assert mine == direct.get("q/me") and mine.lease == session.id and mine.created == mine.revision
        assert summary(drain(watch, 1)) == [("put", "q/me", b"ticket")]
        assert watch.get(timeout=0.3) is None, "the transaction was applied twice"


def test_compare_and_swap_whose_reply_was_lost_succeeds(direct: EtcdStore) -> None:
    first = direct.put("k", b"1")
    _LoseOneReply(direct)
    second = direct.atomic_put("k", b"2", first)
    assert second == direct.get("k") and second.created == first.created
    _LoseOneReply(direct)
    direct.atomic_delete("k", second)
    assert not direct.exists("k")


def test_a_retried_transaction_that_did_not_commit_reports_the_conflict(direct: EtcdStore) -> None:
    # The first attempt never reached etcd; meanwhile another client took the key.
    _LoseOneReply(direct, apply=False, after=lambda _: direct.put("k", b"theirs"))
    with pytest.raises(coord.KeyExists) as info:
        direct.transaction().put("k", b"mine", previous=None).commit()
    assert info.value.key == "k"
    assert direct.get("k").value == b"theirs"


def test_reads_after_a_lost_reply_when_etcd_compacted_the_state_before_it(direct: EtcdStore) -> None:
    direct.put("q/a", b"")

    def compact(response: Any) -> None:
        direct._etcd.client.compact(response.header.revision)

    _LoseOneReply(direct, after=compact)
    txn = direct.transaction()
    txn.put("q/me", b"", previous=None)
    txn.list("q")
    mine, listed = txn.commit()
    assert mine == direct.get("q/me") and [p.key for p in listed] == ["q/a", "q/me"]


def test_a_key_written_twice_in_one_transaction(direct: EtcdStore) -> None:
    # etcd refuses a Txn that writes one key twice: each key's last write goes, and the results are computed.
    old = direct.put("d/old", b"0")
    with direct.watch_tree("d") as watch:
        drain(watch, 1)
        txn = direct.transaction()
        txn.put("d/k", b"1", previous=None)
        txn.get("d/k")
        txn.put("d/k", b"2")
        txn.delete("d/old", previous=old)
        txn.list("d")
        txn.put("d/old", b"again")
        txn.delete("d/gone")
        txn.put("d/gone", b"")
        txn.delete("d/gone")
        first, got, second, deleted, listed, again, gone_before, _, gone = txn.commit()
        assert (first.value, got.value, second.value) == (b"1", b"1", b"2") and got == first
        assert second == direct.get("d/k") and first.revision == second.revision
        assert deleted is True and [p.key for p in listed] == ["d/k"]
        assert again == direct.get("d/old") and again.created == old.created  # etcd keeps a re-put key's created
        assert (gone_before, gone) == (False, True) and not direct.exists("d/gone")
        # One event per key: what etcd applied.
        assert sorted(summary(drain(watch, 2))) == [("put", "d/k", b"2"), ("put", "d/old", b"again")]
        assert watch.get(timeout=0.3) is None


def test_a_transaction_bound_to_a_lease_etcd_dropped_names_the_key(direct: EtcdStore) -> None:
    lease = direct.lease(5)
    direct._etcd.client.revoke_lease(lease.id)
    txn = direct.transaction()
    txn.put("a", b"")
    txn.put("b", b"", lease=lease)
    with pytest.raises(coord.LeaseExpired) as info:
        txn.commit()
    assert info.value.key == "b" and info.value.backend == "etcd"
    assert not direct.exists("a")


def test_a_transaction_too_large_for_etcd_is_refused_at_once(direct: EtcdStore) -> None:
    txn = direct.transaction()
    for n in range(3):
        txn.put(f"big/{n}", bytes(1024 * 1024))
    started = time.monotonic()
    with pytest.raises(coord.CoordError) as info:
        txn.commit()
    assert not isinstance(info.value, coord.StoreUnavailable) and time.monotonic() - started < 3
    assert direct.list("big") == []


def test_numbers_beyond_what_etcd_takes_give_coord_errors(direct: EtcdStore, tag: str) -> None:
    for ttl in (2**63, 1e300, 9_000_000_001):
        with pytest.raises(ValueError, match="at most"):
            direct.lease(ttl)
    pair = direct.put("k", b"")
    with pytest.raises(coord.KeyModified):
        direct.atomic_put("k", b"", coord.KVPair("k", b"", 2**70, pair.created, None))
    with direct.watch("k", start_revision=2**63) as watch:  # a revision etcd will not reach
        direct.put("k", b"1")
        assert watch.get(timeout=0.3) is None
    for option in ("timeout=inf", "timeout=nan", "timeout=0", "watch_retry=inf", "watch_retry=-1"):
        with pytest.raises(coord.ConfigurationError):
            coord.connect(f"{URL}{'&' if '?' in URL else '?'}{option}")
    with coord.connect(f"{URL}{'&' if '?' in URL else '?'}timeout=1e9&prefix={tag}") as patient:
        assert patient.exists("k")  # each attempt's gRPC deadline is capped: one of 10**9 s would wrap


# -- a watched key's lease, revoked once expired --------------------------------------------


class _LeaseServer:
    """etcd's lessor as LeaseTimeToLive shows it, on a ManualClock, with a round trip of ``rtt``.

    The lease is renewed at the times in ``renewals``; a revocation before its
    expiry fails the test: that would take a live holder's key away.
    """

    def __init__(self, clock: coord.ManualClock, ttl: int, renewals: list[float], rtt: float = 0.002) -> None:
        self.clock, self.ttl, self.rtt = clock, ttl, rtt
        self.expiry = clock.now() + ttl
        self.renewals = sorted(renewals)
        self.revoked_at: float | None = None
        self.probes = 0
        self.attempt_timeout = 1.0
        self.leases = self

    def _now(self) -> float:
        now = self.clock.now()
        while self.renewals and self.renewals[0] <= now:
            renewed = self.renewals.pop(0)
            if renewed < self.expiry:  # etcd cannot renew an expired lease
                self.expiry = renewed + self.ttl
        return now

    def call(self, request: Callable[[bool], Any], within: float | None = None) -> Any:
        self.clock.advance(self.rtt / 2)
        try:
            return request(False)
        finally:
            self.clock.advance(self.rtt / 2)

    def LeaseTimeToLive(self, request: Any, timeout: float) -> Any:
        self.probes += 1
        now = self._now()  # first: it applies the renewals due
        remaining = self.expiry - now
        if self.revoked_at is not None:
            return etcdrpc.LeaseTimeToLiveResponse(ID=request.ID, TTL=-1, grantedTTL=0)
        return etcdrpc.LeaseTimeToLiveResponse(ID=request.ID, TTL=int(remaining), grantedTTL=self.ttl)

    def LeaseRevoke(self, request: Any, timeout: float) -> Any:
        now = self._now()
        assert now >= self.expiry, f"revoked a live lease, {self.expiry - now:.3f}s before its expiry"
        self.revoked_at = now
        return etcdrpc.LeaseRevokeResponse()


def follow_until(server: _LeaseServer, clock: coord.ManualClock, seconds: float) -> Expiries:
    expiries = Expiries(server, clock, lambda lease: False)  # type: ignore[arg-type]
    expiries.follow(7)
    clock.advance(seconds)
    return expiries


@pytest.mark.parametrize("ttl", [3, 4, 10])
def test_a_lease_renewed_at_any_moment_is_never_revoked_and_an_expired_one_soon_is(ttl: int) -> None:
    rng = random.Random(ttl)
    for _ in range(200):
        clock = coord.ManualClock()
        start = clock.now()
        # A holder renewing at ttl/3 with jitter, then late renewals near the edge, then dead.
        renewals = [start + ttl / 3 * n + rng.uniform(-0.05, 0.05) for n in range(1, rng.randint(2, 9))]
        renewals += [renewals[-1] + rng.uniform(ttl - 1.5, ttl - 0.001) for _ in range(rng.randint(0, 1))]
        server = _LeaseServer(clock, ttl, renewals, rtt=rng.uniform(0.0005, 0.02))
        follow_until(server, clock, 12 * ttl)
        assert server.revoked_at is not None, "an expired lease was not revoked"
        # Found between two probes FINE apart, confirmed and revoked: a few round trips more.
        assert server.revoked_at - server.expiry <= FINE + 3 * server.rtt


def test_a_lease_of_the_minimum_ttl_is_left_to_etcd() -> None:
    clock = coord.ManualClock()
    server = _LeaseServer(clock, 2, [])
    follow_until(server, clock, 10)
    assert server.revoked_at is None and server.probes == 1


def test_a_followed_lease_costs_about_a_probe_per_ttl_while_renewed() -> None:
    clock = coord.ManualClock()
    start = clock.now()
    server = _LeaseServer(clock, 10, [start + 10 / 3 * n for n in range(1, 31)])
    follow_until(server, clock, 100)
    assert server.revoked_at is None and server.probes <= 20


def test_a_waiter_revokes_its_predecessors_lease_once_it_expired(direct: EtcdStore, tag: str) -> None:
    with coord.connect(f"{URL}{'&' if '?' in URL else '?'}prefix={tag}") as waiter:
        assert isinstance(waiter, EtcdStore)
        expiries: list[float] = []
        # Three leases, expiring 170 ms apart: etcd's 500 ms sweep may win a race now and then, not three times.
        for n in range(3):
            time.sleep(0.17 if n else 0)
            sent = time.monotonic()
            granted = direct._etcd.leases.LeaseGrant(etcdrpc.LeaseGrantRequest(TTL=3))
            direct._etcd.kv.Put(etcdrpc.PutRequest(key=f"{tag}/k{n}".encode(), lease=granted.ID))
            expiries.append(sent + 3)
        watches = [waiter.watch(f"k{n}") for n in range(3)]
        for n, watch in enumerate(watches):
            assert drain(watch, 1)[0].type == "put"
            event = watch.get(timeout=10)
            gone = time.monotonic()
            assert event is not None and event.type == "delete"
            assert gone >= expiries[n], "a key went before its lease's ttl"
            assert gone - expiries[n] < 2.0
            watch.close()
        assert waiter._watches_of._expiries.revoked >= 1


def test_a_watched_key_of_a_live_session_stays(direct: EtcdStore, tag: str) -> None:
    session = direct.session(3)
    direct.put("live", b"", lease=session)
    with coord.connect(f"{URL}{'&' if '?' in URL else '?'}prefix={tag}") as waiter, waiter.watch("live") as watch:
        assert drain(watch, 1)[0].type == "put"
        assert watch.get(timeout=7) is None
        assert session.alive and waiter._watches_of._expiries.revoked == 0


def test_a_watch_from_a_past_revision_hears_its_unchanged_key_at_once(
    direct: EtcdStore, server: tuple[str, int], tag: str
) -> None:
    """etcd serves a watch created from a past revision only when its sync loop runs (every 100 ms): a
    lock's waiter watching its predecessor from the revision it queued at must not wait for that."""
    other = coord.connect(f"etcd://{server[0]}:{server[1]}?prefix={tag}")
    took = []
    try:
        for _ in range(9):
            ahead = direct.put("ahead", b"holder")
            direct.put("behind", b"a write since: the watch's start is in the past")
            with other.watch("ahead", start_revision=ahead.revision + 1) as watch:
                began = time.monotonic()
                direct.delete("ahead")
                event = watch.get(timeout=10)
                took.append(time.monotonic() - began)
                assert event is not None and (event.type, event.key) == ("delete", "ahead")
                assert watch.get(timeout=0.05) is None
    finally:
        other.close()
    assert sorted(took)[4] < 0.03, f"median {sorted(took)[4] * 1000:.0f} ms: {took}"


def test_a_watch_from_a_past_revision_replays_a_key_changed_since(direct: EtcdStore) -> None:
    first = direct.put("k", b"1")
    direct.put("k", b"2")
    direct.delete("k")
    with direct.watch("k", start_revision=first.revision + 1) as watch:
        assert summary(drain(watch, 2)) == [("put", "k", b"2"), ("delete", "k", None)]
        direct.put("k", b"3")
        assert summary(drain(watch, 1)) == [("put", "k", b"3")]
