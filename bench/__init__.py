"""Benchmarks: each one runs the project beside its plain counterpart on a throwaway PostgreSQL.

Run them with ``make bench`` (``QUICK=1`` for a short pass). None of this is a test: ``make
test`` never imports it. Results go to ``bench/RESULTS.md`` and ``bench/results.json``.
"""
