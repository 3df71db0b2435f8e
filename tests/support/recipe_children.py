"""The child processes of the recipe tests: each is one participant of a recipe.

Run as a script (``Children.spawn`` starts it), it opens
``coord.connect(url)`` and reports what happens on stdout, one line per
event, each starting with a word (``LEADER``, ``LOST``, ...) and ending with
its ``time.monotonic()`` where timing matters (the clock is system-wide, so
parent and children can compare times).

    python recipe_children.py campaign URL NAME TTL [--alive]
    python recipe_children.py hold URL NAME TTL
    python recipe_children.py lock-counter URL NAME TTL COUNT
    python recipe_children.py barrier URL NAME PARTIES TTL
    python recipe_children.py double-barrier URL NAME PARTIES TTL

SIGTERM makes ``campaign`` resign and ``hold`` release, then exit.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time


def say(*words: object) -> None:
    """One line, in one write: a child killed mid-line must not leave half a line (stdout is unbuffered)."""
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


def child_campaign(url: str, name: str, ttl: float, alive: bool) -> None:
    import coord

    store = coord.connect(url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    say("READY", os.getpid())
    leadership = coord.Election(name, store=store, ttl=ttl, value=str(os.getpid()).encode()).campaign()
    say("LEADER", leadership.token, time.monotonic())
    while not stop.is_set():
        now = time.monotonic()  # taken before the check: it led at least at this moment
        if not leadership.is_leader:
            break
        if alive:
            say("ALIVE", now)
        stop.wait(0.02)
    if stop.is_set():
        say("RESIGNED", leadership.token, time.monotonic())
        leadership.resign()
    else:
        lost_at = time.monotonic()
        # ``is_leader`` is exact; ``lost`` is set by the lease keeper's thread, which may run a moment later.
        say("LOST", leadership.token, lost_at, leadership.lost.wait(2.0))
    store.close()


def child_hold(url: str, name: str, ttl: float) -> None:
    import coord

    store = coord.connect(url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lock = coord.Lock(name, store=store, ttl=ttl)
    lock.acquire()
    say("HOLDING", lock.token, time.monotonic())
    while not stop.is_set() and not lock.lost.wait(0.05):
        pass
    if lock.lost.is_set():
        say("LOST", lock.token, time.monotonic(), lock.holding)
    else:
        lock.release()
        say("RELEASED", lock.token, time.monotonic())
    store.close()


def child_lock_counter(url: str, name: str, ttl: float, count: int) -> None:
    import coord

    store = coord.connect(url)
    lock = coord.Lock(name, store=store, ttl=ttl)
    say("READY", os.getpid())
    tokens = []
    for _ in range(count):
        with lock:
            # A read-modify-write with no compare-and-swap: only the lock keeps updates from being lost.
            try:
                value = int(store.get(f"counter/{name}").value)
            except coord.KeyNotFound:
                value = 0
            time.sleep(0.002)
            store.put(f"counter/{name}", str(value + 1).encode())
            tokens.append(lock.token)
    say("DONE", ",".join(map(str, tokens)))
    store.close()


def child_barrier(url: str, name: str, parties: int, ttl: float) -> None:
    import coord

    store = coord.connect(url)
    say("ARRIVING", time.monotonic())
    coord.Barrier(name, parties, store=store, ttl=ttl).wait()
    say("PASSED", time.monotonic())
    store.close()


def child_double_barrier(url: str, name: str, parties: int, ttl: float) -> None:
    import coord

    store = coord.connect(url)
    barrier = coord.DoubleBarrier(name, parties, store=store, ttl=ttl)
    say("ENTERING", time.monotonic())
    barrier.enter()
    say("ENTERED", time.monotonic())
    sys.stdin.readline()  # the parent says when the work is done
    say("LEAVING", time.monotonic())
    barrier.leave()
    say("LEFT", time.monotonic())
    store.close()


def main(argv: list[str]) -> None:
    mode, url, name, *rest = argv
    if mode == "campaign":
        child_campaign(url, name, float(rest[0]), "--alive" in rest)
    elif mode == "hold":
        child_hold(url, name, float(rest[0]))
    elif mode == "lock-counter":
        child_lock_counter(url, name, float(rest[0]), int(rest[1]))
    elif mode == "barrier":
        child_barrier(url, name, int(rest[0]), float(rest[1]))
    elif mode == "double-barrier":
        child_double_barrier(url, name, int(rest[0]), float(rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
