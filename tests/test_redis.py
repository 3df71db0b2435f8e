"""What only the Redis backend does: retries that cannot apply a change twice,
re-syncs after the change log was trimmed or the server lost writes, one
reader thread per Store, and URL handling. The conformance suite covers the rest.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

import coord
from tests.support import Proxy, drain, summary, url_of

URL = url_of("redis")
pytestmark = pytest.mark.server("redis")


@pytest.fixture
def raw() -> Iterator[Any]:
    parts = urlsplit(URL)
    client = redis.Redis(host=parts.hostname, port=parts.port or 6379)
    yield client
    client.close()


@pytest.fixture
def namespace(raw: Any) -> Iterator[str]:
    """A namespace of its own (its own revisions and change log), deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(raw.scan_iter(match=f"{{{name}}}:*"))
    if keys:
        raw.delete(*keys)


def _url(namespace: str, **options: object) -> str:
    query = "&".join(f"{name}={value}" for name, value in {"namespace": namespace, **options}.items())
    return f"{URL}{'&' if '?' in URL else '?'}{query}"


def test_a_mutation_whose_reply_was_lost_is_not_applied_twice(namespace: str) -> None:
    with coord.connect(_url(namespace)) as store:
        wire = store._wire  # type: ignore[attr-defined]
        real = wire._roundtrip
        lost: list[bool] = []

        def lose_first_reply(*args: Any) -> Any:
            reply = real(*args)  # the server applied it ...
            if not lost:
                lost.append(True)
                raise redis.ConnectionError("connection reset")  # ... but the client never heard
            return reply

        wire._roundtrip = lose_first_reply
        created = store.atomic_put("once", b"1", None)  # a plain retry would say KeyExists
        assert store.get("once") == created
        lost.clear()
        swapped = store.atomic_put("once", b"2", created)  # ... or KeyModified
        assert store.get("once") == swapped
        lost.clear()
        store.delete("once")  # ... or KeyNotFound
        assert not store.exists("once")
        with store.watch("once", start_revision=created.revision) as watch:
            events = drain(watch, 3)
            assert watch.get(timeout=0.3) is None, "a retried mutation was applied twice"
        assert summary(events) == [("put", "once", b"1"), ("put", "once", b"2"), ("delete", "once", None)]


def test_a_transaction_whose_reply_was_lost_reports_its_own_success(namespace: str) -> None:
    with coord.connect(_url(namespace)) as store:
        wire = store._wire  # type: ignore[attr-defined]
        real = wire._roundtrip
        calls: list[bool] = []

        def lose_first_reply(*args: Any) -> Any:
            reply = real(*args)
            calls.append(True)
            if len(calls) == 1:
                store.put("q/later", b"")  # a change after the transaction, which its retry must not show
                raise redis.ConnectionError("connection reset")
            return reply

        wire._roundtrip = lose_first_reply
        txn = store.transaction()
        txn.put("q/mine", b"1", previous=None)  # a plain retry would say KeyExists
        txn.list("q")
        mine, queue = txn.commit()
        wire._roundtrip = real
        assert len(calls) == 3  # the transaction, the put inside the hook, the retry
        assert store.get("q/mine") == mine
        assert [pair.key for pair in queue] == ["q/mine"], "the retry replied with the state of its first attempt"


def test_a_watch_behind_the_trimmed_log_resyncs_with_the_current_state(namespace: str) -> None:
    # XADD MAXLEN ~ trims whole stream nodes (100 entries by default), so write well past them.
    with coord.connect(_url(namespace, history=10)) as store:
        first = store.put("old/gone", b"0")
        for index in range(500):
            store.put(f"old/{index % 3}", str(index).encode())
        store.delete("old/gone")
        with store.watch_tree("old", start_revision=first.revision) as watch:
            events = drain(watch, 3)
            # in revision order; no delete for old/gone, which this watch was never told of
            assert summary(events) == [("put", "old/2", b"497"), ("put", "old/0", b"498"), ("put", "old/1", b"499")]
            assert watch.get(timeout=0.3) is None
            store.put("old/3", b"new")
            assert summary(drain(watch, 1)) == [("put", "old/3", b"new")]


