"""The runnable programs in recipes/, each run as a user would, on the stores processes can share."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from tests.support import ROOT, Children

TTL = 2.0


def program(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_failover_demo_reports_both_failovers(process_url: str) -> None:
    done = program("failover_demo.py", "--url", process_url, "--candidates", "3", "--ttl", str(TTL), timeout=60)
    assert done.returncode == 0, done.stderr
    kill = re.search(r"failover after SIGKILL: ([\d.]+) s", done.stdout)
    resign = re.search(r"failover after resign: ([\d.]+) ms", done.stdout)
    assert kill and resign, done.stdout
    assert float(kill.group(1)) < TTL + 2.0
    assert float(resign.group(1)) < 2000


def test_worker_pool_does_every_job_exactly_once(process_url: str) -> None:
    done = program("worker_pool.py", "--url", process_url, "--workers", "3", "--jobs", "24")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 24 of 24 jobs, each once" in done.stdout
    assert done.stdout.count("worker ") == 3


def test_registered_service_demo_finds_and_calls_the_service(process_url: str) -> None:
    done = program("registered_service.py", "demo", "--url", process_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\(instance \w+, pid (\d+)\): hello from \1", done.stdout), done.stdout
    assert "instances of 'hello' now: 0" in done.stdout


def test_leader_worker_works_only_while_it_leads(process_url: str, children: Children) -> None:
    script = str(ROOT / "recipes/leader_worker.py")
    args = [script, "--url", process_url, "--ttl", str(TTL), "--interval", "0.05"]
    first = children.start(args)
    first.search(r"leading \(token \d+\)", 30)
    first.search(r"work item 2 ", 10)
    second = children.start(args)
    second.search(r"campaigning", 30)
    time.sleep(0.5)
    assert not any("leading" in line for line in second.output), "only one copy leads"
    first.kill()
    second.search(r"leading \(token \d+\)", TTL + 10)
    second.search(r"work item 1 ", 10)
    # Paused past its ttl, the leader finds on resuming that it lost the lease, and stops working.
    second.signal(signal.SIGSTOP)
    time.sleep(TTL + 1.5)
    second.signal(signal.SIGCONT)
    second.search(r"lost the lease; campaigning again", 10)
    second.search(r"leading \(token \d+\)", TTL + 10)  # nobody else campaigns: it leads again
    second.signal(signal.SIGINT)
    assert second.wait(10) == 130


def test_recipes_without_a_store_use_the_default_one_from_coord_url(process_url: str) -> None:
    code = (
        "import coord\n"
        "with coord.Election('svc').campaign(timeout=10) as leadership:\n"
        "    print(leadership.is_leader, coord.Election('svc', store=coord.default_store()).leader() == b'')\n"
        "with coord.Lock('l') as lock:\n"
        "    print(lock.holding)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COORD_URL": process_url},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]
