"""Reproducible side-by-side benchmarks of pollkit, the raw calls and their peers.

The machinery behind ``benchmarks/*.py`` and ``pollkit bench``.  Every study
runs its contenders in alternating rounds (A B C A B C ...) and reports the
median of the rounds with their spread, so a noisy machine shows up as a wide
spread rather than as a false winner.

Only the standard library is imported here; matplotlib is imported by
:mod:`pollkit.bench.plot` alone, when a plot is asked for.

Modules:

* :mod:`~pollkit.bench.overhead`: the cost of one ``poll(0)`` against the raw
  ``select`` call and stdlib ``selectors`` (the ``overhead`` and ``scaling``
  studies); :mod:`~pollkit.bench.breakdown` says what each part of a
  driver's hot path costs.
* :mod:`~pollkit.bench.echo`: echo servers under a closed-loop load generator
  in another process: messages/s, latency, server CPU per message, and
  server memory per held idle connection.
* :mod:`~pollkit.bench.peers`: the servers pollkit is compared with.
* :mod:`~pollkit.bench.loadgen` (and ``loadgen.c``): the load generator.
* :mod:`~pollkit.bench.procfs`: CPU time and memory of another process.
* :mod:`~pollkit.bench.cli`: ``pollkit bench``; :mod:`~pollkit.bench.plot`:
  its PNGs.
"""

from __future__ import annotations

from .stats import Spread as Spread
from .stats import summarize as summarize

__all__ = ["Spread", "summarize"]