def test_a_watch_that_fell_behind_the_log_hears_of_the_keys_deleted_meanwhile(namespace: str) -> None:
    parts = urlsplit(URL)
    assert parts.hostname and parts.port
    with Proxy((parts.hostname, parts.port)) as proxy:
        proxied = _url(namespace, history=10).replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}", 1)
        with coord.connect(proxied) as watcher, coord.connect(_url(namespace, history=10)) as writer:
            watch = watcher.watch_tree("g")
            for key in ("g/kept", "g/gone", "g/moved"):
                writer.put(key, b"1")
            assert len(drain(watch, 3)) == 3
            proxy.refuse()
            proxy.cut()
            writer.delete("g/gone")
            writer.put("g/moved", b"2")
            for index in range(500):  # well past what the log keeps (whole stream nodes of 100 entries)
                writer.put(f"other/{index % 7}", b"")
            proxy.accept()
            # What the watch missed, from the current state: what changed, then what is gone.
            assert summary(drain(watch, 2, timeout=30)) == [("put", "g/moved", b"2"), ("delete", "g/gone", None)]
            assert watch.get(timeout=0.5) is None
            writer.put("g/after", b"3")
            assert summary(drain(watch, 1)) == [("put", "g/after", b"3")]
            watch.close()


def test_a_server_that_lost_delivered_writes_makes_watches_resync(namespace: str, raw: Any) -> None:
    with coord.connect(_url(namespace)) as watcher, coord.connect(_url(namespace)) as writer:
        watch = watcher.watch_tree("x")
        writer.put("x/kept", b"1")
        lost = writer.put("x/lost", b"2")
        assert summary(drain(watch, 2)) == [("put", "x/kept", b"1"), ("put", "x/lost", b"2")]
        # What a restart with AOF everysec can do: come back without the last write ...
        tag = f"{{{namespace}}}"
        with raw.pipeline(transaction=True) as pipe:
            pipe.hdel(f"{tag}:kv", "x/lost").zrem(f"{tag}:idx", "x/lost")
            pipe.xdel(f"{tag}:log", f"{lost.revision}-0").execute_command(
                "XSETID", f"{tag}:log", f"{lost.revision - 1}-0"
            )
            pipe.set(f"{tag}:rev", lost.revision - 1)
            pipe.execute()
        raw.client_kill_filter(_id=watcher._feed._client_id)  # type: ignore[attr-defined]
        # ... and hand its revision to the next write.
        assert writer.put("x/new", b"3").revision == lost.revision
        events = drain(watch, 2)
        assert summary(events) == [("put", "x/new", b"3"), ("delete", "x/lost", None)]
        assert watch.get(timeout=0.5) is None
        watch.close()


def test_watchers_hear_of_expiries_right_after_the_deadline(namespace: str) -> None:
    # The reader wakes at the earliest deadline the server reports, not on a fixed period (it
    # used to reap every 0.5 s, so each of these deletes came up to 0.5 s late).
    ttls = [0.6, 0.85, 1.3, 1.7]
    with coord.connect(_url(namespace)) as store, store.watch_tree("e") as watch:
        written = {}
        for index, ttl in enumerate(ttls):
            store.put(f"e/{index}", b"", ttl=ttl)
            written[f"e/{index}"] = time.monotonic() + ttl
        late = {}
        deadline = time.monotonic() + 10
        while len(late) < len(ttls) and time.monotonic() < deadline:
            event = watch.get(timeout=1)
            if event is not None and event.type == "delete":
                late[event.key] = time.monotonic() - written[event.key]
    assert sorted(late) == sorted(written)
    assert max(late.values()) < 0.2, f"deletes came this long after their deadlines: {late}"


