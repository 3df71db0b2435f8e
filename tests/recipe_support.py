"""Child processes for the recipe tests, and the parent's handle on them.

Run as a script, this module is one participant of a recipe: it opens
``coord.connect(url)`` and reports what happens on stdout, one line per
event, each starting with a word (``LEADER``, ``LOST``, ...) and ending with
its ``time.monotonic()`` where timing matters (the clock is system-wide, so
parent and children can compare times).

    python recipe_support.py campaign URL NAME TTL [--alive]
    python recipe_support.py hold URL NAME TTL
    python recipe_support.py lock-counter URL NAME TTL COUNT
    python recipe_support.py barrier URL NAME PARTIES TTL
    python recipe_support.py double-barrier URL NAME PARTIES TTL

SIGTERM makes ``campaign`` resign and ``hold`` release, then exit.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def say(*words: object) -> None:
    print(*words, flush=True)


# -- the child side --------------------------------------------------------------


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


# -- the parent side --------------------------------------------------------------


class Child:
    """A child process whose stdout lines the test reads as events."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=ROOT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_errors, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_errors(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.errors.append(line.rstrip("\n"))

    def expect(self, word: str, timeout: float) -> list[str]:
        """The words of the next line starting with ``word``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(f"no {word} from {self.describe()} within {timeout} s") from None
            if line is None:
                self.lines.put(None)
                time.sleep(0.1)  # let stderr drain for the message
                raise AssertionError(f"{self.describe()} ended before saying {word}")
            words = line.split()
            if words and words[0] == word:
                return words

    def search(self, pattern: str, timeout: float) -> re.Match[str]:
        """The match of the next line matching the regular expression ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} from {self.describe()} within {timeout} s"
                ) from None
            if line is None:
                self.lines.put(None)
                time.sleep(0.1)
                raise AssertionError(f"{self.describe()} ended before printing {pattern!r}")
            match = re.search(pattern, line)
            if match:
                return match

    def quiet(self, word: str, within: float) -> bool:
        """True if no line starting with ``word`` comes within ``within`` seconds."""
        try:
            self.expect(word, within)
        except AssertionError:
            return True
        return False

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> float:
        """SIGKILL; return the monotonic time it was sent."""
        sent = time.monotonic()
        self.process.kill()
        self.process.wait()
        return sent

    def describe(self) -> str:
        output = "\n".join(self.output[-20:])
        errors = "\n".join(self.errors[-30:])
        return f"child {self.args[:2]} (pid {self.pid})\n--- stdout:\n{output}\n--- stderr:\n{errors}"

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.describe()} did not exit within {timeout} s") from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def first(children: list[Child], word: str, timeout: float) -> tuple[Child, list[str]]:
    """The first of ``children`` to say ``word``, and the words it said (other lines are passed over)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            try:
                line = child.lines.get_nowait()
            except queue.Empty:
                continue
            if line is None:
                child.lines.put(None)
            elif line.split()[:1] == [word]:
                return child, line.split()
        time.sleep(0.005)
    raise AssertionError(f"none of {len(children)} children said {word} within {timeout} s")


class Children:
    """The children of one test; all killed at its end (the fixture of that name)."""

    def __init__(self) -> None:
        self.all: list[Child] = []

    def start(self, args: list[str], *, env: dict[str, str] | None = None) -> Child:
        child = Child(args, env=env)
        self.all.append(child)
        return child

    def spawn(self, mode: str, url: str, name: str, *args: object) -> Child:
        """Start this module as a child in ``mode``."""
        return self.start([str(Path(__file__).resolve()), mode, url, name, *map(str, args)])

    def close(self) -> None:
        for child in self.all:
            child.close()


# -- helpers for the tests' threads ------------------------------------------------------------


def run(target: Callable[..., object], *args: object) -> threading.Thread:
    """Run ``target(*args)`` in a daemon thread."""
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; return when it first did (monotonic). AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)
    return time.monotonic()


if __name__ == "__main__":
    main(sys.argv[1:])
