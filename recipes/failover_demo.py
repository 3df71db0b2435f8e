#!/usr/bin/env python3
"""Leader failover, measured: start candidates, SIGKILL the leader, time the next election.

    python recipes/failover_demo.py [--url URL] [--candidates 3] [--ttl 2] [--kills 1]

Starts ``--candidates`` processes that campaign in one election on the
embedded default store (``$COORD_URL`` if set, or ``--url``). It kills the
leader with SIGKILL ``--kills`` times (its lease must expire before anyone
else may lead: expect about the ttl), then asks the leader to resign (its
successor is elected at once), and prints how long each new leader took.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence

import coord


def candidate(url: str | None, name: str, ttl: float) -> None:
    """One candidate: campaign, report, lead until killed or asked to resign (SIGTERM)."""
    store = coord.connect(url) if url else None
    resign = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: resign.set())
    print("READY", flush=True)
    leadership = coord.Election(name, store=store, ttl=ttl).campaign()
    print("LEADER", leadership.token, time.monotonic(), flush=True)
    while not resign.wait(0.05):
        if not leadership.is_leader:
            print("LOST", leadership.token, time.monotonic(), flush=True)
            return
    print("RESIGNED", leadership.token, time.monotonic(), flush=True)
    leadership.resign()


class Candidates:
    """Candidate processes of one election, and the reports they print (``(pid, words)``)."""

    def __init__(self, url: str | None, name: str, ttl: float) -> None:
        self.url, self.name, self.ttl = url, name, ttl
        self.processes: dict[int, subprocess.Popen[str]] = {}
        self.events: queue.Queue[tuple[int, list[str]]] = queue.Queue()
        self.backlog: list[tuple[int, list[str]]] = []
        self.ended: set[int] = set()  # killed or told to resign: their exit is expected

    def start(self) -> int:
        args = [sys.executable, os.path.abspath(__file__), "--candidate", self.name, "--ttl", str(self.ttl)]
        if self.url:
            args += ["--url", self.url]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        self.processes[process.pid] = process
        threading.Thread(target=self._read, args=(process,), daemon=True).start()
        self.expect("READY", 30, pid=process.pid)
        return process.pid

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.events.put((process.pid, line.split()))
        self.events.put((process.pid, ["EXITED"]))

    def expect(self, word: str, timeout: float, pid: int | None = None) -> tuple[int, list[str]]:
        """The first report ``word`` (from ``pid``, if given) not taken yet; others wait their turn."""
        deadline = time.monotonic() + timeout
        while True:
            for n, (who, words) in enumerate(self.backlog):
                if words == ["EXITED"] and who not in self.ended:
                    raise RuntimeError(f"candidate {who} exited unexpectedly (waiting for {word})")
                if words[:1] == [word] and (pid is None or who == pid):
                    del self.backlog[n]
                    return who, words
            try:
                self.backlog.append(self.events.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise TimeoutError(f"no {word} within {timeout} s") from None

    def kill(self, pid: int) -> float:
        self.ended.add(pid)
        sent = time.monotonic()
        self.processes[pid].kill()
        self.processes[pid].wait()
        return sent

    def resign(self, pid: int) -> float:
        """Ask ``pid`` to resign; return the moment it did."""
        self.ended.add(pid)
        self.processes[pid].send_signal(signal.SIGTERM)
        _, words = self.expect("RESIGNED", 10, pid=pid)
        self.processes[pid].wait()
        return float(words[2])

    def close(self) -> None:
        for pid, process in self.processes.items():
            self.ended.add(pid)
            if process.poll() is None:
                process.kill()
            process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="store URL (default: $COORD_URL, else the embedded sqlite store)")
    parser.add_argument("--candidates", type=int, default=3, help="candidate processes (at least kills + 2)")
    parser.add_argument("--ttl", type=float, default=2.0, help="the candidates' lease ttl, in seconds")
    parser.add_argument("--kills", type=int, default=1, help="how many leaders to SIGKILL")
    parser.add_argument("--candidate", metavar="NAME", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.candidate:
        candidate(args.url, args.candidate, args.ttl)
        return 0
    if args.candidates < args.kills + 2:
        parser.error("--candidates must be at least --kills + 2")
    where = (coord.connect(args.url) if args.url else coord.default_store()).describe()
    if where.startswith("memory"):
        parser.error("memory:// lives in one process: give a store that processes can share")
    print(f"coord failover demo: {args.candidates} candidates on {where}, lease ttl {args.ttl:g} s")
    candidates = Candidates(args.url, f"failover-demo-{uuid.uuid4().hex[:8]}", args.ttl)
    try:
        pids = [candidates.start() for _ in range(args.candidates)]
        print(f"  started candidates {', '.join(map(str, pids))}")
        leader, words = candidates.expect("LEADER", 30)
        print(f"  {leader} leads (fencing token {words[1]})")
        kills: list[float] = []
        for _ in range(args.kills):
            killed_at = candidates.kill(leader)
            print(f"  SIGKILL -> {leader}; its lease must expire before anyone else may lead ...")
            leader, words = candidates.expect("LEADER", args.ttl + 30)
            kills.append(float(words[2]) - killed_at)
            print(f"  {leader} leads (token {words[1]}) {kills[-1]:.2f} s after the kill")
        print(f"  {leader} resigns ...")
        resigned_at = candidates.resign(leader)
        leader, words = candidates.expect("LEADER", 30)
        resign = float(words[2]) - resigned_at
        print(f"  {leader} leads (token {words[1]}) {resign * 1000:.1f} ms after the resign")
    finally:
        candidates.close()
    worst = max(kills, default=0.0)
    print(f"failover after SIGKILL: {worst:.2f} s (at most the ttl, {args.ttl:g} s, plus the store's expiry delay)")
    print(f"failover after resign: {resign * 1000:.1f} ms (one watch round trip)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
