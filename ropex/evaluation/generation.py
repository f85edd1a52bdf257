"""RULER's string-match metrics, applied to free greedy generations (which
:meth:`ropex.evaluation.scoring.Scorer.generate` writes with the one cached decoder of ropex,
:func:`ropex.model.generation.generate`).

RULER's metrics (``scripts/eval/synthetic/constants.py`` of github.com/NVIDIA/RULER), per
example with prediction ``pred`` (the decoded generation) and references ``ref`` (the expected
answers, strings)::

  string_match_all:  sum(1.0 if r.lower() in pred.lower() else 0.0 for r in ref) / len(ref)
  string_match_part: max(1.0 if r.lower() in pred.lower() else 0.0 for r in ref)

averaged over examples and reported x 100, rounded to 2 decimals. Order never matters: an
answer counts when it occurs anywhere in the prediction. RULER's evaluation strips the
prediction and turns control characters into newlines first (``postprocess_pred`` in
``scripts/eval/evaluate.py``); :func:`postprocess` does the same.
"""

from __future__ import annotations

import re
from typing import Sequence

_CONTROL = re.compile(r'[\x00-\x1f]')


def postprocess(pred: str) -> str:
  """RULER's ``postprocess_pred``: strip, control characters -> newline, strip."""
  return _CONTROL.sub('\n', pred.strip()).strip()


def match_all(pred: str, refs: Sequence[str]) -> float:
  """One example's ``string_match_all``: the fraction of ``refs`` found in ``pred``."""
  p = pred.lower()
  return sum(1.0 if r.lower() in p else 0.0 for r in refs) / len(refs)


def match_part(pred: str, refs: Sequence[str]) -> float:
  """One example's ``string_match_part``: 1 when any of ``refs`` is found in ``pred``."""
  p = pred.lower()
  return max(1.0 if r.lower() in p else 0.0 for r in refs)


def string_match_all(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
  """RULER's ``string_match_all`` over a set of examples (in %, 2 decimals)."""
  return round(sum(match_all(p, r) for p, r in zip(preds, refs)) / len(preds) * 100, 2)


def string_match_part(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
  """RULER's ``string_match_part`` over a set of examples (in %, 2 decimals)."""
  return round(sum(match_part(p, r) for p, r in zip(preds, refs)) / len(preds) * 100, 2)


METRICS = {'string_match_all': match_all, 'string_match_part': match_part}
