"""The child processes of one test: started from the programs beside this module, all killed at its end."""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping
from pathlib import Path

from coord.testing.conformance._child import Child

__all__ = ["FAULT_CHILDREN", "RECIPE_CHILDREN", "ROOT", "Children", "first"]

HERE = Path(__file__).resolve().parent
#: The repository: children run there, and import its coord.
ROOT = HERE.parent.parent
#: One participant of a recipe, as a test drives it (``Children.spawn``).
RECIPE_CHILDREN = HERE / "recipe_children.py"
#: A candidate or lock worker that never gives up (tests/test_real_faults.py).
FAULT_CHILDREN = HERE / "fault_children.py"


class Children:
    """The children of one test; all killed at its end (the fixture of that name)."""

    def __init__(self) -> None:
        self.all: list[Child] = []

    def start(self, args: list[str], *, env: Mapping[str, str] | None = None) -> Child:
        child = Child(args, env=env, cwd=ROOT)
        self.all.append(child)
        return child

    def spawn(self, mode: str, url: str, name: str, *args: object) -> Child:
        """Start a recipe participant (``recipe_children.py``) in ``mode``."""
        return self.start([str(RECIPE_CHILDREN), mode, url, name, *map(str, args)])

    def close(self) -> None:
        for child in self.all:
            child.close()


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
