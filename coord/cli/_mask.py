"""Store URLs as the command line shows them: passwords and tokens masked, by the contract's one helper."""

from __future__ import annotations

from .._url import mask as mask_url
from .._url import mask_text

__all__ = ["mask_text", "mask_url"]
