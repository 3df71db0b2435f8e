"""The stateful tests can fail: each catches a recipe broken on purpose (tests/support/mutants.py).

Each mutant is patched in and its state machine run with the same settings
as in CI (no shrinking, so the hunt stops at the first failure); the test
passes only if Hypothesis finds a failure raised by the invariant named for
that mutant.
"""

from __future__ import annotations

import pytest
from hypothesis.stateful import RuleBasedStateMachine
from test_stateful_barrier import BarrierMachine
from test_stateful_election import ElectionMachine
from test_stateful_lock import LockMachine, SemaphoreMachine
from test_stateful_registration import RegistrationMachine

from tests.support.hypothesis_profiles import hunting, run_machine
from tests.support.mutants import MUTANTS, Mutant

MACHINES: dict[str, type[RuleBasedStateMachine]] = {
    machine.__name__: machine
    for machine in (LockMachine, SemaphoreMachine, ElectionMachine, RegistrationMachine, BarrierMachine)
}


def failures(error: BaseException) -> list[str]:
    """The messages of every AssertionError in ``error``, its groups and its causes."""
    found: list[str] = []
    pending = [error]
    while pending:
        current = pending.pop()
        if isinstance(current, AssertionError):
            found.append(str(current))
        pending.extend(getattr(current, "exceptions", ()))
        if current.__cause__ is not None:
            pending.append(current.__cause__)
    return found


@pytest.mark.parametrize("mutant", MUTANTS, ids=[mutant.name for mutant in MUTANTS])
def test_the_stateful_tests_catch(mutant: Mutant) -> None:
    with mutant.patch(), pytest.raises(Exception) as info:
        run_machine(MACHINES[mutant.machine], hunting())
    messages = failures(info.value)
    assert any(tag in message for message in messages for tag in mutant.caught_by), (
        f"{mutant.name} ({mutant.broken}) was caught, but not by {mutant.caught_by}: {messages or info.value!r}"
    )
