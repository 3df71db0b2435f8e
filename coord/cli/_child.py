"""CMD as ``lock``, ``elect`` and ``register`` run it: in a process group of its own, signalled as a whole.

A group of its own, so that a lock that is lost stops CMD *and everything it
started* (a shell script's current command included), and so that a signal
coord passes on reaches it exactly once. When coord runs in the foreground
of a terminal, it hands the terminal's foreground to CMD's group while CMD
runs (as a shell does for a job), so CMD reads the terminal and gets Ctrl-C
itself; coord takes the terminal back when CMD ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

from . import _status as status

__all__ = ["Child", "CannotRun"]


class CannotRun(Exception):
    """CMD could not be started; ``status`` is what the shells would report (126 or 127)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.status = code


class Child:
    """A running CMD; ``wake`` is set when it ends."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], wake: threading.Event) -> None:
        try:
            if sys.version_info >= (3, 11):
                self.process = subprocess.Popen(list(argv), env=dict(env), process_group=0)
            else:  # no process_group before 3.11: a session of its own (it then has no controlling terminal)
                self.process = subprocess.Popen(list(argv), env=dict(env), start_new_session=True)
        except FileNotFoundError as exc:
            raise CannotRun(f"{argv[0]}: command not found", status.COMMAND_NOT_FOUND) from exc
        except OSError as exc:
            raise CannotRun(f"{argv[0]}: {exc.strerror or exc}", status.CANNOT_EXECUTE) from exc
        self._terminal = _foreground_terminal()
        if self._terminal is not None:
            _give_terminal(self._terminal, self.process.pid)
        threading.Thread(target=self._reap, args=(wake,), name="coord-child", daemon=True).start()

    def _reap(self, wake: threading.Event) -> None:
        self.process.wait()
        wake.set()

    @property
    def status(self) -> int | None:
        """CMD's exit status (128 + N if signal N ended it), or ``None`` while it runs."""
        code = self.process.poll()
        if code is None:
            return None
        return status.signalled(-code) if code < 0 else code

    def signal(self, signum: int) -> None:
        """Send ``signum`` to CMD's process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def terminate(self, grace: float) -> None:
        """SIGTERM to CMD's group; SIGKILL to it if CMD has not ended ``grace`` seconds later."""
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()

    def close(self) -> None:
        """CMD has ended: take the terminal back, if coord had handed it over."""
        if self._terminal is not None:
            _give_terminal(self._terminal, os.getpgrp())
            self._terminal = None


def _foreground_terminal() -> int | None:
    """The terminal on standard input, if coord's process group is its foreground group."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def _give_terminal(fd: int, group: int) -> None:
    # A process outside the foreground group that sets it gets SIGTTOU: ignore it meanwhile.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, group)
    finally:
        signal.signal(signal.SIGTTOU, previous)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGCONT)  # in case it read the terminal before it was its own, and stopped
