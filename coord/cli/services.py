"""``services`` and ``register``: service discovery from the shell."""

from __future__ import annotations

import datetime
import json
from urllib.parse import unquote

import click

import coord

from ._app import Settings
from ._supervise import Job, supervise

__all__ = ["register", "services"]

_pass = click.make_pass_decorator(Settings)


@click.command()
@click.argument("service", required=False)
@_pass
def services(settings: Settings, service: str | None) -> None:
    """List the live instances of SERVICE (of every service without one)."""
    with settings.connect() as store:
        names = [service] if service else _service_names(store)
        instances = [instance for name in names for instance in coord.discover(name, store=store)]
    if settings.out.json:
        for instance in instances:
            settings.out.record({
                "service": instance.service,
                "id": instance.id,
                "address": instance.address,
                "metadata": dict(instance.metadata),
                "registered_at": instance.registered_at,
            })  # fmt: skip
        return
    rows = [
        (i.service, i.id, i.address, json.dumps(dict(i.metadata)) if i.metadata else "", _when(i.registered_at))
        for i in instances
    ]
    settings.out.table(["service", "instance", "address", "metadata", "registered"], rows)


def _service_names(store: coord.Store) -> list[str]:
    # Instances are services/<quoted service name>/<instance id> (coord/recipes/registration.py).
    segments = {pair.key.split("/")[1] for pair in store.list("services") if pair.key.count("/") == 2}
    return sorted(unquote(segment) for segment in segments)


def _when(timestamp: float) -> str:
    if not timestamp:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).astimezone()
    return moment.isoformat(timespec="seconds")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("service")
@click.option("--address", required=True, help="Where clients reach this instance (host:port, a URL...).")
@click.option("--ttl", type=float, default=10.0, show_default=True, metavar="S", help="The session's ttl, in seconds.")
@click.option("--metadata", metavar="JSON", help="A JSON object stored with the instance.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
@_pass
def register(
    settings: Settings, service: str, address: str, ttl: float, metadata: str | None, cmd: tuple[str, ...]
) -> int:
    """Register an instance of SERVICE while CMD runs; exit with CMD's status.

    CMD gets COORD_SERVICE, COORD_INSTANCE_ID and COORD_FENCING_TOKEN. If the
    registration is lost (coord paused or cut off past the ttl), CMD runs on
    and the instance registers again as soon as the store answers. Signals
    are passed on to CMD as by `coord lock`; the instance is deregistered as
    soon as CMD ends.
    """
    try:
        meta = json.loads(metadata) if metadata else {}
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from exc
    if not isinstance(meta, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--metadata")

    def obtain(store: coord.Store) -> coord.Registration:
        return coord.register(service, address=address, metadata=meta, ttl=ttl, store=store)

    def env(registration: coord.Registration) -> dict[str, str]:
        return {
            **({"COORD_URL": settings.url} if settings.url else {}),
            "COORD_SERVICE": service,
            "COORD_INSTANCE_ID": registration.id,
            "COORD_FENCING_TOKEN": str(registration.token),
        }

    job = Job(f"registration of {service!r}", obtain, coord.Registration.close, env, cmd, 0.0, ends_on_loss=False)
    return supervise(settings, job)
