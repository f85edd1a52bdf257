"""Reporting of evaluation results: tables, paired differences, seed groups and figures.

One direction, no import circle: :mod:`.compare` (writes ``comparison.md`` and the figures)
uses :mod:`.tables` (one row per result), :mod:`.grouped` (seed groups), :mod:`.paired`
(paired differences) and :mod:`ropex.evaluation.reporting.figures`; all of them read
numbers through :mod:`.values`.
The statistics themselves live in :mod:`ropex.evaluation.sampling` (one evaluation's rows)
and :mod:`ropex.evaluation.intervals` (seeds, tests, Holm). Nothing here imports
:mod:`ropex.evaluation.suite`, which imports :mod:`ropex.evaluation.reporting.figures` to
write one result's figures.
"""
