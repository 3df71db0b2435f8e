"""The sqlite store's own guarantees, beyond the conformance suite.

Wake-ups instead of polls, a dead owner's leases reaped at once (and a
stopped one's kept until their ttl), deadlines that no wall-clock step moves
(with a real second clock: ``faketime``), a reboot voiding every deadline,
a change log bounded in bytes, re-syncs that report deletes, bad input,
fork, and the migration from the first layout.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import sqlite3
import time
import traceback
from pathlib import Path

import pytest

import coord
from coord.backends.sqlite import SQLiteStore
from coord.backends.sqlite._store import MAX_REVISION
from coord.testing.conformance._child import Child
from coord.testing.conformance._events import drain
from coord.testing.conformance._events import next_event as wait_for

REQUIRE_TOOLS = os.environ.get("COORD_REQUIRE_SERVERS") == "1"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path / 'coord.db'}"


def sqlite_store(store: coord.Store) -> SQLiteStore:
    assert isinstance(store, SQLiteStore)
    return store


# -- wake-ups --------------------------------------------------------------------------------

WATCHER = """
import json, sys, coord
store = coord.connect(sys.argv[1])
with store.watch_tree(sys.argv[2]) as watch:
    print("ready", flush=True)
    for event in watch:
        print("event", json.dumps([event.type, event.key, event.revision], separators=(",", ":")), flush=True)
"""


def test_a_change_wakes_another_process_at_once(url: str) -> None:
    """A put reaches another process's watch through the kernel's wake-up, not a poll."""
    child = Child.from_code(WATCHER, url + "?poll_interval=60", "k")  # no poll to fall back on
    try:
        child.expect("ready")
        with coord.connect(url) as store:
            took = []
            for i in range(20):
                start = time.monotonic()
                store.put("k/x", str(i).encode())
                child.expect("event")
                took.append(time.monotonic() - start)
        assert sorted(took)[len(took) // 2] < 0.05, took
    finally:
        child.close()


IDLE = """
import sys, time, coord
with coord.connect(sys.argv[1]) as store, store.watch("idle"), store.watch_tree("idle-tree"):
    time.sleep(0.3)
    used = []
    for _ in range(3):
        start = time.process_time()
        time.sleep(1.0)
        used.append(time.process_time() - start)
print("USED", *used, flush=True)
"""


def test_an_idle_watch_costs_next_to_nothing(url: str) -> None:
    # In a process of its own (the test process's other threads would count), the least of three
    # windows (a loaded machine only adds).
    child = Child.from_code(IDLE, url)
    try:
        used = [float(word) for word in child.expect("USED", 60)[1:]]
    finally:
        child.close()
    assert min(used) < 0.02, f"{min(used):.1%} of a core for two idle watches (windows: {used})"


# -- liveness: flock -----------------------------------------------------------------------

HOLDER = """
import sys, time, coord
store = coord.connect(sys.argv[1])
lease = store.lease(float(sys.argv[2]))
store.put("owned/key", b"mine", lease=lease)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_killed_owner_releases_its_leases_at_once_whatever_the_ttl(url: str) -> None:
    """SIGKILL: the kernel drops the owner's flock and wakes the watchers; its keys go within milliseconds."""
    child = Child.from_code(HOLDER, url, "600")
    with coord.connect(url) as store:
        try:
            child.expect("ready")
            with store.watch("owned/key") as watch:
                drain(watch, 1)
                killed = time.monotonic()
                child.signal(signal.SIGKILL)
                wait_for(watch, lambda e: e.type == "delete", timeout=10)
                took = time.monotonic() - killed
        finally:
            child.close()
    assert took < 0.5, f"the dead owner's key lived {took:.3f}s (ttl 600 s)"


def test_a_writer_that_meets_a_dead_owners_key_reaps_it(url: str) -> None:
    """Without any watch: a create-only write that finds a dead owner's key probes it and takes its place."""
    child = Child.from_code(HOLDER, url, "600")
    with coord.connect(url) as store:
        try:
            child.expect("ready")
            with pytest.raises(coord.KeyExists):
                store.atomic_put("owned/key", b"mine now", None)
            child.signal(signal.SIGKILL)
            child.wait(10)
            assert store.atomic_put("owned/key", b"mine now", None).value == b"mine now"
        finally:
            child.close()


def test_a_stopped_owner_keeps_its_leases_until_their_ttl(url: str) -> None:
    ttl = 1.5
    child = Child.from_code(HOLDER, url, str(ttl))
    with coord.connect(url) as store:
        try:
            child.expect("ready")
            with store.watch("owned/key") as watch:
                drain(watch, 1)
                stopped = time.monotonic()
                child.signal(signal.SIGSTOP)
                wait_for(watch, lambda e: e.type == "delete", timeout=ttl + 10)
                took = time.monotonic() - stopped
        finally:
            child.signal(signal.SIGCONT)
            child.close()
    assert ttl * 2 / 3 - 0.05 <= took <= ttl + 1.0, took


