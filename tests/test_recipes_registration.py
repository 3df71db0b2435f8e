"""Service registration: discover, watch_service, the decorator, and re-registration after a lost lease."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable

import pytest

import coord
from coord.testing import FaultyStore
from tests.support import ROOT, Child, Children, wait_for

TTL = 2.0
KILL_BOUND = TTL + 1.0 + 1.0  # generous: machines are noisy


def test_a_registered_instance_is_discovered_until_closed(store: coord.Store) -> None:
    before = time.time()
    with coord.register("api", address="10.0.0.1:80", metadata={"zone": "a"}, ttl=TTL, store=store) as registration:
        assert registration.registered
        (instance,) = coord.discover("api", store=store)
        assert instance.id == registration.id
        assert (instance.service, instance.address, dict(instance.metadata)) == ("api", "10.0.0.1:80", {"zone": "a"})
        assert before - 1 <= instance.registered_at <= time.time() + 1
        body = json.loads(store.get(f"services/api/{registration.id}").value)
        assert set(body) == {"address", "metadata", "registered_at"}
        assert coord.discover("other", store=store) == []
    assert not registration.registered
    assert coord.discover("api", store=store) == []


def test_watch_service_reports_the_live_list_each_time_it_changes(open_store: Callable[[], coord.Store]) -> None:
    store = open_store()
    lists: queue.Queue[list[str]] = queue.Queue()
    watching = coord.watch_service("api", store=store)

    def follow() -> None:
        for found in watching:
            lists.put([instance.address for instance in found])

    threading.Thread(target=follow, daemon=True).start()
    assert lists.get(timeout=10) == []
    a = coord.register("api", address="a", ttl=TTL, store=open_store())
    assert lists.get(timeout=10) == ["a"]
    b = coord.register("api", address="b", ttl=TTL, store=open_store())
    assert sorted(lists.get(timeout=10)) == ["a", "b"]
    a.close()
    assert lists.get(timeout=10) == ["b"]
    b.close()
    assert lists.get(timeout=10) == []


def test_registered_service_wraps_plain_functions(store: coord.Store) -> None:
    @coord.registered_service("worker", address="w:1", ttl=TTL, metadata={"k": 1}, store=store)
    def work(x: int) -> list[coord.Instance]:
        assert x == 7
        return coord.discover("worker", store=store)

    assert work.__name__ == "work"
    (instance,) = work(7)
    assert instance.address == "w:1" and instance.metadata == {"k": 1}
    assert coord.discover("worker", store=store) == []

    @coord.registered_service("worker", address="w:2", ttl=TTL, store=store)
    def fail() -> None:
        assert len(coord.discover("worker", store=store)) == 1
        raise KeyError("boom")

    with pytest.raises(KeyError):
        fail()
    assert coord.discover("worker", store=store) == [], "deregistered when the function raises"


def test_registered_service_wraps_coroutines(store: coord.Store) -> None:
    @coord.registered_service("aworker", address="a:1", ttl=TTL, store=store)
    async def work() -> list[str]:
        await asyncio.sleep(0.01)
        return [instance.address for instance in coord.discover("aworker", store=store)]

    assert asyncio.iscoroutinefunction(work)
    assert asyncio.run(work()) == ["a:1"]
    assert coord.discover("aworker", store=store) == []


def test_an_instance_whose_lease_was_lost_registers_again_by_itself(open_store: Callable[[], coord.Store]) -> None:
    # FaultyStore ignores its inner store's prefix: use it for every call, with a service name of its own.
    store = FaultyStore(open_store())
    service = f"api-{uuid.uuid4().hex[:8]}"
    with coord.register(service, address="x", ttl=TTL, store=store) as registration:
        first = registration.lease
        assert first is not None
        store.expire(first)  # the store drops the lease: the key goes now, the holder learns at its next renewal
        assert coord.discover(service, store=store) == []
        assert first.lost.wait(TTL + 2)
        wait_for(lambda: registration.registered, TTL + 5, "re-registered")
        (instance,) = coord.discover(service, store=store)
        assert instance.id == registration.id and registration.lease is not first
    assert coord.discover(service, store=store) == []


# -- a registered service in another process ------------------------------------------------


def test_a_service_process_appears_vanishes_when_killed_and_comes_back_after_a_pause(
    process_url: str, children: Children
) -> None:
    def serve() -> tuple[coord.Instance, Child]:
        server = children.start(
            [str(ROOT / "recipes/registered_service.py"), "serve", "--url", process_url, "--ttl", str(TTL)]
        )
        address = server.expect("serving", 30)[3]
        (instance,) = coord.discover("hello", store=store)
        assert instance.address == address
        with urllib.request.urlopen(address, timeout=5) as response:
            assert response.read().decode().strip() == f"hello from {server.pid}"
        return instance, server

    with coord.connect(process_url) as store:
        instance, server = serve()
        # Paused past its ttl: its lease expires and the instance goes ...
        server.signal(signal.SIGSTOP)
        wait_for(lambda: coord.discover("hello", store=store) == [], TTL + 5, "the paused instance vanished")
        server.signal(signal.SIGCONT)
        # ... and once resumed it registers again by itself, under the same id.
        wait_for(
            lambda: [found.id for found in coord.discover("hello", store=store)] == [instance.id],
            10,
            "the instance came back",
        )
        # Killed: gone within the ttl.
        killed_at = server.kill()
        gone_at = wait_for(
            lambda: coord.discover("hello", store=store) == [], KILL_BOUND + 5, "the killed instance vanished"
        )
        assert gone_at - killed_at < KILL_BOUND
        # Stopped cleanly: gone at once.
        instance, server = serve()
        server.signal(signal.SIGTERM)
        server.expect("stopped;", 10)
        assert coord.discover("hello", store=store) == []
        assert server.wait(10) == 0
