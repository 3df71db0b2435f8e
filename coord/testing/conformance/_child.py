"""A child process that a test talks to through lines: the suite's, and coord's own tests'.

The child imports the same coord as the test: ``PYTHONPATH`` starts with the
folder this coord was imported from (the repository, in coord's own run).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import coord

__all__ = ["ROOT", "Child"]

#: The folder holding the ``coord`` package the test imported.
ROOT = Path(coord.__file__).resolve().parent.parent


class Child:
    """``python *args`` in a process of its own; the test reads its stdout lines as events and writes lines to its stdin.

    Lines are read by a thread as they come, so a child never blocks on a
    full pipe; ``output`` and ``errors`` keep everything it printed, for
    checks afterwards and for ``describe()`` in failure messages.
    """

    def __init__(self, args: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        full_env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
            cwd=cwd,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_errors, daemon=True).start()

    @classmethod
    def from_code(cls, code: str, *args: str, env: Mapping[str, str] | None = None) -> Child:
        """``python -c code *args``: a program small enough to sit in the test beside its checks."""
        return cls(["-c", textwrap.dedent(code), *args], env=env)

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

    def expect(self, word: str, timeout: float = 30.0) -> list[str]:
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
        program = ["-c", "..."] if self.args[:1] == ["-c"] else self.args[:2]
        return f"child {program} (pid {self.pid})\n--- stdout:\n{output}\n--- stderr:\n{errors}"

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.describe()} did not exit within {timeout} s") from None

    def close(self) -> None:
        """Kill the child if it still runs (a stopped one too), and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
