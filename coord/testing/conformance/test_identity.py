"""A refused identity is one error on every backend: ``ConfigurationError``, at once, with no secret shown.

Part of the Store conformance suite (``coord.testing.conformance``): it runs
for each ``--refused-url`` given (a wrong password, an untrusted or missing
certificate), and is deselected when none is.
"""

from __future__ import annotations

import time
import traceback
from urllib.parse import unquote, urlsplit

import pytest

import coord


def test_a_refused_identity_is_a_configuration_error_at_once(refused_url: str) -> None:
    url = refused_url + ("&" if "?" in refused_url else "?") + "timeout=20"
    began = time.monotonic()
    with pytest.raises(coord.ConfigurationError) as info:
        coord.connect(url).close()
    took = time.monotonic() - began
    assert took < 10, f"refused only after {took:.1f} s: a refusal must not be retried until the timeout"
    password = urlsplit(refused_url).password
    if password:
        shown = f"{info.value}\n{info.value!r}\n" + "".join(traceback.format_exception(info.value))
        assert unquote(password) not in shown and password not in shown, "the password is shown"
