"""Waiting in the test's own threads: for a condition to hold, and for a call run alongside."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["run", "wait_for"]


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
