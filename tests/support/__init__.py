"""What coord's tests share, in one place.

- child processes: ``Child`` (the conformance suite's, one class for every
  test), ``Children`` (a test's children, killed at its end), ``first``; the
  programs they run: ``recipe_children.py`` and ``fault_children.py``;
- waits: ``wait_for`` (a condition), ``run`` (a call in a thread), and the
  suite's ``drain``, ``next_event`` and ``summary`` for watches;
- the test servers (``servers.py``: scripts/servers.py loaded once, each
  backend's server and URL from coord's backend table) and a ``Proxy`` that
  cuts, refuses or stalls connections to them;
- the stateful tests' machinery, imported by those tests from its modules:
  ``hypothesis_profiles``, ``stateful`` (the simulated world) and ``mutants``.
"""

from __future__ import annotations

from coord.testing.conformance._child import Child
from coord.testing.conformance._events import drain, next_event, summary

from .children import FAULT_CHILDREN, RECIPE_CHILDREN, ROOT, Children, first
from .proxy import Proxy
from .servers import REQUIRE_SERVERS, missing_server, required_env, server_of, servers, url_of
from .waiting import run, wait_for

__all__ = [
    "FAULT_CHILDREN",
    "RECIPE_CHILDREN",
    "REQUIRE_SERVERS",
    "ROOT",
    "Child",
    "Children",
    "Proxy",
    "drain",
    "first",
    "missing_server",
    "next_event",
    "required_env",
    "run",
    "server_of",
    "servers",
    "summary",
    "url_of",
    "wait_for",
]
