"""What the commands print: JSON lines with ``--json``, else text and tables (rich's, when installed).

Standard output carries results only; messages go to standard error, so a
pipe gets data and a terminal gets both. rich comes with ``coord[cli]``:
without it tables print as tab-separated columns under a header line.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from typing import Any

import click

__all__ = ["Output", "value_fields", "value_text"]

# Control characters shown escaped, so one value stays on one line.
_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def value_text(value: bytes | None) -> str:
    """A value on one line: UTF-8, with control characters and undecodable bytes escaped."""
    if value is None:
        return ""
    return value.decode("utf-8", "backslashreplace").translate(_ESCAPES)


def value_fields(value: bytes | None) -> dict[str, Any]:
    """A value in JSON: ``value`` as text when it is UTF-8, else ``value_base64``."""
    if value is None:
        return {"value": None}
    try:
        return {"value": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"value_base64": base64.b64encode(value).decode("ascii")}


class Output:
    """Where results go: JSON (one object per line) or text for people."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def record(self, obj: Any) -> None:
        """One JSON line on standard output, flushed (``watch`` and ``--observe`` stream them)."""
        click.echo(json.dumps(obj, sort_keys=False))
        sys.stdout.flush()

    def line(self, text: str) -> None:
        click.echo(text)
        sys.stdout.flush()

    def note(self, text: str) -> None:
        """A message for a person, on standard error."""
        click.echo(text, err=True)

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None) -> None:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            if title:
                self.note(title)
            self.line("\t".join(columns))
            for row in rows:
                self.line("\t".join(str(cell) for cell in row))
            return
        table = Table(*columns, title=title, title_justify="left")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        console = Console()
        if not sys.stdout.isatty():  # in a pipe, as wide as it needs: a long key is printed whole, not wrapped
            console = Console(width=Console(width=100_000).measure(table).maximum)
        console.print(table)
