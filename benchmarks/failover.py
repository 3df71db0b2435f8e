#!/usr/bin/env python3
"""Leader failover time per backend: SIGKILL -> new leader, and resign -> new leader.

    python benchmarks/failover.py [--ttl 2] [--trials 5] URL [URL ...]

For each store URL, candidate processes campaign in one election (the
candidates of recipes/failover_demo.py). Each kill trial SIGKILLs the
leader, at a random point of its renewal period, and times until a
successor leads: the dead leader's lease must expire first, between 2/3 of
the ttl and the whole ttl after the kill, plus the store's expiry delay.
Each resign trial asks the leader to resign and times until its successor
leads (one watch round trip). Times are taken on the system-wide monotonic
clock, from the signal (or the resign call) to the moment the successor's
``campaign()`` returned. Prints a table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))

from failover_demo import Candidates


def measure(url: str, ttl: float, trials: int) -> tuple[list[float], list[float]]:
    candidates = Candidates(url, f"failover-bench-{uuid.uuid4().hex[:8]}", ttl)
    kills: list[float] = []
    resigns: list[float] = []
    try:
        for _ in range(3):
            candidates.start()
        leader, _ = candidates.expect("LEADER", 30)
        for trial in range(2 * trials):
            candidates.start()  # keep two candidates waiting behind the leader
            killing = trial % 2 == 0
            # Kill at a random point of the leader's renewal period (one every ttl/3): the time to
            # expiry depends on it, from 2/3 of the ttl (just before a renewal) to the whole ttl.
            time.sleep(random.uniform(0, ttl / 3))
            since = candidates.kill(leader) if killing else candidates.resign(leader)
            leader, words = candidates.expect("LEADER", ttl + 30)
            (kills if killing else resigns).append(float(words[2]) - since)
    finally:
        candidates.close()
    return kills, resigns


def summary(times: list[float], unit: float) -> str:
    scaled = [t * unit for t in times]
    return f"{min(scaled):8.1f} {statistics.median(scaled):8.1f} {max(scaled):8.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="+", metavar="URL")
    parser.add_argument("--ttl", type=float, default=2.0, help="lease ttl, in seconds (etcd's minimum is 2)")
    parser.add_argument("--trials", type=int, default=5, help="kills and resigns per backend")
    args = parser.parse_args()
    print(f"leader failover, ttl {args.ttl:g} s, {args.trials} trials each (min / median / max)")
    print(f"{'store':<32} {'SIGKILL -> leader (ms)':>26}   {'resign -> leader (ms)':>26}")
    for url in args.urls:
        kills, resigns = measure(url, args.ttl, args.trials)
        print(f"{url.split('?')[0]:<32} {summary(kills, 1000):>26}   {summary(resigns, 1000):>26}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
