"""One candidate of the failover demo, in a process of its own (``python -m coord.cli._candidate``).

It campaigns, then reports on standard output, one line each, with times on
coord's clock (the host's boot clock, shared by the processes of a host):
``READY``; ``LEADER token time deadline``; ``DEADLINE deadline`` each time a
renewal moves its lease's deadline; ``LOST token time`` if it stops leading;
on SIGTERM, ``RESIGNED token time`` just before it resigns.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence

import coord

__all__ = ["candidate", "main"]


def candidate(url: str | None, name: str, ttl: float) -> None:
    """Campaign in ``name``, report, and lead until killed or asked to resign (SIGTERM)."""
    store = coord.connect(url) if url else coord.default_store()
    clock = store.clock
    resign = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: resign.set())
    print("READY", flush=True)
    leadership = coord.Election(name, store=store, ttl=ttl).campaign()
    deadline = leadership.lease.deadline
    print("LEADER", leadership.token, clock.now(), deadline, flush=True)
    while not resign.wait(0.01):
        if not leadership.is_leader:
            print("LOST", leadership.token, clock.now(), flush=True)
            return
        if leadership.lease.deadline != deadline:
            deadline = leadership.lease.deadline
            print("DEADLINE", deadline, flush=True)
    print("RESIGNED", leadership.token, clock.now(), flush=True)
    leadership.resign()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coord.cli._candidate")
    parser.add_argument("name")
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--url")
    args = parser.parse_args(argv)
    candidate(args.url, args.name, args.ttl)


if __name__ == "__main__":
    main()
