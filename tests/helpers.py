"""Helpers the tests share: child processes that hold leases, and waiting on watches."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import coord

ROOT = Path(__file__).resolve().parent.parent


class Child:
    """A Python process running ``code`` with ``url`` in $COORD_URL; it talks to the test through lines on stdout."""

    def __init__(self, code: str, url: str, *args: str) -> None:
        env = {**os.environ, "COORD_URL": url, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def expect(self, wanted: str, timeout: float = 30.0) -> str:
        """Read lines until one starts with ``wanted``; return the rest of it."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"child exited ({self.proc.wait()}) before printing {wanted!r}")
            if line.startswith(wanted):
                return line[len(wanted) :].strip()
        raise AssertionError(f"child did not print {wanted!r} within {timeout}s")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def wait_for(watch: coord.Watch, predicate: Callable[[coord.Event], bool], timeout: float) -> tuple[coord.Event, float]:
    """The first event of ``watch`` that matches, and how long it took; fails after ``timeout``."""
    start = time.monotonic()
    deadline = start + timeout
    while (left := deadline - time.monotonic()) > 0:
        event = watch.get(timeout=left)
        if event is not None and predicate(event):
            return event, time.monotonic() - start
    raise AssertionError(f"no matching event within {timeout}s")


def drain(watch: coord.Watch, count: int, timeout: float = 10.0) -> list[coord.Event]:
    """The next ``count`` events of ``watch``; fails if they do not all come within ``timeout``."""
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        event = watch.get(timeout=max(0.0, deadline - time.monotonic()))
        if event is None:
            raise AssertionError(f"got {len(events)} of {count} events within {timeout}s: {events}")
        events.append(event)
    return events
