"""The ``coord`` command, run for real: ``python -m coord`` in subprocesses, on sqlite and the test servers.

Each test names the guarantee of docs/cli.md it checks: exit statuses, the
environment CMD gets, mutual exclusion between two ``coord lock``
invocations, CMD terminated when its lock is lost (coord paused past its ttl,
or its ticket deleted behind its back), signals passed on with the lock
released at once, ``--json`` output, and ``coord doctor``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Child, Children, required_env

TTL = 2.0  # etcd's minimum on the test server
#: CMD: print its start and the environment coord gave it, sleep, print its end (times on the wall clock).
WORKER = (
    "import json, os, sys, time; "
    "print('start', time.time(), json.dumps({k: v for k, v in os.environ.items() if k.startswith('COORD_')}), flush=True); "
    "time.sleep(float(sys.argv[1])); print('end', time.time(), flush=True)"
)
#: CMD: say it started; on SIGTERM, say so and exit 0 (or ignore it, with argv[1] == 'ignore'); else sleep for 30 s.
TRAPPING = (
    "import signal, sys, time; "
    "ignore = sys.argv[1:] == ['ignore']; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore else lambda *_: (print('TERM', flush=True), sys.exit(0))); "
    "print('running', flush=True); time.sleep(30)"
)


def coord(
    url: str | None, *args: str, input: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run ``coord [--url URL] ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "coord", *(["--url", url] if url else []), *args],
        input=input,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )


def start(children: Children, url: str, *args: str) -> Child:
    """Start ``coord --url URL ARGS``; its lines are read as they come."""
    return children.start(["-m", "coord", "--url", url, *args])


def json_lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def name() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


# -- the command itself ---------------------------------------------------------


def test_help_lists_every_subcommand_and_imports_no_backend_rich_or_matplotlib() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "coord", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    for command in [
        "get",
        "put",
        "ls",
        "rm",
        "watch",
        "lock",
        "elect",
        "services",
        "register",
        "bench",
        "demo",
        "doctor",
    ]:
        assert f"\n  {command} " in done.stdout, done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    heavy = {m for m in imported if m.split(".")[0] in ("rich", "matplotlib", "kazoo", "redis", "pyetcd", "grpc")}
    assert not heavy and not {m for m in imported if m.startswith("coord.backends")}, heavy
    assert coord(None, "--version").stdout.decode().startswith("coord ")


def test_a_bad_url_is_a_usage_error_and_a_password_is_never_printed() -> None:
    done = coord("redis://:sekrit@127.0.0.1:1", "get", "k")
    assert done.returncode == 4, done.stderr  # unreachable
    assert b"sekrit" not in done.stderr + done.stdout
    assert coord("bogus://x", "get", "k").returncode == 2


# -- keys ------------------------------------------------------------------------


def test_put_get_ls_rm_round_trip_and_their_json(process_url: str) -> None:
    assert coord(process_url, "put", "app/a", "hello").returncode == 0
    assert coord(process_url, "put", "app/b", "-", input=b"\xffbin\n").returncode == 0
    assert coord(process_url, "get", "app/a").stdout == b"hello"
    assert coord(process_url, "get", "app/b").stdout == b"\xffbin\n"
    [pair] = json_lines(coord(process_url, "--json", "get", "app/a").stdout)
    assert pair["key"] == "app/a" and pair["value"] == "hello" and isinstance(pair["revision"], int)
    listed = json_lines(coord(process_url, "--json", "ls", "app").stdout)
    assert [(p["key"], p["size"]) for p in listed] == [("app/a", 5), ("app/b", 5)]
    assert listed[1]["value_base64"]  # not UTF-8: given in base64
    table = coord(process_url, "ls", "app").stdout.decode()
    assert "app/a" in table and "revision" in table and "size" in table
    assert coord(process_url, "rm", "app/a").returncode == 0
    assert coord(process_url, "rm", "app/a").returncode == 3  # no such key
    assert coord(process_url, "get", "app/a").returncode == 3
    assert coord(process_url, "rm", "--prefix", "app").returncode == 0
    assert json_lines(coord(process_url, "--json", "ls").stdout) == []


def test_watch_prints_one_line_per_event_until_interrupted(process_url: str, children: Children) -> None:
    watcher = start(children, process_url, "--json", "watch", "--prefix", "w")
    time.sleep(1.0)  # the watch is open (an event sooner would only come as current state)
    coord(process_url, "put", "w/a", "1")
    coord(process_url, "put", "w/a", "2")
    coord(process_url, "rm", "w/a")
    events = [json.loads(watcher.search(r"^\{", 10).string) for _ in range(3)]
    assert [(e["type"], e["key"], e["value"]) for e in events] == [("put", "w/a", "1"), ("put", "w/a", "2"),
                                                                   ("delete", "w/a", None)]  # fmt: skip
    assert events[0]["revision"] < events[1]["revision"] < events[2]["revision"]
    watcher.signal(signal.SIGINT)
    assert watcher.wait(10) == 130


# -- lock ------------------------------------------------------------------------


def test_lock_gives_cmd_its_environment_and_exits_with_its_status(process_url: str) -> None:
    lock = name()
    done = coord(process_url, "lock", lock, "--ttl", str(TTL), "--", sys.executable, "-c", WORKER, "0")
    assert done.returncode == 0, done.stderr
    env = json.loads(done.stdout.decode().split(None, 2)[2].splitlines()[0])
    assert env["COORD_LOCK_NAME"] == lock and int(env["COORD_FENCING_TOKEN"]) > 0
    assert env["COORD_URL"] == process_url  # CMD's own coord calls reach the same store
    assert coord(process_url, "lock", lock, "--", "sh", "-c", "exit 7").returncode == 7
    assert coord(process_url, "lock", lock, "--", "no-such-command-here").returncode == 127


def test_two_lock_invocations_exclude_each_other(process_url: str, children: Children) -> None:
    lock = name()
    runs = [start(children, process_url, "lock", lock, "--", sys.executable, "-c", WORKER, "0.5") for _ in range(2)]
    for run in runs:
        assert run.wait(60) == 0, run.describe()
    spans = sorted(
        (
            float(run.expect("start", 1)[1]),
            float(run.expect("end", 1)[1]),
            int(json.loads(run.output[0].split(None, 2)[2])["COORD_FENCING_TOKEN"]),
        )
        for run in runs
    )
    (_start1, end1, token1), (start2, _end2, token2) = spans
    assert end1 <= start2, f"the two holders overlapped: {spans}"
    assert token2 > token1  # fencing tokens increase from holder to holder


def test_lock_timeout_exits_124_without_running_cmd(process_url: str, children: Children, tmp_path: Path) -> None:
    lock = name()
    holder = start(children, process_url, "lock", lock, "--", sys.executable, "-c", TRAPPING)
    holder.expect("running", 30)
    marker = tmp_path / "ran"
    started = time.monotonic()
    done = coord(process_url, "lock", lock, "--timeout", "0.5", "--", "touch", str(marker))
    assert done.returncode == 124, done.stderr
    assert not marker.exists()
    assert time.monotonic() - started < 10
    holder.signal(signal.SIGTERM)
    assert holder.wait(10) == 0  # CMD caught the SIGTERM coord passed on, and exited 0


def test_sigterm_is_passed_to_cmd_and_the_lock_released_at_once(process_url: str, children: Children) -> None:
    lock = name()
    # A ttl of 30 s: a successor within a few seconds proves a release, not an expiry.
    holder = start(children, process_url, "lock", lock, "--ttl", "30", "--", sys.executable, "-c", TRAPPING)
    holder.expect("running", 30)
    waiter = start(children, process_url, "lock", lock, "--ttl", "30", "--", sys.executable, "-c", WORKER, "0")
    time.sleep(1.0)  # the waiter queues
    assert waiter.quiet("start", 0.5)
    sent = time.time()
    holder.signal(signal.SIGTERM)
    holder.expect("TERM", 10)
    assert holder.wait(10) == 0
    began = float(waiter.expect("start", 10)[1])
    assert began - sent < 5, f"the waiter got the lock {began - sent:.1f} s after the SIGTERM"
    assert waiter.wait(30) == 0


def test_sigint_while_waiting_exits_130_and_leaves_no_ticket(process_url: str, children: Children) -> None:
    lock = name()
    holder = start(children, process_url, "lock", lock, "--ttl", "30", "--", sys.executable, "-c", TRAPPING)
    holder.expect("running", 30)
    waiter = start(children, process_url, "lock", lock, "--ttl", "30", "--", "true")
    time.sleep(1.0)
    waiter.signal(signal.SIGINT)
    assert waiter.wait(10) == 130
    holder.signal(signal.SIGTERM)
    assert holder.wait(10) == 0
    assert json_lines(coord(process_url, "--json", "ls", f"lock/{lock}").stdout) == []


def test_a_lock_lost_while_coord_is_paused_terminates_cmd(process_url: str, children: Children) -> None:
    lock = name()
    holder = start(children, process_url, "lock", lock, "--ttl", str(TTL), "--", sys.executable, "-c", TRAPPING)
    holder.expect("running", 30)
    holder.signal(signal.SIGSTOP)  # coord freezes, CMD runs on: its lease is not renewed
    time.sleep(TTL + 1.5)
    holder.signal(signal.SIGCONT)
    holder.expect("TERM", 10)  # coord found the lease lost at once and sent CMD SIGTERM
    assert holder.wait(10) == 123, holder.describe()
    assert any("was lost" in line for line in holder.errors)


def test_a_lock_whose_ticket_is_deleted_terminates_cmd_with_sigkill_after_the_grace(
    process_url: str, children: Children
) -> None:
    lock = name()
    args = ["lock", lock, "--ttl", "3", "--grace", "0.5", "--", sys.executable, "-c", TRAPPING, "ignore"]
    holder = start(children, process_url, *args)
    holder.expect("running", 30)
    assert coord(process_url, "rm", "--prefix", f"lock/{lock}").returncode == 0
    # The key guard reads the holder's ticket every ttl/3; CMD ignores SIGTERM, so SIGKILL after 0.5 s.
    assert holder.wait(15) == 123, holder.describe()


# -- elect -----------------------------------------------------------------------


def test_elect_runs_cmd_as_leader_and_observe_prints_each_leader(process_url: str, children: Children) -> None:
    election = name()
    observer = start(children, process_url, "--json", "elect", election, "--observe")
    first = start(children, process_url, "elect", election, "--value", "one", "--", sys.executable, "-c", TRAPPING)
    first.expect("running", 30)
    assert json.loads(observer.search(r"^\{", 10).string) == {"election": election, "value": "one"}
    second = start(children, process_url, "elect", election, "--value", "two", "--", sys.executable, "-c", WORKER, "0")
    assert second.quiet("start", 1.0)  # one leader at a time
    first.signal(signal.SIGTERM)
    assert first.wait(10) == 0
    env = json.loads(" ".join(second.expect("start", 10)[2:]))
    assert env["COORD_ELECTION_NAME"] == election and int(env["COORD_FENCING_TOKEN"]) > 0
    assert json.loads(observer.search(r"^\{", 10).string)["value"] == "two"
    assert second.wait(30) == 0
    observer.signal(signal.SIGINT)
    assert observer.wait(10) == 130


# -- services --------------------------------------------------------------------


def test_register_lists_the_instance_while_cmd_runs(process_url: str) -> None:
    service = name()
    # CMD runs `coord services` itself: COORD_URL brings it to the same store.
    inner = f"{sys.executable} -m coord --json services {service} && echo id=$COORD_INSTANCE_ID"
    done = coord(process_url, "register", service, "--address", "10.0.0.1:80", "--metadata", '{"zone": "a"}', "--",
                 "sh", "-c", inner)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    [instance] = [json.loads(line) for line in lines if line.startswith("{")]
    assert instance["service"] == service and instance["address"] == "10.0.0.1:80"
    assert instance["metadata"] == {"zone": "a"} and f"id={instance['id']}" in lines
    assert json_lines(coord(process_url, "--json", "services", service).stdout) == []  # deregistered at its end
    assert coord(process_url, "register", service, "--address", "x", "--metadata", "[1]", "--", "true").returncode == 2


# -- doctor, bench -----------------------------------------------------------------


def test_doctor_measures_a_reachable_store(tmp_path: Path) -> None:
    done = coord(f"sqlite://{tmp_path / 'coord.db'}", "--json", "doctor", "--ttl", "1", timeout=120)
    assert done.returncode == 0, done.stderr
    [report] = json_lines(done.stdout)
    assert report["reachable"] and report["backend"] == "sqlite"
    assert report["round_trip_ms"]["read_median"] >= 0
    # sqlite ends a dead owner's lease at its exit (its flock), before the deadline: within the ttl of it.
    assert -1000 <= report["lease_expiry_delay_ms"] < 1000
    failover = report["failover_ms"]
    assert failover["sigkill"] < 1000 + 1000 and failover["resign"] < 1000
    assert "sqlite" in str(report["guarantees"]) or "host" in str(report["guarantees"])


def test_doctor_on_a_server_measures_its_clock_skew(server_url: str) -> None:
    done = coord(None, "--json", "doctor", "--quick", server_url, timeout=60)
    assert done.returncode == 0, done.stderr
    [report] = json_lines(done.stdout)
    skew = report["clock_skew"]
    assert "offset_ms" in skew, skew
    assert abs(skew["offset_ms"]) < 2000  # the servers run on this host


@pytest.mark.parametrize(
    "variable",
    ["COORD_TEST_ETCD_SECURE", "COORD_TEST_ETCD2_SECURE", "COORD_TEST_ZOOKEEPER_SECURE", "COORD_TEST_REDIS_SECURE"],
)
def test_doctor_reads_the_clock_of_a_server_behind_tls_and_a_password(variable: str) -> None:
    """The skew is read over the Store's own connection: its CA, client certificate and credentials."""
    done = coord(None, "--json", "doctor", "--quick", required_env(variable), timeout=60)
    assert done.returncode == 0, done.stderr
    [report] = json_lines(done.stdout)
    assert abs(report["clock_skew"]["offset_ms"]) < 2000, report["clock_skew"]


def test_doctor_exits_4_for_an_unreachable_store() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = coord(None, "--json", "doctor", f"redis://:sekrit@127.0.0.1:{port}")
    assert done.returncode == 4
    [report] = json_lines(done.stdout)
    assert report["reachable"] is False and "sekrit" not in json.dumps(report)


def test_bench_runs_the_harness_and_writes_json_and_png(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    done = coord(None, "--json", "bench", "lock_uncontended", "--quick", "--store", f"sqlite://{tmp_path / 'b.db'}",
                 "--out", str(out), timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [written] = json_lines(done.stdout)
    assert Path(str(written["json"])).exists() and Path(str(written["png"])).exists()
