"""Benchmarks of Hephaestus, each figure set against a baseline measured in the same run.

Run them with `python -m bench` (or `make bench`); `docs/benchmarks.md` says
what each case measures, why its baseline is fair, and how to read the table.
Absolute numbers depend on the machine; the ratios are what carry over.
"""
