#!/usr/bin/env python3
"""Leader failover, measured: start candidates, SIGKILL the leader, time the next election.

    python recipes/failover_demo.py [--url URL] [--candidates 3] [--ttl 2] [--kills 1]

The same as ``coord [--url URL] demo [--candidates 3] [--ttl 2] [--kills 1]``,
which this script runs (the demo lives in ``coord/cli/demo.py`` and
``coord/cli/_failover.py``). It starts ``--candidates`` processes that
campaign in one election on the embedded default store (``$COORD_URL`` if
set, or ``--url``), kills the leader with SIGKILL ``--kills`` times (its lease
must expire before anyone else may lead: expect about the ttl), then asks the
leader to resign (its successor is elected at once), and prints how long each
new leader took.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from coord.cli import main as coord_main


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    url: list[str] = []
    if "--url" in args:  # a global option of `coord`, given before the subcommand
        at = args.index("--url")
        url, args = args[at : at + 2], args[:at] + args[at + 2 :]
    return coord_main([*url, "demo", *args])


if __name__ == "__main__":
    sys.exit(main())
