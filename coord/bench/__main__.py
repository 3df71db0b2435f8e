"""``python -m coord.bench``: run benchmarks, coord next to its peers; see ``coord.bench``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._runner import BENCHMARKS, MissingPeer, run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coord.bench",
        description="Measure coord against its peers (tooz, kazoo, redis-py, pyetcd) side by side.",
        epilog="Then: python -m coord.bench.report --in DIR writes docs/benchmarks.md.",
    )
    parser.add_argument("benchmarks", nargs="*", metavar="BENCHMARK", help=f"any of {', '.join(BENCHMARKS)} (all)")
    parser.add_argument(
        "--url",
        action="append",
        default=[],
        help="a store to measure, repeatable (default: memory, a sqlite file, each COORD_TEST_* server)",
    )
    parser.add_argument("--peers", action="store_true", help="measure the peers on the same servers too")
    parser.add_argument("--quick", action="store_true", help="a short run that checks everything works")
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON, PNG and logs")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[BENCH.]NAME=VALUE",
        help="override a parameter (VALUE is JSON, e.g. --set herd.waiters=[2,4] --set seconds=1)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    unknown = [name for name in args.benchmarks if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; there are {', '.join(BENCHMARKS)}")
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep:
            parser.error(f"--set {item}: expected NAME=VALUE")
        try:
            overrides[key] = json.loads(text)
        except ValueError:
            overrides[key] = text
    try:
        paths = run(
            args.benchmarks,
            args.url,
            out=args.out,
            peers=args.peers,
            quick=args.quick,
            overrides=overrides,
            verbose=not args.quiet,
        )
    except MissingPeer as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
