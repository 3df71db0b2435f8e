"""Workers: benchmark code run in a process of its own, talking to the parent in JSON lines.

A worker is a function ``fn(args, channel)`` named ``"module:function"``. The
parent starts it with ``Group.start``, in a child process (``_child``) or, for
``memory://`` (which lives in one process), in a thread of the parent; the
worker code is the same either way. Messages are dicts with a ``kind``; a
worker's last message is its ``result``, after which it may exit. A worker
that exits otherwise, unless the parent ended it, fails the benchmark.

Times in messages are ``time.monotonic()``: on Linux that is one clock for
every process of the machine, so the parent may subtract a child's time from
its own.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import coord

__all__ = ["Channel", "Group", "Worker", "WorkerError", "resolve", "run_one"]

Message = dict[str, Any]


class WorkerError(RuntimeError):
    """A worker failed, or exited when it should not have; the message carries its traceback or log."""


class Channel(Protocol):
    """The worker's side: ``send`` to the parent, ``recv`` its commands (``EOFError`` once it is gone)."""

    def send(self, kind: str, **fields: Any) -> None: ...

    def recv(self, timeout: float | None = None) -> Message | None: ...


WorkerFn = Callable[[dict[str, Any], Channel], None]


def resolve(target: str) -> WorkerFn:
    module, _, name = target.partition(":")
    fn: WorkerFn = getattr(importlib.import_module(module), name)
    return fn


class QueueChannel:
    """A channel over queues: the thread worker's, and the child's (fed by a stdin reader thread)."""

    def __init__(self, send: Callable[[Message], None]) -> None:
        self._send = send
        self.inbox: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self._eof = False

    def send(self, kind: str, **fields: Any) -> None:
        self._send({"kind": kind, **fields})

    def recv(self, timeout: float | None = None) -> Message | None:
        if self._eof:
            raise EOFError
        try:
            message = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if message is None:
            self._eof = True
            raise EOFError
        return message


def child_path() -> str:
    """PYTHONPATH for children: the folder holding this ``coord`` first, so they run the same code."""
    root = str(Path(coord.__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH")
    return root if not rest else f"{root}{os.pathsep}{rest}"


class Worker:
    """One worker of a group: a child process, or a thread when ``thread`` is true."""

    def __init__(self, group: Group, number: int, target: str, args: dict[str, Any], thread: bool) -> None:
        self.group = group
        self.number = number
        self.ended = False  # set when the parent ends it: its exit is then expected
        self.process: subprocess.Popen[str] | None = None
        self._channel: QueueChannel | None = None
        if thread:
            self._channel = QueueChannel(lambda message: group.inbox.put((self, message)))
            threading.Thread(target=self._run_thread, args=(target, args), daemon=True).start()
            return
        env = {**os.environ, "PYTHONPATH": child_path(), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coord.bench._child", target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=group.log,
            env=env,
            text=True,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(args) + "\n")
        self.process.stdin.flush()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _run_thread(self, target: str, args: dict[str, Any]) -> None:
        assert self._channel is not None
        try:
            resolve(target)(args, self._channel)
        except BaseException:
            self._channel.send("error", traceback=traceback.format_exc())
        self.group.inbox.put((self, {"kind": "exited", "code": 0}))

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.group.inbox.put((self, json.loads(line)))
            except ValueError:
                continue  # not ours: a library that wrote to the real stdout
        self.group.inbox.put((self, {"kind": "exited", "code": self.process.wait()}))

    def send(self, kind: str, **fields: Any) -> None:
        message = {"kind": kind, **fields}
        if self._channel is not None:
            self._channel.inbox.put(message)
            return
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # it exited; the reader reports how

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the child (its exit is expected from now on)."""
        if self.process is None:
            raise WorkerError("a thread worker cannot be signalled")
        self.ended = True
        self.process.send_signal(signum)

    def close(self) -> None:
        """End the worker: close its input (a worker reading commands returns), then kill it if it lingers."""
        self.ended = True
        if self._channel is not None:
            self._channel.inbox.put(None)
            return
        assert self.process is not None
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Group:
    """Workers whose messages arrive in one inbox, in order, each tagged with its worker.

    ``log`` receives the children's stderr; errors quote its end.
    """

    def __init__(self, log: Path, *, threads: bool = False) -> None:
        self.log_path = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log: IO[bytes] = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.threads = threads
        self.workers: list[Worker] = []
        self.inbox: queue.Queue[tuple[Worker, Message]] = queue.Queue()
        self.backlog: list[tuple[Worker, Message]] = []

    def start(self, target: str, args: dict[str, Any]) -> Worker:
        worker = Worker(self, len(self.workers), target, args, self.threads)
        self.workers.append(worker)
        return worker

    def expect(self, kind: str, timeout: float, worker: Worker | None = None) -> tuple[Worker, Message]:
        """The first message ``kind`` (from ``worker``, if given) not taken yet; others wait their turn."""
        deadline = time.monotonic() + timeout
        while True:
            for n, (who, message) in enumerate(self.backlog):
                self._check(who, message)
                if message["kind"] == kind and (worker is None or who is worker):
                    del self.backlog[n]
                    return who, message
            try:
                self.backlog.append(self.inbox.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise WorkerError(f"no {kind!r} from the workers within {timeout:.0f} s{self._tail()}") from None

    def gather(self, kind: str, timeout: float, workers: list[Worker] | None = None) -> list[Message]:
        """One message ``kind`` from each of ``workers`` (default: all), in the workers' order."""
        chosen = self.workers if workers is None else workers
        deadline = time.monotonic() + timeout
        return [self.expect(kind, max(0.0, deadline - time.monotonic()), worker)[1] for worker in chosen]

    def taken(self, kind: str, worker: Worker) -> list[Message]:
        """Take every message ``kind`` already received from ``worker``."""
        while True:
            try:
                self.backlog.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        found = [message for who, message in self.backlog if who is worker and message["kind"] == kind]
        self.backlog = [(w, m) for w, m in self.backlog if not (w is worker and m["kind"] == kind)]
        return found

    def _check(self, who: Worker, message: Message) -> None:
        if message["kind"] == "result":
            who.ended = True  # a worker's last message: it may exit from now on
        elif message["kind"] == "error":
            raise WorkerError(f"worker {who.number} (pid {who.pid}) failed:\n{message['traceback']}")
        if message["kind"] == "exited" and not who.ended:
            raise WorkerError(f"worker {who.number} (pid {who.pid}) exited with {message['code']}{self._tail()}")

    def _tail(self) -> str:
        self.log.flush()
        try:
            text = self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""
        return f"; end of {self.log_path}:\n{text}" if text.strip() else ""

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.log.close()

    def __enter__(self) -> Group:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def run_one(log: Path, target: str, args: dict[str, Any], timeout: float, *, thread: bool = False) -> Message:
    """Run one worker to its ``result`` message and return it."""
    with Group(log, threads=thread) as group:
        group.start(target, args)
        return group.expect("result", timeout)[1]


def kill(worker: Worker) -> float:
    """SIGKILL ``worker``; return the moment the signal was sent."""
    sent = time.monotonic()
    worker.signal(signal.SIGKILL)
    return sent
