"""coord's benchmarks: coord next to its peers, side by side in one run (issue 9).

    python -m coord.bench [BENCHMARK...] [--url URL ...] [--peers] [--quick] --out DIR
    python -m coord.bench.report --in DIR          # regenerates docs/benchmarks.md

Each benchmark writes ``DIR/<name>.json`` (machine, versions, parameters, raw
samples, medians and p99s, what was not measured and why) and
``DIR/<name>.png``. The modules:

- benchmarks, one each: ``lock_uncontended``, ``lock_contended``, ``herd``
  (store operations per handoff against 2-64 waiters, and per campaign),
  ``failover``, ``registration`` (heartbeat CPU of 1,000 registrations),
  ``watch`` (put → another process's watch event), ``store_ops`` (each
  operation next to the client's own round trip). Each has ``run``,
  ``summarize`` (tables and issue 9's targets, from the JSON alone) and
  ``plot``, and its worker functions.
- ``_runner`` runs a list of them; ``__main__`` is its command line;
  ``report`` writes docs/benchmarks.md from a results folder.
- ``_procs`` and ``_child``: workers in processes of their own (threads for
  ``memory://``) talking JSON lines; ``_endpoints``: the stores given;
  ``_locks`` and ``_elections``: coord's recipes and the peers' behind one
  small interface; ``_counting``: a Store whose operations are counted;
  ``_servers``: the servers' own request counters and versions;
  ``_machine``, ``_stats``, ``_result``, ``_compare``, ``_plot``: the
  record, its numbers, its tables and its pictures.

Only coord's public API, ``coord._registry`` and the peers' libraries are
used (the peers lazily, in the workers); never a backend module.
"""

from __future__ import annotations

from ._runner import BENCHMARKS, run

__all__ = ["BENCHMARKS", "run"]
