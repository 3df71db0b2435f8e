"""The Store conformance suite (``coord.testing.conformance``) on every backend of coord's table, real servers included.

The suite's tests are imported here, as a backend outside this repository
may import them into a test module of its own; its fixtures come from the
plugin, which conftest.py loads, and conftest.py's ``store_url`` and
``process_url`` make each test run once per backend (those that need child
processes on the backends several processes can share).
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from coord.testing import conformance
from coord.testing.conformance import test_identity
from coord.testing.conformance.test_atomic import *  # noqa: F403
from coord.testing.conformance.test_identity import *  # noqa: F403
from coord.testing.conformance.test_keys import *  # noqa: F403
from coord.testing.conformance.test_leases import *  # noqa: F403
from coord.testing.conformance.test_refusals import *  # noqa: F403
from coord.testing.conformance.test_transactions import *  # noqa: F403
from coord.testing.conformance.test_watch import *  # noqa: F403
from tests.support import ROOT

# -- the plugin, as a backend outside this repository runs it ------------------------------------------

SUITE_DIR = Path(conformance.__file__).parent
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def per_backend(output: str) -> Counter[str]:
    """How many tests each backend has in ``pytest --collect-only -q`` output of this module."""
    return Counter(re.findall(r"^tests/test_conformance\.py::test_\w+\[(\w+)[-\]]", output, re.MULTILINE))


def test_every_module_of_the_suite_is_imported_here() -> None:
    for path in conformance.SUITE:
        module = importlib.import_module(f"coord.testing.conformance.{path.stem}")
        tests = {name: value for name, value in vars(module).items() if name.startswith("test_")}
        missing = sorted(name for name, value in tests.items() if globals().get(name) is not value)
        assert tests and not missing, f"{path.name}: import its tests here: {missing}"


def test_the_suite_imports_only_coord_pytest_and_the_standard_library() -> None:
    allowed = set(sys.stdlib_module_names) | {"coord", "pytest"}
    for path in sorted(SUITE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # the suite's own modules
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                parts = name.split(".")
                assert parts[0] in allowed, f"{path.name} imports {name}"
                if parts[0] == "coord" and len(parts) > 1:
                    assert parts[1].startswith("_") or parts[1] == "testing", f"{path.name} imports {name}"


def test_an_out_of_tree_backend_runs_the_whole_suite_through_the_plugin(tmp_path: Path) -> None:
    """A backend registered by entry point, in an empty directory: every test coord's own run gives a backend."""
    own = subprocess.run(
        [*PYTEST, "--collect-only", str(Path(__file__).relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    counts = per_backend(own.stdout)
    assert counts["sqlite"] > counts["memory"] > 0, own.stdout + own.stderr
    package = tmp_path / "package"
    (package / "myback-1.0.dist-info").mkdir(parents=True)
    (package / "myback.py").write_text(
        "from coord.backends.sqlite import SQLiteStore\nclass MyStore(SQLiteStore):\n    backend = 'mine'\n"
    )
    (package / "myback-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: myback\nVersion: 1.0\n")
    (package / "myback-1.0.dist-info" / "entry_points.txt").write_text("[coord.backends]\nmine = myback:MyStore\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{package}{os.pathsep}{ROOT}"}

    run = subprocess.run(
        [*PYTEST, "-p", "coord.testing.conformance", "--store-url", f"mine://{tmp_path}/mine.db"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # The identity tests need --refused-url: without it they are deselected, as in coord's own run.
    refused = len([name for name in vars(test_identity) if name.startswith("test_")])
    assert re.search(rf"^{counts['sqlite']} passed, {refused} deselected in ", run.stdout, re.MULTILINE), run.stdout

    # memory:// is one process's store: the tests with child processes are deselected, not run or skipped.
    collected = subprocess.run(
        [*PYTEST, "--collect-only", "-p", "coord.testing.conformance", "--store-url", "memory://x"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    deselected = counts["sqlite"] - counts["memory"] + refused
    wanted = rf"^{counts['memory']}/{counts['sqlite'] + refused} tests collected \({deselected} deselected\)"
    assert re.search(wanted, collected.stdout, re.MULTILINE), collected.stdout + collected.stderr
