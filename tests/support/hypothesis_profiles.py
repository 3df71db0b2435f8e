"""Hypothesis settings for the stateful tests, and the one way they run a state machine.

Profiles, chosen with ``COORD_HYPOTHESIS_PROFILE``:

* ``ci`` (the default): 200 examples of 50 to 60 steps per machine;
* ``dev``: 30 examples of 20 to 30 steps, for a quick look while editing;
* ``soak``: 2,000 examples of 100 to 120 steps, for a long hunt.

Every example runs at least the minimum number of steps (Hypothesis would
otherwise end a few early), so a falsifying example has at least that many
steps too, most of them padding around the few that matter.

There is no example database (``database=None``), and Hypothesis' other files
(its cache of constants) go to the system's temporary directory: nothing is
written into the repository. Each run draws a fresh seed and prints it (pytest shows it when
the test fails); ``COORD_HYPOTHESIS_SEED=<seed>`` replays that run. A failure
also prints the falsifying steps and a ``@reproduce_failure(...)`` line:
put that decorator on the machine class to replay exactly that example.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "coord-hypothesis")

_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "derandomize": False,
    "print_blob": True,
    "report_multiple_bugs": False,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
}
settings.register_profile("coord-ci", max_examples=200, stateful_step_count=60, **_COMMON)
settings.register_profile("coord-dev", max_examples=30, stateful_step_count=30, **_COMMON)
settings.register_profile("coord-soak", max_examples=2000, stateful_step_count=120, **_COMMON)
MIN_STEPS = {"coord-ci": 50, "coord-dev": 20, "coord-soak": 100}

PROFILE = f"coord-{os.environ.get('COORD_HYPOTHESIS_PROFILE', 'ci')}"


def profile(**overrides: Any) -> settings:
    """The chosen profile's settings, with ``overrides``."""
    return settings(settings.get_profile(PROFILE), **overrides)


def hunting() -> settings:
    """Settings for showing that a machine catches a mutant: stop at the first failure, no shrinking.

    Mutants are usually caught within a few dozen examples (the slowest seen
    took 112); up to 500 are allowed, so that the test never fails by chance.
    """
    chosen = settings.get_profile(PROFILE)
    return settings(chosen, phases=[Phase.generate], max_examples=max(500, chosen.max_examples))


class Counts:
    """What a run did: machines (examples) built and steps taken, for the report."""

    def __init__(self) -> None:
        self.examples = 0
        self.steps = 0
        self.full = 0  # examples that ran at least the profile's minimum of steps

    def ended(self, steps: int) -> None:
        """One example ended after ``steps`` steps (fewer than the minimum: Hypothesis cut it, it does not count)."""
        self.steps += steps
        self.full += steps >= MIN_STEPS[PROFILE]


def run_machine(machine: type[RuleBasedStateMachine], chosen: settings | None = None) -> Counts:
    """Run ``machine`` under Hypothesis with a printed seed; return how many examples and steps ran."""
    chosen = chosen or profile()
    fixed = os.environ.get("COORD_HYPOTHESIS_SEED")
    used = int(fixed) if fixed else secrets.randbits(64)
    print(f"{machine.__name__}: seed {used} (replay: COORD_HYPOTHESIS_SEED={used}), profile {PROFILE}")
    counts = Counts()

    def factory() -> RuleBasedStateMachine:
        counts.examples += 1
        built = machine()
        built.__dict__["counts"] = counts  # read by the machine at its teardown
        return built

    blob = getattr(machine, "_hypothesis_internal_use_reproduce_failure", None)
    if blob is not None:
        factory.__dict__["_hypothesis_internal_use_reproduce_failure"] = blob
    else:
        seeded: Callable[[], RuleBasedStateMachine] = seed(used)(factory)
        assert seeded is factory
    started = time.monotonic()
    run_state_machine_as_test(factory, settings=chosen, _min_steps=MIN_STEPS[PROFILE])
    elapsed = time.monotonic() - started
    print(
        f"{machine.__name__}: {counts.full} examples of {MIN_STEPS[PROFILE]}+ steps "
        f"({counts.examples} started, {counts.steps} steps in all) in {elapsed:.1f} s"
    )
    return counts
