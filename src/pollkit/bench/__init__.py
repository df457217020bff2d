"""``pollkit bench``: measurements a user reruns to choose a driver, with pollkit alone.

:mod:`~pollkit.bench.harness` is the one harness (rounds, spreads, paired ratios, the judge,
tables, JSON) that the repository's ``benchmarks/`` use too; :mod:`~pollkit.bench.overhead` and
:mod:`~pollkit.bench.echo` are the studies; :mod:`~pollkit.bench.cli` imports them only to run.
"""
