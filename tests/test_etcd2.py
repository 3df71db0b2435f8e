"""etcd v2 backend: what the shared suite cannot reach from the Store API alone.

The layout in etcd's tree (a key and its children side by side, names etcd
would hide), a watch that fell out of etcd's 1,000-event history and must
re-sync with deletes, leases built from lease nodes (a dead lease's keys are
hidden from every reader and deleted), answers lost after a write landed,
endpoint failover, secrets and bad answers. Runs against $COORD_TEST_ETCD2;
connections are cut through a proxy, never by stopping the shared server.
"""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
import urllib3

import coord
from coord.backends.etcd2 import Etcd2Store
from coord.backends.etcd2._boundary import Transient
from tests.support import Proxy, drain, servers, summary, url_of, wait_for

URL = url_of("etcd2")
pytestmark = pytest.mark.server("etcd2")


@pytest.fixture
def server() -> tuple[str, int]:
    parts = urlsplit(URL)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


@pytest.fixture
def tag() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def opened(server: tuple[str, int], tag: str) -> Iterator[Callable[..., Etcd2Store]]:
    """Open stores on the test's namespace (``port`` to go through a proxy), all closed after the test."""
    stores: list[Etcd2Store] = []

    def opener(port: int | None = None, **options: Any) -> Etcd2Store:
        store = coord.connect(f"etcd2://{server[0]}:{port or server[1]}?prefix={tag}", **options)
        assert isinstance(store, Etcd2Store)
        stores.append(store)
        return store

    yield opener
    for store in stores:
        store.close()


@pytest.fixture
def direct(opened: Callable[..., Etcd2Store]) -> Etcd2Store:
    return opened()


@pytest.fixture
def proxy(server: tuple[str, int]) -> Iterator[Proxy]:
    with Proxy(server) as made:
        yield made


def raw(server: tuple[str, int], method: str, path: str) -> tuple[int, dict[str, Any]]:
    """etcd's own answer for ``path`` (a v2 key path), behind coord's back."""
    answer = urllib3.request(method, f"http://{server[0]}:{server[1]}/v2/keys{path}")
    return answer.status, json.loads(answer.data)


# -- the layout -----------------------------------------------------------------------------


def test_a_key_and_its_children_sit_side_by_side_in_etcds_tree(
    direct: Etcd2Store, server: tuple[str, int], tag: str
) -> None:
    direct.put("dir", b"parent")
    direct.put("dir/child", b"child")
    status, body = raw(server, "GET", f"/coord/kv/{tag}/=dir")
    assert status == 200 and not body["node"].get("dir")
    status, body = raw(server, "GET", f"/coord/kv/{tag}/dir")
    assert status == 200 and body["node"]["dir"] and body["node"]["nodes"][0]["key"].endswith("/dir/=child")


@pytest.mark.parametrize("key", ["_hidden", "=marked", "%25", "a/_b/c", "_/=/%", "x?y#z&w=v", "日本/語"])
def test_names_etcd_would_hide_or_misread_are_keys_like_any_other(direct: Etcd2Store, key: str) -> None:
    written = direct.put(key, b"v")
    with direct.watch_tree("") as watch:
        assert summary(drain(watch, 1)) == [("put", key, b"v")]
        assert [pair.key for pair in direct.list("")] == [key]
        assert direct.get(key) == written
        direct.delete(key)
        assert summary(drain(watch, 1)) == [("delete", key, None)]


def test_values_that_are_not_text_travel_as_base64(direct: Etcd2Store, server: tuple[str, int], tag: str) -> None:
    direct.put("bin", b"\xff\x00\xfe")
    direct.put("text", "ünïcode".encode())
    assert raw(server, "GET", f"/coord/kv/{tag}/=text")[1]["node"]["value"].endswith(":ünïcode")
    assert direct.get("bin").value == b"\xff\x00\xfe"


