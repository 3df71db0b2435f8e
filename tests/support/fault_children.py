"""The child processes of tests/test_real_faults.py: a candidate and a lock worker that never give up.

    python fault_children.py candidate URL NAME TTL [--stale-write]
    python fault_children.py worker URL NAME TTL

Each line a child prints starts with a word and ends with ``time.monotonic()``
readings where order matters (the clock is the machine's, shared by every
process). A child catches ``CoordError`` and carries on, as an application
would, so that a test sees the recipes recover by themselves.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[2])]

import coord

TTL = 2.0  # etcd's minimum lease
PAUSE = 0.05  # between a child's actions


def say(*words: object) -> None:
    """One line, in one write: a child killed mid-line must not leave half a line (stdout is unbuffered)."""
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def fenced_put(store: coord.Store, key: str, token: int, value: bytes) -> bool:
    """Write ``value`` to ``key`` unless a holder with a higher fencing token already wrote there.

    The key holds ``b"<token>:<value>"`` of its last writer. The check and the
    write are one atomic step: the write is a compare-and-swap on the
    revision that was checked, so a newer holder cannot slip in between.
    """
    while True:
        try:
            current: coord.KVPair | None = store.get(key)
        except coord.KeyNotFound:
            current = None
        if current is not None and int(current.value.split(b":", 1)[0]) > token:
            return False  # a newer holder has written: ours is a stale token
        try:
            store.atomic_put(key, b"%d:%s" % (token, value), current)
            return True
        except (coord.KeyExists, coord.KeyModified, coord.KeyNotFound):
            continue  # someone wrote in between: look again


def child_candidate(url: str, name: str, ttl: float, stale_write: bool) -> None:
    """Campaign; while leading, write under the token; when the lease is lost, say so and campaign again."""
    store = coord.connect(url)
    election = coord.Election(name, store=store, ttl=ttl, value=str(os.getpid()).encode())
    say("READY", os.getpid())
    while True:
        try:
            leadership = election.campaign()
        except coord.CoordError as exc:
            say("ERROR", type(exc).__name__, time.monotonic())
            time.sleep(0.2)
            continue
        token = leadership.token
        say("LEADER", token, time.monotonic())
        while True:
            checked = time.monotonic()  # before the check: it led at least at this moment
            if not leadership.is_leader:
                break
            try:
                accepted = fenced_put(store, "resource", token, str(os.getpid()).encode())
                say("ACTED" if accepted else "REJECTED", token, checked)
            except coord.CoordError as exc:
                say("ERROR", type(exc).__name__, time.monotonic())
            time.sleep(PAUSE)
        say("LOST", token, time.monotonic(), leadership.lost.wait(2.0))
        if stale_write:
            # What a leader that ignored ``lost`` would do: write under its old token.
            try:
                stale = fenced_put(store, "resource", token, b"stale")
                say("STALE", token, "accepted" if stale else "rejected")
            except coord.CoordError as exc:
                say("STALE", token, type(exc).__name__)
        try:
            leadership.resign()  # ends the local state; the lease is gone already
        except coord.CoordError as exc:
            say("ERROR", type(exc).__name__, time.monotonic())


def child_worker(url: str, name: str, ttl: float) -> None:
    """Take the lock, check it is still held, write under the token, release; again and again."""
    store = coord.connect(url)
    lock = coord.Lock(name, store=store, ttl=ttl)
    say("READY", os.getpid())
    while True:
        try:
            lock.acquire()
        except coord.CoordError as exc:
            say("ERROR", type(exc).__name__, time.monotonic())
            time.sleep(0.2)
            continue
        token = lock.token
        say("HOLDING", token, time.monotonic())
        time.sleep(PAUSE)  # the work
        checked = time.monotonic()
        if lock.holding:
            try:
                accepted = fenced_put(store, "locked", token, str(os.getpid()).encode())
                say("WORKED" if accepted else "REJECTED", token, checked)
            except coord.CoordError as exc:
                say("ERROR", type(exc).__name__, time.monotonic())
        else:
            say("LOST", token, time.monotonic(), lock.lost.is_set())
        try:
            lock.release()
        except coord.CoordError as exc:
            say("ERROR", type(exc).__name__, time.monotonic())
        say("RELEASED", token, time.monotonic())


def main(argv: list[str]) -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test asks for our stacks when we hang
    mode, url, name, ttl, *rest = argv
    if mode == "candidate":
        child_candidate(url, name, float(ttl), "--stale-write" in rest)
    elif mode == "worker":
        child_worker(url, name, float(ttl))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
