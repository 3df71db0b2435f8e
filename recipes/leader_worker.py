#!/usr/bin/env python3
"""Leader/worker: every copy campaigns; only the leader works, and only while it leads.

    python recipes/leader_worker.py [--url URL] [--name svc] [--ttl 10] [--interval 1] [--items N]

Run it in several terminals. One copy leads and does the work; the others
wait. Stop the leader (Ctrl-C resigns at once; ``kill -9`` makes the others
wait for its lease to expire) and another copy takes over. A copy that
loses its lease stops working before anyone else can lead, then campaigns
again. With ``--items N`` a leader resigns after N items and exits.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

import coord


def do_work(item: int, token: int) -> None:
    # Real work would pass ``token`` to whatever it writes to, so that a deposed
    # leader's late writes can be refused (the fencing token only ever grows).
    print(f"[{os.getpid()}] work item {item} (token {token})", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="store URL (default: $COORD_URL, else the embedded sqlite store)")
    parser.add_argument("--name", default="svc", help="the election's name")
    parser.add_argument("--ttl", type=float, default=10.0, help="lease ttl, in seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between work items")
    parser.add_argument("--items", type=int, default=0, help="resign and exit after this many items (0: never)")
    args = parser.parse_args(argv)

    store = coord.connect(args.url) if args.url else None
    me = f"{socket.gethostname()}:{os.getpid()}".encode()
    election = coord.Election(args.name, store=store, ttl=args.ttl, value=me)
    done = 0
    while True:
        print(f"[{os.getpid()}] campaigning (leader now: {election.leader()!r})", flush=True)
        with election.campaign() as leadership:
            print(f"[{os.getpid()}] leading (token {leadership.token})", flush=True)
            # Check before each item: is_leader turns false as soon as the lease may be gone.
            while leadership.is_leader:
                done += 1
                do_work(done, leadership.token)
                if done == args.items:
                    print(f"[{os.getpid()}] did {done} items; resigning", flush=True)
                    return 0
                leadership.lost.wait(args.interval)  # returns early if the lease is lost
            print(f"[{os.getpid()}] lost the lease; campaigning again", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)  # leaving the ``with`` block resigned