def test_the_lock_file_of_a_process_that_died_unseen_goes_with_its_last_lease(url: str, tmp_path: Path) -> None:
    """Nobody watched when it died: its lease expires at its ttl, and the reap removes its lock file too."""
    owners = tmp_path / "coord.db-coord" / "owners"
    child = Child.from_code(HOLDER, url, "0.5")
    try:
        child.expect("ready")
        assert len(list(owners.iterdir())) == 1
        child.kill()
    finally:
        child.close()
    with coord.connect(url) as store:
        time.sleep(0.6)
        store.put("any", b"")  # a write reaps what is due
        assert not store.exists("owned/key")
        assert list(owners.iterdir()) == []


def test_a_closed_store_leaves_no_lock_file(url: str, tmp_path: Path) -> None:
    with coord.connect(url) as store:
        store.lease(5)
        assert len(list((tmp_path / "coord.db-coord" / "owners").iterdir())) == 1
    assert list((tmp_path / "coord.db-coord" / "owners").iterdir()) == []


# -- clocks ------------------------------------------------------------------------------------

SHIFTED = """
import sys, time, coord
store = coord.connect(sys.argv[1])
print("wall", time.time(), flush=True)
if sys.argv[2] == "take":
    try:
        store.atomic_put("owned/key", b"thief", None)
        print("result took", flush=True)
    except coord.KeyExists:
        print("result refused", flush=True)
else:
    with store.watch("owned/key") as watch:
        for event in watch:
            if event.type == "delete":
                print("deleted", time.monotonic(), flush=True)
                break
store.close()
"""


