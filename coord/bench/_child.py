"""The child process of a worker: ``python -m coord.bench._child module:function``.

The first line on stdin is the worker's arguments (JSON); later lines are the
parent's commands. The worker's messages go to the original stdout, one JSON
line each; anything else written to stdout goes to stderr, so a library that
prints cannot break the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from typing import Any

from ._procs import QueueChannel, resolve


def main() -> int:
    target = sys.argv[1]
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        line = json.dumps(message)
        with lock:
            out.write(line + "\n")

    args = json.loads(sys.stdin.readline())
    channel = QueueChannel(send)
    threading.Thread(target=_read_commands, args=(channel,), daemon=True).start()
    try:
        resolve(target)(args, channel)
    except BaseException:
        channel.send("error", traceback=traceback.format_exc())
        return 1
    return 0


def _read_commands(channel: QueueChannel) -> None:
    for line in sys.stdin:
        channel.inbox.put(json.loads(line))
    channel.inbox.put(None)


if __name__ == "__main__":
    sys.exit(main())
