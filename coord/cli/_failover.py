"""Leader failover, measured with real processes: what ``coord demo`` shows and ``coord doctor`` reports.

Candidates (``_candidate``) campaign in one election; the leader is killed
with SIGKILL (its lease must expire before anyone else may lead), then the
next one is asked to resign (its successor is elected at once). A watch on
the election's tickets (``election/<name>``, docs/recipes.md) sees when the
store deletes the dead leader's ticket: that moment minus the dead leader's
last lease deadline is the store's expiry delay.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import coord

__all__ = ["Candidates", "Failover", "measure"]


class Candidates:
    """Candidate processes of one election, and the reports they print (``(pid, words)``)."""

    def __init__(self, url: str | None, name: str, ttl: float) -> None:
        self.url, self.name, self.ttl = url, name, ttl
        self.processes: dict[int, subprocess.Popen[str]] = {}
        self.events: queue.Queue[tuple[int, list[str]]] = queue.Queue()
        self.backlog: list[tuple[int, list[str]]] = []
        self.ended: set[int] = set()  # killed or told to resign: their exit is expected
        self.deadlines: dict[int, float] = {}  # each candidate's last reported lease deadline

    def start(self) -> int:
        args = [sys.executable, "-m", "coord.cli._candidate", self.name, "--ttl", str(self.ttl)]
        # In the environment, not the command line: any user of the host can read a command line (ps).
        env = {**os.environ, "COORD_URL": self.url} if self.url else None
        process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        self.processes[process.pid] = process
        threading.Thread(target=self._read, args=(process,), daemon=True).start()
        self.expect("READY", 30, pid=process.pid)
        return process.pid

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            words = line.split()
            if words[:1] == ["DEADLINE"]:
                self.deadlines[process.pid] = float(words[1])
                continue
            if words[:1] == ["LEADER"]:
                self.deadlines[process.pid] = float(words[3])
            self.events.put((process.pid, words))
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

    def kill(self, pid: int, clock: coord.Clock) -> float:
        """SIGKILL ``pid``; the moment it was sent."""
        self.ended.add(pid)
        sent = clock.now()
        self.processes[pid].kill()
        self.processes[pid].wait()
        return sent

    def resign(self, pid: int) -> float:
        """Ask ``pid`` to resign; the moment it did."""
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


@dataclass
class Failover:
    """What one run measured, in seconds."""

    #: SIGKILL -> the next leader, per kill.
    kills: list[float] = field(default_factory=list)
    #: The dead leader's last lease deadline -> the store deleted its ticket (as a watch saw it), per kill.
    expiry_delays: list[float] = field(default_factory=list)
    #: The dead leader's last lease deadline -> the next leader, per kill.
    beyond_lease: list[float] = field(default_factory=list)
    #: resign -> the next leader.
    resign: float = 0.0


def measure(
    store: coord.Store, url: str | None, *, candidates: int, ttl: float, kills: int, say: Callable[[str], None]
) -> Failover:
    """Run the election on ``store`` (``url`` for the candidates; ``None``: their default store)."""
    name = f"failover-demo-{uuid.uuid4().hex[:8]}"
    result, group = Failover(), Candidates(url, name, ttl)
    deletes = _Deletes(store, f"election/{quote(name, safe='')}")
    try:
        pids = [group.start() for _ in range(candidates)]
        say(f"  started candidates {', '.join(map(str, pids))}")
        leader, words = group.expect("LEADER", 30)
        say(f"  {leader} leads (fencing token {words[1]})")
        for _ in range(kills):
            killed_at = group.kill(leader, store.clock)
            say(f"  SIGKILL -> {leader}; its lease must expire before anyone else may lead ...")
            dead, (leader, words) = leader, group.expect("LEADER", ttl + 30)
            deadline = group.deadlines[dead]  # its output is all read by now
            result.kills.append(float(words[2]) - killed_at)
            result.beyond_lease.append(float(words[2]) - deadline)
            result.expiry_delays.append(deletes.next_after(killed_at, 10) - deadline)
            say(f"  {leader} leads (token {words[1]}) {result.kills[-1]:.2f} s after the kill")
        say(f"  {leader} resigns ...")
        resigned_at = group.resign(leader)
        leader, words = group.expect("LEADER", 30)
        result.resign = float(words[2]) - resigned_at
        say(f"  {leader} leads (token {words[1]}) {result.resign * 1000:.1f} ms after the resign")
    finally:
        group.close()
        deletes.close()
    return result


class _Deletes:
    """When a watch of the election's tickets saw each delete, on the store's clock."""

    def __init__(self, store: coord.Store, prefix: str) -> None:
        self._clock = store.clock
        self._watch = store.watch_tree(prefix)
        self._times: list[float] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._drain, name="coord-demo-watch", daemon=True).start()

    def _drain(self) -> None:
        try:
            for event in self._watch:
                if event.type == "delete":
                    with self._seen:
                        self._times.append(self._clock.now())
                        self._seen.notify_all()
        except coord.CoordError:
            pass  # closed

    def next_after(self, moment: float, timeout: float) -> float:
        """The first delete seen after ``moment``; ``nan`` if none within ``timeout`` seconds."""
        with self._seen:
            self._seen.wait_for(lambda: any(t > moment for t in self._times), timeout)
            return next((t for t in self._times if t > moment), float("nan"))

    def close(self) -> None:
        self._watch.close()
