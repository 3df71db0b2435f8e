"""Secrets never shown: a password or token in a URL appears in no message, repr, str or log line."""

from __future__ import annotations

import logging
import traceback

import pytest

import coord
from coord._url import mask

SECRET = "Xyzzy-s3cret-9461"


def shown(error: BaseException) -> str:
    """Everything a user could see of an error: its str, repr and whole traceback, causes included."""
    return f"{error}\n{error!r}\n" + "".join(traceback.format_exception(error))


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{SECRET}@127.0.0.1:notaport",
        f"redis://user:{SECRET}@127.0.0.1:70000",
        f"redis://user:{SECRET}@[::1",
        f"nosuch://user:{SECRET}@host",
        f"redis://user:{SECRET}@127.0.0.1:1?colour=red",
        f"redis://user:{SECRET}@127.0.0.1:1?timeout=never",
        f"redis://127.0.0.1:1?password={SECRET}&timeout=never",
        f"etcd://user:{SECRET}@127.0.0.1:1?timeout=0.5",
        f"zookeeper://user:{SECRET}@127.0.0.1:1?timeout=0.5",
        f"redis://user:{SECRET}@127.0.0.1:1?timeout=0.5",
    ],
)
def test_a_failing_url_never_shows_its_password(url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(coord.CoordError) as info:
        coord.connect(url)
    assert SECRET not in shown(info.value)
    assert SECRET not in caplog.text


def test_mask_hides_passwords_and_secret_options() -> None:
    assert mask(f"redis://user:{SECRET}@h:1/0") == "redis://user:***@h:1/0"
    assert mask(f"consul://h?token={SECRET}&dc=a") == "consul://h?token=***&dc=a"
    assert mask("sqlite:///tmp/a.db") == "sqlite:///tmp/a.db"


def test_a_location_repr_masks_its_url() -> None:
    from coord._url import parse_url

    location, _ = parse_url(f"redis://user:{SECRET}@h:1")
    assert SECRET not in repr(location) and location.masked == "redis://user:***@h:1"