class PrivateRedis:
    """A redis-server of the test's own (AOF everysec, as in production), that can crash and come back
    from an earlier copy of its data: what an OS crash with ``appendfsync everysec``, or a failover to a
    replica that lagged, leaves behind."""

    def __init__(self, root: Path, replica_of: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not on PATH")
        self.binary, self.data, self.saved = binary, root / "data", root / "saved"
        self.replica_of = replica_of
        self.data.mkdir(parents=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        options = ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data), "--save", ""]
        options += ["--appendonly", "yes", "--appendfsync", "everysec", "--repl-diskless-sync-delay", "0"]
        if self.replica_of:
            options += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.proc = subprocess.Popen([self.binary, *options], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def save(self) -> None:
        """Remember the data as it is now (the AOF as written so far)."""
        shutil.copytree(self.data, self.saved)

    def crash_and_lose(self) -> None:
        """SIGKILL, and come back with the data as saved: every write since is lost."""
        self.kill()
        shutil.rmtree(self.data)
        shutil.copytree(self.saved, self.data)
        self.start()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    yield server
    server.kill()


def test_after_a_server_lost_writes_leases_are_lost_and_revisions_never_repeat(private_redis: PrivateRedis) -> None:
    with coord.connect(private_redis.url) as store, coord.connect(private_redis.url) as watcher:
        lease = store.lease(30)
        kept = store.atomic_put("t/kept", b"1", None, lease=lease)
        store.put("t/moved", b"1")
        watch = watcher.watch_tree("t")
        assert len(drain(watch, 2)) == 2
        private_redis.save()
        # Acknowledged, then lost.
        moved = store.put("t/moved", b"2")
        lost = store.atomic_put("t/lost", b"", None, lease=lease)
        lost_lease = store.lease(30)
        assert summary(drain(watch, 2)) == [("put", "t/moved", b"2"), ("put", "t/lost", b"")]
        seen = max(kept.revision, moved.revision, lost.revision)

        private_redis.crash_and_lose()

        token = store.atomic_put("t/new", b"", None)  # the first request reconnects
        assert token.created > seen, "a fencing token repeated one handed out before the loss"
        assert lease.lost.wait(5) and lost_lease.lost.wait(5), "leases outlived writes the server lost"
        assert store.lease(30).id > lost_lease.id, "a lease id was handed out twice"
        assert store.get("t/moved").value == b"1"  # as the server has it now
        # The watch re-syncs to the state the server has: t/moved back to its old value, t/lost gone,
        # t/new (if it was written before the re-sync read the state, it comes as part of it).
        events = summary(drain(watch, 3, timeout=30))
        assert sorted(events) == [("delete", "t/lost", None), ("put", "t/moved", b"1"), ("put", "t/new", b"")]
        assert watch.get(timeout=0.5) is None
        watch.close()


def test_replicas_makes_each_write_wait_for_them(private_redis: PrivateRedis, tmp_path: Path) -> None:
    replica = PrivateRedis(tmp_path / "replica", replica_of=private_redis.port)
    try:
        client = redis.Redis(port=replica.port)
        deadline = time.monotonic() + 30
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
        with coord.connect(f"{private_redis.url}?replicas=1&timeout=2") as store:
            store.put("w/k", b"1")
            assert client.hexists("{coord}:kv", "w/k"), "acknowledged before the replica had it"
            txn = store.transaction()
            txn.put("w/t", b"2", previous=None)
            txn.commit()
            assert client.hexists("{coord}:kv", "w/t")
            replica.kill()
            with pytest.raises(coord.StoreUnavailable, match="replicas acknowledged"):
                store.put("w/k", b"3")
        client.close()
    finally:
        replica.kill()


def test_a_restart_that_lost_nothing_still_ends_the_leases(private_redis: PrivateRedis) -> None:
    # Whether acknowledged writes were lost is not known after a restart (AOF everysec, or a failover):
    # every lease of every Store counts as lost, and what was written stays.
    with coord.connect(private_redis.url) as store, coord.connect(private_redis.url) as watcher:
        lease = store.lease(30)
        before = store.put("r/k", b"1", lease=lease)
        watch = watcher.watch_tree("r")
        assert len(drain(watch, 1)) == 1
        private_redis.save()
        private_redis.crash_and_lose()
        assert store.put("r/other", b"").revision > before.revision
        assert lease.lost.wait(5)
        # The lease's key stays until the server expires the lease (it is not renewed any more);
        # the watch lost nothing, so it hears only what came after.
        assert summary(drain(watch, 1, timeout=30)) == [("put", "r/other", b"")]
        watch.close()


def _rung(raw: Any, namespace: str, store: coord.Store) -> bytes:
    """The id of the last ring of ``store``'s bell."""
    bell = store._feed._bell  # type: ignore[attr-defined]
    return bytes(raw.xrevrange(f"{{{namespace}}}:bell:{bell}", count=1)[0][0])


def test_a_change_wakes_only_the_stores_that_watch_it(namespace: str, raw: Any) -> None:
    with (
        coord.connect(_url(namespace)) as key_watcher,
        coord.connect(_url(namespace)) as tree_watcher,
        coord.connect(_url(namespace)) as writer,
    ):
        key_watch, tree_watch = key_watcher.watch("a/b/c"), tree_watcher.watch_tree("a/b")
        before = _rung(raw, namespace, key_watcher), _rung(raw, namespace, tree_watcher)
        writer.put("a/bc", b"")  # neither the key nor under the tree
        writer.put("elsewhere", b"")
        time.sleep(0.05)
        assert (_rung(raw, namespace, key_watcher), _rung(raw, namespace, tree_watcher)) == before
        writer.put("a/b/d", b"")  # under the tree only
        assert summary(drain(tree_watch, 1)) == [("put", "a/b/d", b"")]
        assert _rung(raw, namespace, key_watcher) == before[0]
        writer.put("a/b/c", b"")  # both
        assert summary(drain(key_watch, 1)) == [("put", "a/b/c", b"")]
        assert summary(drain(tree_watch, 1)) == [("put", "a/b/c", b"")]
        assert _rung(raw, namespace, key_watcher) != before[0]
        key_watch.close()
        tree_watch.close()


def test_events_still_come_when_the_server_forgot_who_watches(namespace: str, raw: Any) -> None:
    # The bells only hasten what the reader would read anyway, at least every 0.5 s.
    with coord.connect(_url(namespace)) as watcher, coord.connect(_url(namespace)) as writer:
        watch = watcher.watch("k")
        raw.delete(f"{{{namespace}}}:watched")
        writer.put("k", b"1")
        assert summary(drain(watch, 1, timeout=5)) == [("put", "k", b"1")]
        raw.delete(f"{{{namespace}}}:bell:{watcher._feed._bell}")  # type: ignore[attr-defined]
        time.sleep(0.6)  # the reader notices at its next reap, and registers its watches again
        started = time.monotonic()
        writer.put("k", b"2")
        assert summary(drain(watch, 1, timeout=5)) == [("put", "k", b"2")]
        assert time.monotonic() - started < 0.3, "the watch was not registered again"
        watch.close()


def test_watch_registrations_go_with_their_store(namespace: str, raw: Any) -> None:
    watched = f"{{{namespace}}}:watched"
    with coord.connect(_url(namespace)) as store:
        store.watch("w/a")
        store.watch_tree("w")
        with store.watch("w/b"):
            pass
        assert raw.hlen(watched) >= 2
    assert raw.hlen(watched) == 0, "a closed Store left registrations behind"
    # A Store that died without closing: its bell expires, and the sweep drops what it registered.
    raw.hset(watched, "=w/c", "deadbeef0000.0")
    with coord.connect(_url(namespace)) as store, store.watch("w/d"):
        deadline = time.monotonic() + 20
        while raw.hexists(watched, "=w/c"):
            assert time.monotonic() < deadline, "the registration of a dead Store was never swept"
            time.sleep(0.2)


def test_handing_a_lock_back_and_forth_never_waits_for_the_fallback_read(namespace: str) -> None:
    # Two Stores taking turns: each waiter closes one watch and opens the next while its reader
    # is mid-read. A ring taken in that window used to be lost: a 0.5 s wait for the fallback.
    from coord.recipes import Lock

    waits: list[float] = []

    def take_turns(store: coord.Store) -> None:
        lock = Lock("turns", store=store)
        for _ in range(100):
            started = time.monotonic()
            lock.acquire()
            waits.append(time.monotonic() - started)
            lock.release()

    with coord.connect(_url(namespace)) as one, coord.connect(_url(namespace)) as other:
        threads = [threading.Thread(target=take_turns, args=(store,)) for store in (one, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    waits.sort()
    assert len(waits) == 200
    assert waits[len(waits) // 2] < 0.1 and waits[int(len(waits) * 0.9)] < 0.3, f"waits: {waits[100::20]}"


def test_one_reader_thread_serves_every_watch_of_a_store(namespace: str) -> None:
    def readers() -> int:
        return sum(thread.name == "coord-redis-watch" for thread in threading.enumerate())

    before = readers()
    with coord.connect(_url(namespace)) as store:
        watches = [store.watch(f"k/{index}") for index in range(20)] + [store.watch_tree("k")]
        assert readers() == before + 1
        store.put("k/7", b"x")
        assert summary(drain(watches[7], 1)) == [("put", "k/7", b"x")]
        assert summary(drain(watches[-1], 1)) == [("put", "k/7", b"x")]
        assert watches[6].get(timeout=0.2) is None
    deadline = time.monotonic() + 5
    while readers() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert readers() == before


def test_a_watch_fails_once_the_server_is_unreachable_past_the_timeout(namespace: str) -> None:
    parts = urlsplit(URL)
    assert parts.hostname and parts.port
    with Proxy((parts.hostname, parts.port)) as proxy:
        url = _url(namespace, timeout=1).replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}", 1)
        with coord.connect(url) as store:
            watch = store.watch_tree("u")
            proxy.refuse()
            proxy.cut()
            started = time.monotonic()
            with pytest.raises(coord.StoreUnavailable):
                watch.get(timeout=15)
            assert time.monotonic() - started < 10


def test_the_url_picks_the_database(namespace: str, raw: Any) -> None:
    parts = urlsplit(URL)
    with coord.connect(f"redis://{parts.hostname}:{parts.port}/3?namespace={namespace}") as store:
        store.put("k", b"v")
        other = redis.Redis(host=parts.hostname, port=parts.port, db=3)
        try:
            assert other.hexists(f"{{{namespace}}}:kv", "k")
            assert not raw.hexists(f"{{{namespace}}}:kv", "k")
        finally:
            other.delete(*other.scan_iter(match=f"{{{namespace}}}:*"))
            other.close()


def test_an_unreachable_server_is_store_unavailable_at_connect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe is closed
    started = time.monotonic()
    with pytest.raises(coord.StoreUnavailable) as info:
        coord.connect(f"redis://127.0.0.1:{port}", timeout=1)
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("url", ["redis://a:1,b:2", "redis://127.0.0.1:1/zero", "redis://127.0.0.1:1?history=0"])
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(coord.ConfigurationError):
        coord.connect(url)
