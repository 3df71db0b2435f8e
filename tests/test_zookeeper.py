"""What the ZooKeeper backend adds to the shared suite: its own mapping onto znodes.

Runs when COORD_TEST_ZOOKEEPER is set (or fails under COORD_REQUIRE_SERVERS=1).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

import coord
from tests.conftest import REQUIRE_SERVERS
from tests.helpers import Child, drain, wait_for

URL = os.environ.get("COORD_TEST_ZOOKEEPER")
pytestmark = pytest.mark.skipif(not URL and not REQUIRE_SERVERS, reason="COORD_TEST_ZOOKEEPER is not set")


@pytest.fixture
def url() -> str:
    if not URL:
        pytest.fail("COORD_REQUIRE_SERVERS=1 but COORD_TEST_ZOOKEEPER is not set")
    return f"{URL}?prefix=z{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(url: str) -> Iterator[coord.Store]:
    with coord.connect(url) as opened:
        yield opened


def test_keys_zookeeper_would_refuse_are_escaped(store: coord.Store) -> None:
    keys = ["emoji/😀", "c1\x85control", "private\ue000use", "100%/=eq/~tilde", "zookeeper/x"]
    for key in keys:
        store.put(key, key.encode())
    assert [pair.key for pair in store.list("")] == sorted(keys)
    assert all(store.get(key).value == key.encode() for key in keys)


def test_a_lease_ttl_below_the_servers_minimum_is_rounded_up(store: coord.Store) -> None:
    with store.lease(0.2) as lease:
        assert lease.ttl == 1.0  # the test server's minSessionTimeout


def test_a_watcher_reaps_a_ttl_key_whose_writer_is_gone(url: str, store: coord.Store) -> None:
    with coord.connect(url) as writer:
        writer.put("t", b"v", ttl=1.0)
    with store.watch("t") as watch:
        drain(watch, 1)
        wait_for(watch, lambda event: event.type == "delete", timeout=3.0)
    assert not store.exists("t")


HOLDER = """
import coord
store = coord.connect()
store.put("k", b"old", lease=store.lease(1.0))
print("ready", flush=True)
input()
"""


def test_a_key_of_an_expired_session_can_be_created_again(url: str, store: coord.Store) -> None:
    """Nobody watched the key when its session expired: the first writer logs the delete before creating it."""
    child = Child(HOLDER, url)
    try:
        child.expect("ready")
        child.signal(signal.SIGKILL)
    finally:
        child.stop()
    deadline = time.monotonic() + 10
    while store.exists("k") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not store.exists("k")
    with store.watch("k") as watch:
        assert store.atomic_put("k", b"new", None).value == b"new"
        events = drain(watch, 2)
    assert [(event.type, event.value) for event in events] == [("delete", None), ("put", b"new")]