def test_a_value_another_v2_client_wrote_reads_as_its_text(
    direct: Etcd2Store, server: tuple[str, int], tag: str
) -> None:
    answer = urllib3.request("PUT", f"http://{server[0]}:{server[1]}/v2/keys/coord/kv/{tag}/=plain?value=hello")
    assert answer.status == 201
    pair = direct.get("plain")
    assert pair.value == b"hello" and pair.lease is None


# -- watches past etcd's history ------------------------------------------------------------


def churn(store: Etcd2Store, count: int = 1100) -> None:
    """Push more changes than etcd's 1,000-event history holds."""
    for number in range(count):
        store.put("churn", str(number).encode())


def count_resyncs(store: Etcd2Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often the store's watches re-synced from a GET after etcd said their history was cleared."""
    real, resyncs = store._watches_of._resync, []

    def resync(feed: Any, lane: Any = None) -> None:
        resyncs.append(1)
        real(feed, lane)

    monkeypatch.setattr(store._watches_of, "_resync", resync)
    return resyncs


def test_a_tree_watch_that_fell_out_of_the_history_resyncs_with_deletes(
    opened: Callable[..., Etcd2Store], proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10, item 10: a re-sync reports every key the watch had delivered and that is gone."""
    writer = opened()
    watcher = opened(proxy.port)
    writer.put("w/stays", b"1")
    writer.put("w/changes", b"1")
    writer.put("w/goes", b"1")
    with watcher.watch_tree("w") as watch:
        assert len(drain(watch, 3)) == 3
        resyncs = count_resyncs(watcher, monkeypatch)
        proxy.refuse()
        proxy.cut()
        writer.put("w/changes", b"2")
        writer.delete("w/goes")
        writer.put("w/new", b"1")
        churn(writer)
        proxy.accept()
        events = drain(watch, 3, timeout=30)
        assert summary(events) == [("put", "w/changes", b"2"), ("put", "w/new", b"1"), ("delete", "w/goes", None)]
        assert resyncs == [1], "etcd's history was cleared: the watch re-synced once"
        assert watch.get(timeout=1.0) is None, "an event was delivered twice"
        writer.delete("w/stays")
        assert summary(drain(watch, 1)) == [("delete", "w/stays", None)]


def test_a_key_watch_that_fell_out_of_the_history_reports_its_delete(
    opened: Callable[..., Etcd2Store], proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = opened()
    watcher = opened(proxy.port)
    writer.put("k", b"1")
    with watcher.watch("k") as watch:
        assert summary(drain(watch, 1)) == [("put", "k", b"1")]
        resyncs = count_resyncs(watcher, monkeypatch)
        proxy.refuse()
        proxy.cut()
        writer.delete("k")
        churn(writer)
        proxy.accept()
        assert summary(drain(watch, 1, timeout=30)) == [("delete", "k", None)]
        assert resyncs == [1]
        assert watch.get(timeout=0.5) is None


def test_a_watch_from_a_cleared_start_revision_starts_from_the_current_state(direct: Etcd2Store) -> None:
    old = direct.put("h/a", b"1")
    direct.put("h/b", b"1")
    churn(direct)
    with direct.watch_tree("h", start_revision=old.revision) as watch:
        assert summary(drain(watch, 2)) == [("put", "h/a", b"1"), ("put", "h/b", b"1")]
        assert watch.get(timeout=0.3) is None
        direct.delete("h/b")
        assert summary(drain(watch, 1)) == [("delete", "h/b", None)]


def test_delete_tree_is_one_event_in_etcd_and_a_delete_per_key_in_a_watch(direct: Etcd2Store) -> None:
    for key in ("t/a", "t/b/c", "t/b/d", "t"):
        direct.put(key, b"")
    with direct.watch_tree("") as tree, direct.watch("t/b/c") as one:
        drain(tree, 4)
        drain(one, 1)
        direct.delete_tree("t/b")
        events = drain(tree, 2)
        assert summary(events) == [("delete", "t/b/c", None), ("delete", "t/b/d", None)]
        assert events[0].revision == events[1].revision
        assert summary(drain(one, 1)) == [("delete", "t/b/c", None)]
        assert tree.get(timeout=0.3) is None


def test_a_revision_out_of_etcds_range_matches_no_key(direct: Etcd2Store) -> None:
    pair = direct.put("n", b"1")
    for revision in (0, -1, 2**64, 2**70):
        with pytest.raises(coord.KeyModified):
            direct.atomic_put("n", b"2", coord.KVPair("n", b"1", revision, pair.created))
        with pytest.raises(coord.KeyModified):
            direct.atomic_delete("n", coord.KVPair("n", b"1", revision, pair.created))
    with pytest.raises(coord.KeyNotFound):
        direct.atomic_put("absent", b"2", coord.KVPair("absent", b"1", 2**70, 1))
    with direct.watch("n", start_revision=2**70) as watch:
        direct.put("n", b"3")
        assert watch.get(timeout=0.5) is None  # a revision etcd will never reach: nothing yet, no error
    assert direct.get("n").created == pair.created


# -- leases ---------------------------------------------------------------------------------


def abandon(store: Etcd2Store) -> None:
    """The store's process dies: no renewal, no revoke (its lease nodes expire on etcd's side)."""
    store._keeper.close()
    store._close()


def test_a_dead_leases_keys_are_hidden_from_readers_and_deleted(
    opened: Callable[..., Etcd2Store], server: tuple[str, int], tag: str
) -> None:
    owner, reader, watcher = opened(), opened(), opened()
    lease = owner.lease(2)
    owner.put("l/a", b"a", lease=lease)
    owner.put("l/b", b"b", lease=lease)
    owner.put("l/plain", b"p")
    watch = watcher.watch_tree("l")
    assert len(drain(watch, 3)) == 3
    assert len(reader.list("l")) == 3
    abandon(owner)
    events = drain(watch, 2, timeout=lease.ttl + 3)
    assert sorted(summary(events)) == [("delete", "l/a", None), ("delete", "l/b", None)]
    assert [pair.key for pair in reader.list("l")] == ["l/plain"]
    assert not reader.exists("l/a")
    assert raw(server, "GET", f"/coord/kv/{tag}/l/=a")[0] == 404, "the leftover is deleted on the server too"
    watch.close()


def test_a_reader_alone_hides_and_deletes_a_dead_leases_key(
    opened: Callable[..., Etcd2Store], server: tuple[str, int], tag: str
) -> None:
    owner, reader = opened(), opened()
    lease = owner.lease(1)
    owner.put("alone", b"", lease=lease)
    assert reader.exists("alone")
    abandon(owner)
    wait_for(lambda: not reader.exists("alone"), lease.ttl + 3, "the key went with its lease")
    wait_for(lambda: raw(server, "GET", f"/coord/kv/{tag}/=alone")[0] == 404, 5, "the reader deleted the leftover")


def test_writes_treat_a_leftover_as_absent(
    opened: Callable[..., Etcd2Store], server: tuple[str, int], tag: str
) -> None:
    owner, writer = opened(), opened()
    lease = owner.lease(1)
    first = owner.put("c", b"", lease=lease)
    also = owner.put("p", b"", lease=lease)
    swapped = owner.put("s", b"", lease=lease)
    # etcd drops the lease node behind everyone's back; the keys stay on the server, as leftovers.
    owner._keeper.close()
    raw(server, "DELETE", f"/coord/leases/{lease.id:020d}")
    owner._close()
    wait_for(lambda: not writer.exists("c"), 10, "the lease's end is known")
    created = writer.atomic_put("c", b"mine", None)
    assert created.created > first.created
    put = writer.put("p", b"mine")
    assert put.created > also.created
    with pytest.raises(coord.KeyNotFound):
        writer.atomic_put("s", b"mine", swapped)


def test_revoke_deletes_the_lease_node_then_its_keys(direct: Etcd2Store, server: tuple[str, int]) -> None:
    lease = direct.lease(5)
    direct.put("r", b"", lease=lease)
    assert raw(server, "GET", f"/coord/leases/{lease.id:020d}")[0] == 200
    lease.revoke()
    assert raw(server, "GET", f"/coord/leases/{lease.id:020d}")[0] == 404
    assert not direct.exists("r")


def test_a_lease_etcd_dropped_is_found_lost_at_the_next_renewal(direct: Etcd2Store, server: tuple[str, int]) -> None:
    lease = direct.lease(3)
    direct.put("d", b"", lease=lease)
    raw(server, "DELETE", f"/coord/leases/{lease.id:020d}")
    assert lease.lost.wait(lease.ttl)
    with pytest.raises(coord.LeaseExpired):
        direct.put("d", b"", lease=lease)
    wait_for(lambda: not direct.exists("d"), 5, "its keys went with it")


def test_ttls_are_whole_seconds_rounded_up(direct: Etcd2Store) -> None:
    assert direct.lease(0.2).ttl == 1.0
    assert direct.lease(2.5).ttl == 3.0
    direct.put("t", b"", ttl=0.2)
    time.sleep(0.5)
    assert direct.exists("t"), "a ttl is rounded up, never down"


def test_a_waiter_deletes_its_predecessors_lease_once_it_expired(opened: Callable[..., Etcd2Store]) -> None:
    owner, waiter = opened(), opened()
    lease = owner.lease(3)
    owner.put("pred", b"", lease=lease)
    with waiter.watch("pred") as watch:
        drain(watch, 1)
        time.sleep(0.6)  # past the first read of the lease
        abandon(owner)
        deadline = lease.deadline
        event = watch.get(timeout=lease.ttl + 3)
        late = owner.clock.now() - deadline
    assert event is not None and event.type == "delete"
    assert waiter._expiries.deleted == 1, "the waiter, not etcd's sweep, ended the lease"
    assert late < 0.4, f"the key went {late:.3f} s after its holder's deadline"


def test_a_watched_key_of_a_live_lease_stays(opened: Callable[..., Etcd2Store]) -> None:
    owner, waiter = opened(), opened()
    lease = owner.lease(2)
    owner.put("live", b"", lease=lease)
    with waiter.watch("live") as watch:
        drain(watch, 1)
        assert watch.get(timeout=3 * lease.ttl) is None
    assert waiter._expiries.deleted == 0 and lease.alive


# -- lost answers ---------------------------------------------------------------------------


def lose_next(
    store: Etcd2Store, monkeypatch: pytest.MonkeyPatch, method: str, *, applied: bool = True, **query: str
) -> list[bool]:
    """The next ``method`` request whose query has ``query`` is applied (unless not ``applied``), but its answer is lost."""
    real = store._http.request
    lost: list[bool] = []

    def request(verb: str, path: str, params: dict[str, str] | None = None, *args: Any, **kwargs: Any) -> Any:
        chosen = not lost and verb == method and all((params or {}).get(k) == v for k, v in query.items())
        if chosen and not applied:
            lost.append(True)
            raise Transient("injected: the request never arrived")
        answer = real(verb, path, params, *args, **kwargs)
        if chosen:
            lost.append(True)
            raise Transient("injected: the answer was lost")
        return answer

    monkeypatch.setattr(store._http, "request", request)
    return lost


def test_a_create_whose_answer_was_lost_is_not_reported_as_key_exists(
    direct: Etcd2Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = lose_next(direct, monkeypatch, "PUT", prevExist="false")
    created = direct.atomic_put("once", b"1", None)
    assert lost and created == direct.get("once")


def test_a_swap_whose_answer_was_lost_succeeds(direct: Etcd2Store, monkeypatch: pytest.MonkeyPatch) -> None:
    first = direct.put("cas", b"1")
    lost = lose_next(direct, monkeypatch, "PUT", prevIndex=str(first.revision))
    swapped = direct.atomic_put("cas", b"2", first)
    assert lost and swapped == direct.get("cas") and swapped.value == b"2"


def test_a_swap_that_lost_to_another_writer_is_still_a_conflict(
    direct: Etcd2Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = direct.put("cas", b"1")
    direct.put("cas", b"other")
    lost = lose_next(direct, monkeypatch, "PUT", applied=False)  # so the attempt that answers is a retry
    with pytest.raises(coord.KeyModified):
        direct.atomic_put("cas", b"2", first)
    assert lost
    monkeypatch.undo()
    lose_next(direct, monkeypatch, "PUT", applied=False)
    with pytest.raises(coord.KeyExists):
        direct.atomic_put("cas", b"2", None)
    assert direct.get("cas").value == b"other"


def test_deletes_whose_answer_was_lost(direct: Etcd2Store, monkeypatch: pytest.MonkeyPatch) -> None:
    direct.put("d1", b"")
    pair = direct.put("d2", b"")
    lose_next(direct, monkeypatch, "DELETE")
    direct.delete("d1")  # no KeyNotFound: the retry finds it gone and takes that as its own doing
    monkeypatch.undo()
    lose_next(direct, monkeypatch, "DELETE")
    direct.atomic_delete("d2", pair)
    assert direct.list("") == []


# -- endpoints, secrets, bad answers ------------------------------------------------------


def test_a_dead_endpoint_in_the_url_is_passed_over(server: tuple[str, int], tag: str) -> None:
    with Proxy(server) as dead:
        dead.refuse()
        with coord.connect(f"etcd2://127.0.0.1:{dead.port},{server[0]}:{server[1]}?prefix={tag}") as store:
            for number in range(5):
                store.put("k", str(number).encode())
            assert store.get("k").value == b"4"


def test_the_store_moves_to_the_next_endpoint_when_its_own_goes_away(server: tuple[str, int], tag: str) -> None:
    with (
        Proxy(server) as one,
        Proxy(server) as two,
        coord.connect(f"etcd2://127.0.0.1:{one.port},127.0.0.1:{two.port}?prefix={tag}") as store,
    ):
        assert isinstance(store, Etcd2Store)
        watch = store.watch_tree("f")
        store.put("f/1", b"1")
        assert summary(drain(watch, 1)) == [("put", "f/1", b"1")]
        one.refuse()  # the first endpoint is the one in use
        one.cut()
        for number in range(2, 6):  # no error reaches the caller: only latency
            store.put(f"f/{number}", str(number).encode())
        assert [pair.key for pair in store.list("f")] == [f"f/{n}" for n in range(1, 6)]
        events = drain(watch, 4, timeout=30)
        assert summary(events) == [("put", f"f/{n}", str(n).encode()) for n in range(2, 6)]
        assert watch.get(timeout=0.5) is None, "an event was delivered twice"
        watch.close()


def test_a_watch_that_cannot_reconnect_ends_with_store_unavailable(proxy: Proxy, tag: str) -> None:
    with coord.connect(f"etcd2://127.0.0.1:{proxy.port}?prefix={tag}&watch_retry=1") as store:
        watch = store.watch("w")
        proxy.refuse()
        proxy.cut()
        started = time.monotonic()
        with pytest.raises(coord.StoreUnavailable) as info:
            watch.get(timeout=30)
        assert time.monotonic() - started < 10
        assert info.value.backend == "etcd2" and info.value.key == "w"


def test_a_password_is_never_shown(server: tuple[str, int], tag: str) -> None:
    secret = "s3cr3t-Pw"
    with coord.connect(f"etcd2://alice:{secret}@{server[0]}:{server[1]}?prefix={tag}") as store:
        assert secret not in repr(store) and "alice:***@" in store.describe()
    with Proxy(server) as dead:
        dead.refuse()
        with pytest.raises(coord.StoreUnavailable) as info:
            coord.connect(f"etcd2://alice:{secret}@127.0.0.1:{dead.port}", timeout=0.5)
        shown = "".join(traceback.format_exception(info.value))  # its message, and every cause's
        assert secret not in shown and "alice:***@" in shown
    for url in (f"etcd2://alice:{secret}@127.0.0.1:notaport", f"etcd2://alice:{secret}@127.0.0.1:1?colour=red"):
        with pytest.raises(coord.ConfigurationError) as refused:
            coord.connect(url)
        assert secret not in "".join(traceback.format_exception(refused.value))


def test_tls_options_are_checked_before_anything_is_sent(server: tuple[str, int]) -> None:
    with pytest.raises(coord.ConfigurationError, match="tls_ca"):
        coord.connect(f"etcd2s://{server[0]}:{server[1]}?tls_ca=/nonexistent/ca.pem")
    with pytest.raises(coord.ConfigurationError, match="tls_cert"):
        coord.connect(f"etcd2://{server[0]}:{server[1]}", tls_key=__file__)
    with pytest.raises(coord.StoreUnavailable):  # a TLS handshake with a plain-HTTP server fails as a connection
        coord.connect(f"etcd2s://{server[0]}:{server[1]}", timeout=0.5)


class _NotEtcd(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[list[tuple[int, bytes]]] = []

    def do_GET(self) -> None:
        status, body = self.answers[0]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b"<html>not json</html>", coord.CoordError),
        (200, b"[1, 2]", coord.CoordError),
        (404, b"not found", coord.CoordError),
        (401, b'{"message": "Insufficient credentials"}', coord.ConfigurationError),
        (401, b'{"errorCode": 110, "message": "The request requires user authentication"}', coord.ConfigurationError),
        (503, b"<html>busy</html>", coord.StoreUnavailable),
        (500, b'{"errorCode": 300, "message": "Raft Internal Error"}', coord.StoreUnavailable),
        (400, b'{"errorCode": 209, "message": "Invalid field"}', coord.CoordError),
    ],
)
def test_answers_that_are_not_etcds_give_coord_errors(status: int, body: bytes, error: type[Exception]) -> None:
    handler = type("Handler", (_NotEtcd,), {"answers": [(status, body)]})
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    try:
        with pytest.raises(error) as info:
            coord.connect(f"etcd2://127.0.0.1:{fake.server_address[1]}", timeout=0.5)
        assert type(info.value).__module__.startswith("coord")
    finally:
        fake.shutdown()
        fake.server_close()


# -- a three-member cluster loses the member a Store uses ------------------------------------


@pytest.fixture
def cluster() -> Iterator[list[Any]]:
    """The three etcd members of scripts/servers.py, started for the test and stopped (data removed) after it."""
    members = servers.CLUSTER
    launched = [member.launch() for member in members]
    try:
        for member, process in zip(members, launched, strict=True):
            member.wait_ready(60.0, process)
        yield members
    finally:
        for member in members:
            member.stop()
            shutil.rmtree(member.dir, ignore_errors=True)


def test_a_cluster_loses_the_member_the_store_uses(cluster: list[Any], tag: str) -> None:
    url = "etcd2://" + ",".join(f"127.0.0.1:{member.port}" for member in cluster) + f"?prefix={tag}&timeout=10"
    with coord.connect(url) as store, coord.connect(url) as other:
        assert isinstance(store, Etcd2Store)
        watch = store.watch_tree("m")
        lock = coord.Lock("l", store=store, ttl=5)
        assert lock.acquire(timeout=10)
        lock.release()
        store.put("m/0", b"0")
        assert summary(drain(watch, 1)) == [("put", "m/0", b"0")]
        victim = cluster[store._http.members.pick()]
        victim.kill()
        killed = time.monotonic()
        for number in range(1, 6):  # no error reaches the caller: only latency
            store.put(f"m/{number}", str(number).encode())
        moved = time.monotonic() - killed
        assert lock.acquire(timeout=30)
        lock.release()
        events = drain(watch, 5, timeout=30)
        assert summary(events) == [("put", f"m/{n}", str(n).encode()) for n in range(1, 6)]
        assert watch.get(timeout=0.5) is None, "an event was delivered twice"
        assert [pair.key for pair in other.list("m")] == [f"m/{n}" for n in range(6)]
        watch.close()
    print(f"{victim.name} killed: five puts took {moved:.2f} s")
