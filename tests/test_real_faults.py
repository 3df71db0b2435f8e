"""Recipes against real servers that are killed, cut off, stalled and paused (etcd, ZooKeeper, Redis).

Child processes run the recipes as applications would: candidates campaign,
and while ``is_leader`` holds they write to a resource guarded by their
fencing token (``fenced_put``); workers take a lock, check ``holding``, write
under their token, release, and go again. Every child catches ``CoordError``
and carries on, so nothing is restarted: the recipes must recover by
themselves. Each child reports what it did, with ``time.monotonic()`` (one
clock for every process on the machine), and the test checks the whole
history afterwards:

* tokens strictly increase from leader to leader and from holder to holder;
* no one acted as leader (or holder) after a later leader (holder) was
  elected: every moment a child confirmed ``is_leader`` (``holding``) comes
  before the election (grant) of every later token;
* after the fault, the recipes make progress again.

Run them against the servers of scripts/servers.py::

    python3 scripts/servers.py start
    eval "$(python3 scripts/servers.py env)"
    pytest tests/test_real_faults.py

The three-member etcd cluster (etcd1..etcd3) is started by the test that
needs it and stopped after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import FAULT_CHILDREN, Child, Children, Proxy, server_of, servers
from tests.support.fault_children import TTL

RECOVERY = 90.0  # generous: a restarted ZooKeeper takes seconds to answer, CI machines are slow


# -- reading what the children did ------------------------------------------------------------------


def lines(child: Child, word: str) -> list[list[str]]:
    return [line.split() for line in list(child.output) if line.split()[:1] == [word]]


def count(children: list[Child], word: str, after: float = 0.0) -> int:
    """How many ``word`` lines the children printed about moments after ``after``."""
    return sum(1 for child in children for words in lines(child, word) if float(words[2]) > after)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, children: list[Child]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for child in children:
            if child.process.poll() is not None:
                raise AssertionError(f"a child exited, so it was not the recipes that recovered:\n{child.describe()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}\n{stacks(children)}")
        time.sleep(0.05)


def stacks(children: list[Child]) -> str:
    """What each child printed, and where each of its threads is now (SIGUSR1 makes it dump them)."""
    for child in children:
        child.signal(signal.SIGUSR1)
    time.sleep(1.0)
    return "\n".join(f"{child.describe()}\n--- stacks:\n" + "\n".join(child.errors[-150:]) for child in children)


def check_history(children: list[Child], elected: str, acted: str) -> int:
    """Tokens increase from one grant to the next, and nobody acted after a later token was granted.

    ``elected`` lines are ``WORD token when``; ``acted`` lines are ``WORD
    token checked``, where ``checked`` was taken just before ``is_leader`` (or
    ``holding``) was found true. Returns how many grants there were.
    """
    grants = sorted((float(w[2]), int(w[1])) for child in children for w in lines(child, elected))
    tokens = [token for _, token in grants]
    assert tokens == sorted(set(tokens)), f"[fencing] tokens in the order granted: {tokens}"
    for child in children:
        for words in lines(child, acted):
            token, checked = int(words[1]), float(words[2])
            later = [(when, other) for when, other in grants if other > token]
            if later:
                when, other = min(later)
                assert checked < when, (
                    f"[exclusion] token {token} confirmed at {checked:.3f}, after token {other} was granted "
                    f"at {when:.3f}\n{child.describe()}"
                )
    return len(grants)


def summary(children: list[Child]) -> str:
    """How often each kind of line came, for the log: shows what a run went through."""
    words = Counter(line.split()[0] for child in children for line in list(child.output) if line.split())
    return ", ".join(f"{word} {words[word]}" for word in sorted(words))


def spawn(children: Children, mode: str, url: str, name: str, *extra: str) -> Child:
    child = children.start([str(FAULT_CHILDREN), mode, url, name, str(TTL), *extra])
    child.expect("READY", 60)
    return child


def upstream(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return parts.hostname, parts.port


def through(url: str, proxy: Proxy) -> str:
    host, port = upstream(url)
    return url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}", 1)


# -- the server is killed and started again ---------------------------------------------------------


def test_recipes_recover_when_the_server_is_killed_and_restarted(
    server_backend: str, server_url: str, children: Children
) -> None:
    server = server_of(server_backend)
    candidates = [spawn(children, "candidate", server_url, "e") for _ in range(2)]
    workers = [spawn(children, "worker", server_url, "l") for _ in range(2)]
    everyone = candidates + workers
    wait_until(lambda: count(candidates, "ACTED") > 0 and count(workers, "WORKED") >= 4, 60, "work", everyone)
    killed = time.monotonic()
    server.kill()
    time.sleep(0.5)
    server.start()
    restarted = time.monotonic()
    wait_until(
        lambda: count(candidates, "ACTED", restarted) > 0 and count(workers, "WORKED", restarted) >= 4,
        RECOVERY,
        "leading and locking again after the restart",
        everyone,
    )
    print(
        f"{server_backend}: recovered {time.monotonic() - restarted:.1f} s after the restart ({restarted - killed:.1f} s down)"
    )
    children.close()
    print(f"{summary(everyone)}")
    check_history(candidates, "LEADER", "ACTED")
    check_history(workers, "HOLDING", "WORKED")


# -- one client's connection is cut, or stalled ------------------------------------------------------


def test_a_leader_whose_connection_is_cut_recovers(server_url: str, children: Children) -> None:
    with Proxy(upstream(server_url)) as proxy:
        leader, worker = (
            spawn(children, "candidate", through(server_url, proxy), "e"),
            spawn(children, "worker", through(server_url, proxy), "l"),
        )
        wait_until(lambda: count([leader], "ACTED") > 0, 60, "the proxied candidate leads", [leader, worker])
        candidates = [leader, spawn(children, "candidate", server_url, "e")]
        workers = [worker, spawn(children, "worker", server_url, "l")]
        everyone = candidates + workers
        wait_until(lambda: count(workers, "WORKED") >= 2, 60, "work", everyone)
        for _ in range(3):
            proxy.cut()  # connections reset; the clients reconnect through the proxy at once
            time.sleep(0.5)
        cut = time.monotonic()
        wait_until(
            lambda: count(candidates, "ACTED", cut) > 0 and count([worker], "WORKED", cut) >= 2,
            RECOVERY,
            "the cut-off clients working again",
            everyone,
        )
    children.close()
    print(f"{summary(everyone)}")
    check_history(candidates, "LEADER", "ACTED")
    check_history(workers, "HOLDING", "WORKED")


def test_a_leader_whose_connection_stalls_past_its_ttl_steps_down(
    server_backend: str, server_url: str, children: Children
) -> None:
    with Proxy(upstream(server_url)) as proxy:
        stalled = spawn(children, "candidate", through(server_url, proxy), "e", "--stale-write")
        wait_until(lambda: count([stalled], "ACTED") > 0, 60, "the proxied candidate leads", [stalled])
        other = spawn(children, "candidate", server_url, "e")
        proxy.stall()  # connections stay open, nothing gets through: a frozen network
        stall = time.monotonic()
        wait_until(lambda: count([other], "ACTED", stall) > 0, TTL + RECOVERY, "the other candidate leads", [other])
        proxy.flow()
        words = stalled.expect("LOST", RECOVERY)
        assert words[3] == "True", f"lost not set on the stalled leader: {words}"
        assert stalled.expect("STALE", RECOVERY)[2] == "rejected", "a write under the stale token got through"
    children.close()
    print(f"{server_backend}: {summary([stalled, other])}")
    check_history([stalled, other], "LEADER", "ACTED")


# -- the leader is paused (SIGSTOP) past its ttl ------------------------------------------------------


def test_a_paused_leader_sees_lost_and_its_stale_write_is_rejected(server_url: str, children: Children) -> None:
    paused = spawn(children, "candidate", server_url, "e", "--stale-write")
    paused.expect("LEADER", 60)
    other = spawn(children, "candidate", server_url, "e")
    paused.expect("ACTED", 30)
    paused.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    wait_until(lambda: count([other], "ACTED", stopped) > 0, TTL + 30, "the other candidate leads and writes", [other])
    paused.signal(signal.SIGCONT)
    resumed = time.monotonic()
    # On resuming, it acts as leader no more: the next thing it does is find the lease lost.
    words = paused.expect("LOST", 30)
    assert words[3] == "True", f"lost was not set: {words}"
    assert paused.expect("STALE", 30)[2] == "rejected", "the fence let a write under the stale token through"
    children.close()
    after = [w for w in lines(paused, "ACTED") if float(w[2]) > stopped and int(w[1]) == int(words[1])]
    assert not after, f"the paused leader acted after it was paused: {after}"
    print(f"paused {resumed - stopped:.1f} s; the other candidate took over meanwhile")
    check_history([paused, other], "LEADER", "ACTED")


# -- a three-member etcd cluster loses the member the clients talk to ---------------------------------


def connected_ports(pid: int) -> set[int]:
    """The remote ports of ``pid``'s established TCP connections (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "01" and fields[9] in inodes:  # ESTABLISHED
                    ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The three etcd members, started together for this module and stopped (data removed) after it."""
    members = servers.CLUSTER
    launched = [member.launch() for member in members]
    try:
        for member, process in zip(members, launched, strict=True):
            member.wait_ready(60.0, process)
        yield "etcd://" + ",".join(f"127.0.0.1:{member.port}" for member in members)
    finally:
        for member in members:
            member.stop()
            shutil.rmtree(member.dir, ignore_errors=True)


@pytest.mark.server("etcd")
def test_an_etcd_cluster_loses_the_member_its_clients_use(cluster: str, tmp_path: Path, children: Children) -> None:
    url = f"{cluster}?prefix=t{os.urandom(6).hex()}"
    candidates = [spawn(children, "candidate", url, "e") for _ in range(2)]
    workers = [spawn(children, "worker", url, "l") for _ in range(2)]
    everyone = candidates + workers
    wait_until(lambda: count(candidates, "ACTED") > 0 and count(workers, "WORKED") >= 4, 60, "work", everyone)
    by_port = {member.port: member for member in servers.CLUSTER}
    used = Counter(port for child in everyone for port in connected_ports(child.pid) if port in by_port)
    assert used, "the children hold no connection to any member"
    victim = by_port[used.most_common(1)[0][0]]
    victim.kill()
    killed = time.monotonic()
    try:
        wait_until(
            lambda: count(candidates, "ACTED", killed) > 0 and count(workers, "WORKED", killed) >= 4,
            RECOVERY,
            f"leading and locking again without {victim.name}",
            everyone,
        )
        moved = {port for child in everyone for port in connected_ports(child.pid) if port in by_port}
        assert victim.port not in moved
        print(f"{victim.name} killed; clients moved to {sorted(moved)} in {time.monotonic() - killed:.1f} s")
    finally:
        children.close()
    print(f"{summary(everyone)}")
    check_history(candidates, "LEADER", "ACTED")
    check_history(workers, "HOLDING", "WORKED")
