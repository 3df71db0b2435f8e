"""coord.aio: the Store and every recipe for asyncio, on every backend; the loop never blocked; clean cancellation."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

import coord
import coord.aio
from coord.testing import FaultyStore

T = TypeVar("T")
TTL = 3.0


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


async def connect(store_url: str) -> coord.aio.AsyncStore:
    return await coord.aio.connect(store_url)


def test_store_operations_and_watches(store_url: str) -> None:
    async def main() -> None:
        async with await connect(store_url) as store:
            watch = await store.watch_tree("a")
            written = await store.put("a/1", b"x")
            assert (await store.get("a/1")) == written and await store.exists("a/1")
            assert [p.key for p in await store.list("a")] == ["a/1"]
            created, listed = await store.transaction().put("a/2", b"y", previous=None).list("a").commit()
            assert created.key == "a/2" and [p.key for p in listed] == ["a/1", "a/2"]
            await store.delete("a/1")
            seen = []
            async for event in watch:
                seen.append((event.type, event.key))
                if len(seen) == 3:
                    break
            watch.close()
            assert seen == [("put", "a/1"), ("put", "a/2"), ("delete", "a/1")]
            lease = await store.session(TTL)
            assert lease.alive and (await store.session(TTL)) is lease
            reading = await store.server_time()
            assert (reading is None) == (store.sync.backend in ("sqlite", "memory"))

    run(main)


def test_a_hundred_coroutines_share_a_lock_and_the_loop_never_stalls(store_url: str) -> None:
    """Mutual exclusion, first-come first-served, and a loop that answers within 50 ms throughout."""

    async def main() -> tuple[float, int]:
        async with await connect(store_url) as store:
            inside = 0
            most = 0
            lags: list[float] = []
            stop = asyncio.Event()

            async def probe() -> None:
                loop = asyncio.get_running_loop()
                while not stop.is_set():
                    before = loop.time()
                    await asyncio.sleep(0.01)
                    lags.append(loop.time() - before - 0.01)

            async def worker(i: int) -> None:
                nonlocal inside, most
                async with coord.aio.Lock("l", store=store, ttl=10):
                    inside += 1
                    most = max(most, inside)
                    await asyncio.sleep(0)
                    inside -= 1

            prober = asyncio.create_task(probe())
            await asyncio.gather(*(worker(i) for i in range(100)))
            stop.set()
            await prober
            return max(lags), most

    # A loop blocked by coord stalls in every run; a shared, loaded machine now and then deschedules the
    # whole process: so the bound must hold in one of three runs (and exclusion in all of them). The test
    # process's own full garbage collections (50-80 ms with everything the suite has made) are not coord's.
    lags = []
    gc.collect()
    gc.freeze()
    try:
        for _ in range(3):
            worst_lag, most = run(main)
            assert most == 1, "two coroutines held the lock at once"
            lags.append(worst_lag)
            if worst_lag < 0.05:
                break
    finally:
        gc.unfreeze()
    assert min(lags) < 0.05, f"the event loop stalled for {[round(lag * 1000) for lag in lags]} ms"


def test_cancelling_a_waiter_leaves_no_ticket_behind(store_url: str) -> None:
    async def main() -> None:
        async with await connect(store_url) as store:
            holder = coord.aio.Lock("l", store=store, ttl=10)
            await holder.acquire()
            waiting = asyncio.create_task(coord.aio.Lock("l", store=store, ttl=10).acquire())
            while len(await store.list("lock/l")) < 2:
                await asyncio.sleep(0.01)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert len(await store.list("lock/l")) == 1, "the cancelled waiter's ticket stayed"
            await holder.release()
            started = time.monotonic()
            assert await coord.aio.Lock("l", store=store, ttl=10).acquire(timeout=10)
            assert time.monotonic() - started < 2, "the next contender was delayed"

    run(main)


async def cancel_mid_reply(faulty: FaultyStore, op: str, call: Coroutine[Any, Any, object]) -> None:
    """Run ``call`` and cancel it while its ``op`` is under way: applied at once, its reply a second late."""
    taken = len(faulty.injected)
    faulty.inject("slow_reply", op=op, delay=1.0)
    task = asyncio.ensure_future(call)
    while len(faulty.injected) == taken:
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert faulty.injected[-1] == (op, "slow_reply")


def test_cancelling_a_waiter_whose_ticket_was_just_created_leaves_no_ticket_behind() -> None:
    """The cancellation comes while the create's reply is on its way: the ticket the store made is deleted."""

    async def main() -> None:
        faulty = FaultyStore(coord.connect("memory://"))
        async with coord.aio.AsyncStore(faulty) as store:
            holder = coord.aio.Lock("l", store=store, ttl=10)
            await holder.acquire()
            await cancel_mid_reply(faulty, "transaction", coord.aio.Lock("l", store=store, ttl=10).acquire())
            assert len(await store.list("lock/l")) == 1, "the cancelled waiter's ticket stayed"
            await holder.release()

    run(main)


def test_cancelling_a_waiter_whose_watch_was_just_opened_leaves_no_watch_open() -> None:
    """The cancellation comes while the watch on the predecessor is being opened: that watch is closed."""

    async def main() -> None:
        faulty = FaultyStore(coord.connect("memory://"))
        async with coord.aio.AsyncStore(faulty) as store:
            holder = coord.aio.Lock("l", store=store, ttl=10)
            await holder.acquire()
            before = len(faulty._watches)
            await cancel_mid_reply(faulty, "watch", coord.aio.Lock("l", store=store, ttl=10).acquire())
            assert len(faulty._watches) == before, "the cancelled waiter's watch stayed open"
            assert len(await store.list("lock/l")) == 1
            await holder.release()

    run(main)


