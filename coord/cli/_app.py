"""The ``coord`` group: global options, the subcommands in the issue's order, and errors turned into statuses."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

import click

import coord

from . import _status as status
from ._mask import mask_text, mask_url
from ._output import Output

__all__ = ["Settings", "cli", "main"]


@dataclass
class Settings:
    """The global options, handed to every subcommand as click's context object."""

    url: str | None
    out: Output

    def connect(self, url: str | None = None, **options: object) -> coord.Store:
        """Open the store of ``url``, else of ``--url``, else ``$COORD_URL``, else the embedded default."""
        return coord.connect(url or self.url, **options)


def where(store: coord.Store) -> str:
    """The store's location as coord prints it: passwords masked."""
    return mask_url(store.describe())


class _Masking(logging.Formatter):
    """Log lines with every URL in them masked: a client library's DEBUG line may quote one whole."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


class _Ordered(click.Group):
    """Subcommands listed in the order they were added (the issue's), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_Ordered, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--url",
    envvar="COORD_URL",
    show_envvar=True,
    metavar="URL",
    help="The store (sqlite:///PATH, etcd://H:P, zookeeper://H:P, redis://H:P, memory://). "
    "Default: $COORD_URL, else the embedded sqlite store.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: one JSON object per line on stdout.")
@click.option("-v", "--verbose", count=True, help="Log to stderr: -v for INFO, -vv for DEBUG.")
@click.version_option(coord.__version__, "--version", prog_name="coord", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, url: str | None, as_json: bool, verbose: int) -> None:
    """Distributed coordination from the shell: keys, locks, elections, services, over one Store API.

    Exit statuses are listed in docs/cli.md: 0 success, 1 store error, 2 usage,
    3 no such key, 4 store unreachable; lock/elect/register exit with CMD's own
    status, 123 if the lock or leadership was lost, 124 on --timeout.
    """
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Masking("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, handlers=[handler])
    ctx.obj = Settings(url or None, Output(as_json))


def _register_commands() -> None:
    from . import bench, demo, doctor, kv, lock, services

    for command in (kv.get, kv.put, kv.ls, kv.rm, kv.watch, lock.lock, lock.elect):
        cli.add_command(command)
    for command in (services.services, services.register, bench.bench, demo.demo, doctor.doctor):
        cli.add_command(command)


_register_commands()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``coord`` with ``argv`` (default: ``sys.argv[1:]``); return its exit status (see ``_status``)."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="coord", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return status.USAGE if exc.exit_code == 2 else exc.exit_code
    except click.Abort:
        click.echo("aborted", err=True)
        return status.INTERRUPTED
    except KeyboardInterrupt:
        return status.INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (coord ls | head): nothing to say
        return status.OK
    except coord.CoordError as exc:
        click.echo(f"coord: {mask_text(str(exc))}", err=True)
        return error_status(exc)
    except ValueError as exc:  # a bound coord checks (a ttl over 30 days, a value over 1 MiB)
        click.echo(f"coord: {mask_text(str(exc))}", err=True)
        return status.USAGE
    except Exception as exc:  # a bug, or a client library's error that escaped: its traceback, URLs masked
        click.echo(mask_text("".join(traceback.format_exception(exc))), err=True, nl=False)
        return status.ERROR
    return result if isinstance(result, int) else status.OK


def error_status(exc: coord.CoordError) -> int:
    """The exit status of a coord error that ended a command."""
    if isinstance(exc, coord.KeyNotFound):
        return status.NOT_FOUND
    if isinstance(exc, coord.StoreUnavailable):
        return status.UNAVAILABLE
    if isinstance(exc, (coord.ConfigurationError, coord.InvalidKey)):
        return status.USAGE
    return status.ERROR
