"""etcd v3 backend: what the shared suite cannot reach from the Store API alone.

Compaction (a watch that must re-sync rather than skip), leases etcd dropped
behind the Store's back, ttl rounding, and endpoint failover. Runs against
$COORD_TEST_ETCD; connections are cut through a proxy, never by stopping the
shared server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

import coord
from coord.backends.etcd import EtcdStore
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