def test_a_watch_lease_or_registration_whose_caller_was_cancelled_as_it_opened_is_closed() -> None:
    """``await store.watch(...)``, ``lease(...)`` or ``coord.aio.register(...)`` cancelled while it runs: nothing stays."""

    async def main() -> None:
        faulty = FaultyStore(coord.connect("memory://"))
        async with coord.aio.AsyncStore(faulty) as store:
            await cancel_mid_reply(faulty, "watch", store.watch("k"))
            await cancel_mid_reply(faulty, "watch", store.watch_tree("t"))
            await cancel_mid_reply(faulty, "lease", store.lease(30))
            deadline = time.monotonic() + 10
            while (faulty._watches or faulty.leases()) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert not faulty._watches, "a watch stayed open"
            assert not faulty.leases(), "a lease stayed alive"
            await cancel_mid_reply(faulty, "put", coord.aio.register("svc", address="10.0.0.1:80", ttl=30, store=store))
            deadline = time.monotonic() + 10
            while await store.list("") and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert not await store.list(""), "the registration stayed"

    run(main)


def test_cancel_on_loss_stops_the_block_when_the_lock_is_lost(store_url: str) -> None:
    """A ticket deleted behind its holder's back: the block is cancelled, and the ``async with`` says why."""

    async def main() -> None:
        async with await connect(store_url) as store, await connect(store_url) as operator:
            lock = coord.aio.Lock("l", store=store, ttl=TTL)
            await lock.acquire()
            started = time.monotonic()
            with pytest.raises(coord.LeaseExpired):
                async with lock.cancel_on_loss():
                    await operator.delete_tree("lock")
                    await asyncio.sleep(30)
            assert time.monotonic() - started < TTL + 3
            assert not lock.holding and lock.lost.is_set()
            await lock.release()

    run(main)


def test_cancel_on_loss_stops_the_block_at_the_client_deadline() -> None:
    """Frozen keepalives: the block is cancelled when the lease's deadline passes, not later."""

    async def main() -> None:
        faulty = FaultyStore(coord.connect("memory://"))
        async with coord.aio.AsyncStore(faulty) as store:
            leadership = await coord.aio.Election("e", store=store, ttl=1.0).campaign()
            faulty.freeze(leadership.lease)
            with pytest.raises(coord.LeaseExpired):
                async with leadership.cancel_on_loss():
                    await asyncio.sleep(30)
            assert leadership.lease.deadline <= faulty.clock.now()
            assert not leadership.is_leader
            await leadership.resign()

    run(main)


def test_elections_observe_and_hand_over(store_url: str) -> None:
    async def main() -> None:
        async with await connect(store_url) as store:
            seen: list[bytes] = []

            async def observe() -> None:
                async for value in coord.aio.Election("e", store=store).observe():
                    seen.append(value)
                    if len(seen) == 2:
                        return

            observer = asyncio.create_task(observe())
            first = await coord.aio.Election("e", store=store, value=b"one").campaign(timeout=10)
            second = asyncio.create_task(coord.aio.Election("e", store=store, value=b"two").campaign(timeout=10))
            await asyncio.sleep(0.2)
            assert not second.done()
            assert await coord.aio.Election("e", store=store).leader() == b"one"
            await first.resign()
            leadership = await second
            assert leadership.is_leader and leadership.token > first.token
            await asyncio.wait_for(observer, 10)
            assert seen == [b"one", b"two"]
            await leadership.proclaim(b"two again")
            await leadership.resign()

    run(main)


def test_barriers(store_url: str) -> None:
    async def main() -> None:
        async with await connect(store_url) as store:
            await asyncio.wait_for(
                asyncio.gather(*(coord.aio.Barrier("b", 3, store=store).wait() for _ in range(3))), 30
            )
            order: list[str] = []

            async def party(i: int) -> None:
                barrier = coord.aio.DoubleBarrier("d", 2, store=store)
                async with barrier:
                    order.append("in")
                order.append("out")

            await asyncio.wait_for(asyncio.gather(party(0), party(1)), 30)
            assert order == ["in", "in", "out", "out"]

    run(main)


def test_registration_and_discovery(store_url: str) -> None:
    async def main() -> None:
        async with await connect(store_url) as store:
            lists: asyncio.Queue[list[str]] = asyncio.Queue()

            async def watch() -> None:
                async for instances in coord.aio.watch_service("svc", store=store):
                    await lists.put([i.address for i in instances])

            watcher = asyncio.create_task(watch())
            assert await asyncio.wait_for(lists.get(), 10) == []
            registration = await coord.aio.register("svc", address="a:1", ttl=TTL, store=store)
            assert registration.registered
            assert [i.address for i in await coord.aio.discover("svc", store=store)] == ["a:1"]
            assert await asyncio.wait_for(lists.get(), 10) == ["a:1"]

            @coord.aio.registered_service("svc2", address="b:2", ttl=TTL, store=store)
            async def serve() -> list[str]:
                return [i.address for i in await coord.aio.discover("svc2", store=store)]

            assert await serve() == ["b:2"]
            assert await coord.aio.discover("svc2", store=store) == []
            await registration.close()
            assert await asyncio.wait_for(lists.get(), 10) == []
            watcher.cancel()

    run(main)