def faketime(code: str, shift: str, *args: str) -> Child:
    """A child whose wall clock is shifted by ``shift`` (libfaketime); its monotonic and boot clocks are not."""
    library = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if shutil.which("faketime") is None or not library:
        if REQUIRE_TOOLS:
            pytest.fail("faketime is not installed (scripts/servers.py install installs it)")
        pytest.skip("needs faketime (Debian package faketime)")
    env = {"LD_PRELOAD": library[0], "FAKETIME": shift, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    return Child.from_code(code, *args, env=env)


def test_a_wall_clock_an_hour_ahead_cannot_reap_a_live_holder(url: str) -> None:
    """Deadlines are on CLOCK_BOOTTIME: a process whose wall clock jumped cannot take a live lease's key."""
    holder = Child.from_code(HOLDER, url, "2")
    try:
        holder.expect("ready")
        thief = faketime(SHIFTED, "+1h", url, "take")
        try:
            assert float(thief.expect("wall")[1]) > time.time() + 3000, "faketime did not shift the child's clock"
            assert thief.expect("result")[1] == "refused"
        finally:
            thief.close()
        with coord.connect(url) as store:
            assert store.get("owned/key").value == b"mine"
    finally:
        holder.close()


def test_expiry_comes_on_time_for_a_process_whose_wall_clock_is_an_hour_behind(url: str) -> None:
    """A stopped holder's lease expires at its ttl, as a process with a shifted wall clock sees it."""
    ttl = 1.5
    holder = Child.from_code(HOLDER, url, str(ttl))
    try:
        holder.expect("ready")
        observer = faketime(SHIFTED, "-1h", url, "watch")
        try:
            assert float(observer.expect("wall")[1]) < time.time() - 3000
            time.sleep(0.3)  # the observer's watch is open
            stopped = time.monotonic()
            holder.signal(signal.SIGSTOP)
            deleted = float(observer.expect("deleted", ttl + 10)[1])
        finally:
            observer.close()
        assert deleted - stopped <= ttl + 1.0, f"expiry came {deleted - stopped:.2f}s after the stop (ttl {ttl})"
    finally:
        holder.signal(signal.SIGCONT)
        holder.close()


def test_a_reboot_expires_every_lease_and_ttl_key(url: str, tmp_path: Path) -> None:
    """Another boot id in the file: the boot clock started again, so every deadline is void."""
    with coord.connect(url) as store:
        lease = store.lease(600)
        store.put("leased", b"", lease=lease)
        store.put("ttl", b"", ttl=600)
        store.put("plain", b"")
        revision = store.get("plain").revision
        sqlite_store(store)._owner.forget()  # as if the process had gone with the old boot
    db = sqlite3.connect(tmp_path / "coord.db")
    db.execute("UPDATE state SET boot = 'an-earlier-boot'")
    db.commit()
    db.close()
    with coord.connect(url) as store:
        assert [pair.key for pair in store.list("")] == ["plain"]
        with store.watch_tree("", start_revision=revision + 1) as watch:
            assert sorted((e.type, e.key) for e in drain(watch, 2)) == [("delete", "leased"), ("delete", "ttl")]


# -- the change log ---------------------------------------------------------------------------


def test_the_change_log_is_bounded_in_bytes_and_the_file_shrinks_back(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'coord.db'}?history_bytes=262144"
    value = os.urandom(4096)
    with coord.connect(url) as store:
        for i in range(2000):  # 8 MiB of history, for 40 KiB of live data
            store.put(f"k/{i % 10}", value)
        size = (tmp_path / "coord.db").stat().st_size
        assert size < 2 << 20, f"{size} bytes on disk for 40 KiB of live data"
        raw = sqlite_store(store)._here().conn
        logged = raw.execute("SELECT sum(length(key) + length(coalesce(value, x''))) FROM changes").fetchone()[0]
        assert logged <= 262144 * 17 // 16
        revision = store.get("k/0").revision
        with store.watch("k/0", start_revision=1) as watch:  # from before the log: a re-sync
            assert [(e.type, e.revision) for e in drain(watch, 1)] == [("put", revision)]
            assert watch.get(0.2) is None


RESYNC_WATCHER = """
import json, sys, coord
store = coord.connect(sys.argv[1])
with store.watch_tree("t") as watch:
    for event in watch:
        print("event", json.dumps([event.type, event.key], separators=(",", ":")), flush=True)
"""


def test_a_watch_that_fell_behind_the_log_reports_every_delete(tmp_path: Path) -> None:
    """Re-sync after the log was trimmed past a stopped watcher: deletes for what went, puts for what changed."""
    url = f"sqlite://{tmp_path / 'coord.db'}?history=4"
    child = Child.from_code(RESYNC_WATCHER, url)
    try:
        with coord.connect(url) as store:
            store.put("t/kept", b"1")
            store.put("t/gone", b"1")
            store.put("t/changed", b"1")
            seen = {tuple(json.loads(child.expect("event")[1])) for _ in range(3)}
            assert seen == {("put", "t/kept"), ("put", "t/gone"), ("put", "t/changed")}
            child.signal(signal.SIGSTOP)
            store.delete("t/gone")
            store.put("t/changed", b"2")
            store.put("t/new", b"1")
            for i in range(100):  # far past the log's 4 changes
                store.put("elsewhere", str(i).encode())
            child.signal(signal.SIGCONT)
            got = {tuple(json.loads(child.expect("event")[1])) for _ in range(3)}
            assert got == {("delete", "t/gone"), ("put", "t/changed"), ("put", "t/new")}
            store.put("t/after", b"1")
            assert json.loads(child.expect("event")[1]) == ["put", "t/after"], "t/kept was not re-sent"
    finally:
        child.signal(signal.SIGCONT)
        child.close()


# -- bad input ------------------------------------------------------------------------------------


NOT_A_DATABASE = """
import os, sys, coord
open_fds = lambda: len(os.listdir("/proc/self/fd"))
coord.connect("sqlite://" + sys.argv[1]).close()  # imports and module state settled
before = open_fds()
for _ in range(3):
    try:
        coord.connect("sqlite://" + sys.argv[2])
    except coord.ConfigurationError as exc:
        print("REFUSED", "not a coord sqlite store" in str(exc), flush=True)
print("FDS", before, open_fds(), flush=True)
"""


def test_a_file_that_is_not_a_database_is_a_configuration_error(tmp_path: Path) -> None:
    # Descriptors are counted in a process of its own: the test process's other threads open and close theirs.
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not an SQLite database, whatever its name says" * 100)
    child = Child.from_code(NOT_A_DATABASE, str(tmp_path / "warm.db"), str(path))
    try:
        for _ in range(3):
            assert child.expect("REFUSED", 60)[1:] == ["True"], "not refused as not a coord sqlite store"
        before, after = (int(word) for word in child.expect("FDS", 60)[1:])
    finally:
        child.close()
    assert after == before, "a descriptor leaked"


@pytest.mark.parametrize("interval", ["0", "-1", "nan", "inf", "1e9", "0.00001"])
def test_a_poll_interval_out_of_bounds_is_refused(tmp_path: Path, interval: str) -> None:
    with pytest.raises(coord.ConfigurationError, match="poll_interval"):
        coord.connect(f"sqlite://{tmp_path / 'coord.db'}?poll_interval={interval}")


@pytest.mark.parametrize("option", ["history=0", "history=-5", "history_bytes=0", "timeout=nan", "timeout=-1"])
def test_other_options_out_of_bounds_are_refused(tmp_path: Path, option: str) -> None:
    with pytest.raises(coord.ConfigurationError):
        coord.connect(f"sqlite://{tmp_path / 'coord.db'}?{option}")


def test_an_in_memory_database_is_refused_with_a_way_out() -> None:
    with pytest.raises(coord.ConfigurationError, match="memory://"):
        coord.connect("sqlite://:memory:")


@pytest.mark.parametrize("start", [2**63 - 1, 2**63, 2**64, 10**30])
def test_a_start_revision_past_any_revision_waits_and_breaks_nothing(url: str, start: int) -> None:
    with coord.connect(url) as store:
        with store.watch("k", start_revision=start) as far, store.watch("k") as near:
            store.put("k", b"v")
            assert drain(near, 1)[0].type == "put"
            assert far.get(0.2) is None
        store.put("k", b"again")
        with store.watch("k") as watch:
            assert drain(watch, 1)[0].value == b"again"
    assert start > MAX_REVISION or start == MAX_REVISION


def test_keys_at_the_top_of_unicode_are_listed(url: str) -> None:
    """The root's listing has no upper bound (it was U+10FFFF, which hid keys at the top)."""
    top = ["\U0010fffd", "\U0010fffda/b", "a", "\ufffd"]
    with coord.connect(url) as store:
        for key in top:
            store.put(key, b"")
        assert [pair.key for pair in store.list("")] == sorted(top)
        assert [pair.key for pair in store.list("\U0010fffda")] == ["\U0010fffda/b"]


# -- fork -------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() with threads: exactly the case under test
def test_after_fork_the_child_opens_its_own_store_and_the_parent_carries_on(url: str, tmp_path: Path) -> None:
    """The inherited Store refuses (Store._forsake); a new one works, with SQLite locks of its own."""
    with coord.connect(url) as store:
        lease = store.lease(30)
        store.put("parent", b"", lease=lease)
        watch = store.watch("shared")
        parent_ready, child_ready = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                signal.alarm(20)  # a child that hangs dies, and the parent sees it
                with pytest.raises(coord.StoreClosed, match="fork"):
                    store.put("child", b"")
                with coord.connect(url) as own:
                    own.put("child", b"hello")
                    assert own.get("parent").lease == lease.id
                    with own.watch("shared") as mine:
                        assert mine.get(0.2) is None
                        os.write(child_ready, b"1")
                        event = mine.get(10)
                        assert event is not None and event.value == b"from parent"
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(child_ready)
        if os.read(parent_ready, 1):  # nothing: the child failed before it was ready
            store.put("shared", b"from parent")
        os.close(parent_ready)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert drain(watch, 1)[0].value == b"from parent", "the parent's watch still works"
        assert store.get("child").value == b"hello"
        assert store.get("parent").lease == lease.id, "the child's exit did not touch the parent's lease"
        owners = tmp_path / "coord.db-coord" / "owners"
        assert len(list(owners.iterdir())) == 1, "the child's own store removed its lock file"
        watch.close()


# -- the first layout ----------------------------------------------------------------------------------

FIRST_LAYOUT = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('revision', 7), ('compacted', 0);
CREATE TABLE kv (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, revision INTEGER NOT NULL, created INTEGER NOT NULL,
    lease INTEGER, expires REAL
);
CREATE INDEX kv_lease ON kv (lease) WHERE lease IS NOT NULL;
CREATE INDEX kv_expires ON kv (expires) WHERE expires IS NOT NULL;
CREATE TABLE changes (revision INTEGER PRIMARY KEY, type TEXT NOT NULL, key TEXT NOT NULL, value BLOB);
CREATE TABLE leases (id INTEGER PRIMARY KEY AUTOINCREMENT, ttl REAL NOT NULL, expires REAL NOT NULL);
CREATE INDEX leases_expires ON leases (expires);
"""


def test_a_store_of_the_first_layout_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "coord.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(FIRST_LAYOUT)
    now = time.time()
    db.execute("INSERT INTO leases VALUES (3, 600, ?)", (now + 600,))
    db.execute("INSERT INTO kv VALUES ('plain', x'01', 5, 5, NULL, NULL)")
    db.execute("INSERT INTO kv VALUES ('leased', x'02', 6, 6, 3, NULL)")
    db.execute("INSERT INTO kv VALUES ('ttl', x'03', 7, 7, NULL, ?)", (now + 1.0,))
    db.commit()
    db.close()
    with coord.connect(f"sqlite://{path}") as store:
        assert [(p.key, p.revision) for p in store.list("")] == [("leased", 6), ("plain", 5), ("ttl", 7)]
        assert store.put("new", b"").revision == 8
        time.sleep(1.2)  # the ttl key's wall-clock deadline, carried over to the boot clock
        assert not store.exists("ttl")
        assert store.lease(5).id > 3
