"""Store URLs as coord shows them: with passwords and tokens masked.

A stopgap of the command line's own: the security issue will give the
contract one shared masking helper, and this module will then defer to it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["mask_text", "mask_url"]

MASK = "***"
#: Query options whose values are secrets (compared in lower case, as substrings).
_SECRET_OPTIONS = ("password", "passwd", "token", "secret", "credential", "auth")


def mask_url(url: str) -> str:
    """``url`` with its user part's password and the values of secret options replaced by ``***``.

    A user part without a password (``redis://TOKEN@host``) is masked whole:
    some services take a token there.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK  # a URL we cannot even split may hide a secret anywhere
    netloc = parts.netloc
    if "@" in netloc:
        user, _, hosts = netloc.rpartition("@")
        name, colon, _password = user.partition(":")
        netloc = f"{name}:{MASK}@{hosts}" if colon else f"{MASK}@{hosts}"
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        masked = [(k, MASK if any(s in k.lower() for s in _SECRET_OPTIONS) else v) for k, v in pairs]
        shown += "?" + urlencode(masked, safe="*/:,")
    return shown


_URL_IN_TEXT = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")


def mask_text(text: str) -> str:
    """``text`` (an error message, say) with every URL in it masked."""
    return _URL_IN_TEXT.sub(lambda match: mask_url(match.group(0)), text)
