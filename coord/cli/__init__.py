"""The ``coord`` command: the Store and the recipes from the shell (docs/cli.md).

A layer of its own, a program: it uses coord's public API, ``coord.testing``
and ``coord.bench``, never a backend module. Its modules:

- ``_app``: the ``coord`` group, its global options (``--url``, ``--json``,
  ``-v``, ``--version``), and coord errors turned into exit statuses;
  ``_status``: every exit status, in one place;
- ``_output``: JSON lines or text and tables (rich's, with ``coord[cli]``);
  ``_mask``: URLs with their secrets masked;
- ``kv``: ``get``, ``put``, ``ls``, ``rm``, ``watch``;
- ``lock``: ``lock`` and ``elect``; ``services``: ``services`` and
  ``register``; all three run CMD through ``_supervise`` (the holding, the
  signals, the loss) and ``_child`` (CMD in a process group of its own);
- ``demo``: the failover demo, on ``_failover`` (candidate processes,
  ``_candidate``, and what they report);
- ``doctor``: measures a store (``_skew``: its clock against this host's;
  ``_guarantees``: what each backend promises, from docs/backends.md);
- ``bench``: ``coord.bench`` with a progress bar.

Imports stay lazy where they cost: ``coord --help`` imports no backend,
no rich and no matplotlib.
"""

from ._app import main

__all__ = ["main"]
