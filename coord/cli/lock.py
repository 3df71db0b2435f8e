"""``lock`` and ``elect``: run a command while holding a lock, a semaphore slot, or the leadership."""

from __future__ import annotations

import click

import coord

from . import _status as status
from ._app import Settings
from ._supervise import Job, supervise

__all__ = ["elect", "lock"]

_pass = click.make_pass_decorator(Settings)

_GRACE = click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="S",
    help="If the lock is lost: seconds between SIGTERM and SIGKILL to CMD.",
)
_TTL = click.option(
    "--ttl", type=float, default=10.0, show_default=True, metavar="S", help="The session's ttl, in seconds."
)


def _base_env(settings: Settings) -> dict[str, str]:
    # CMD's own coord calls then reach the same store.
    return {"COORD_URL": settings.url} if settings.url else {}


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@_TTL
@click.option(
    "--timeout", type=float, metavar="S", help=f"Give up after S seconds without the lock: exit {status.TIMED_OUT}."
)
@click.option("--limit", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Up to N holders at once (a semaphore).")  # fmt: skip
@_GRACE
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
@_pass
def lock(
    settings: Settings, name: str, ttl: float, timeout: float | None, limit: int, grace: float, cmd: tuple[str, ...]
) -> int:
    """Run CMD while holding the lock NAME; exit with CMD's status.

    CMD gets COORD_FENCING_TOKEN and COORD_LOCK_NAME. If the lock is lost,
    CMD's process group gets SIGTERM, then SIGKILL after --grace, and coord
    exits 123. SIGINT, SIGTERM and SIGHUP to coord are passed on to CMD, and
    the lock is released as soon as CMD ends. With --limit N it is a
    semaphore of N holders (a different name space: every holder of NAME must
    give the same N).
    """

    def obtain(store: coord.Store) -> coord.Semaphore | None:
        held = (
            coord.Lock(name, store=store, ttl=ttl) if limit == 1 else coord.Semaphore(name, limit, store=store, ttl=ttl)
        )
        return held if held.acquire(timeout=timeout) else None

    def env(held: coord.Semaphore) -> dict[str, str]:
        return {**_base_env(settings), "COORD_FENCING_TOKEN": str(held.token), "COORD_LOCK_NAME": name}

    job = Job(f"lock {name!r}", obtain, coord.Semaphore.release, env, cmd, grace)
    return supervise(settings, job)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.option("--value", default="", help="What observers see while this candidate leads (default: empty).")
@_TTL
@click.option(
    "--timeout", type=float, metavar="S", help=f"Give up after S seconds without leading: exit {status.TIMED_OUT}."
)
@_GRACE
@click.option(
    "--observe", is_flag=True, help="Print the leader's value now and each time it changes, until interrupted."
)
@click.argument("cmd", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD [ARGS]...]")
@_pass
def elect(
    settings: Settings,
    name: str,
    value: str,
    ttl: float,
    timeout: float | None,
    grace: float,
    observe: bool,
    cmd: tuple[str, ...],
) -> int:
    """Campaign in the election NAME and run CMD as its leader; or, with --observe, watch who leads.

    CMD gets COORD_FENCING_TOKEN and COORD_ELECTION_NAME; loss and signals are
    handled as by `coord lock`.
    """
    if observe:
        if cmd:
            raise click.UsageError("--observe takes no CMD")
        return _observe(settings, name)
    if not cmd:
        raise click.UsageError("missing CMD: coord elect NAME -- CMD [ARGS]... (or --observe)")

    def obtain(store: coord.Store) -> coord.Leadership | None:
        try:
            return coord.Election(name, store=store, ttl=ttl, value=value.encode()).campaign(timeout=timeout)
        except TimeoutError:
            return None

    def env(leadership: coord.Leadership) -> dict[str, str]:
        return {**_base_env(settings), "COORD_FENCING_TOKEN": str(leadership.token), "COORD_ELECTION_NAME": name}

    job = Job(f"leadership of {name!r}", obtain, coord.Leadership.resign, env, cmd, grace)
    return supervise(settings, job)


def _observe(settings: Settings, name: str) -> int:
    from ._output import value_fields, value_text

    with settings.connect() as store:
        for value in coord.Election(name, store=store).observe():
            if settings.out.json:
                settings.out.record({"election": name, **value_fields(value)})
            else:
                settings.out.line(value_text(value))
    return status.OK
