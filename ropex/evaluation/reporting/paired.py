"""Paired differences of the loss between two evaluations (or two seed groups) scored on the
same rows: ``ropex.evaluate compare`` (every entry against the first, the declared
baseline) and ``ropex.study`` (every variant against the run's first variant).

Pairing. A unit is paired only where both evaluations hold a row with the same content digest
(inputs, targets and weights: :func:`ropex.evaluation.sampling.digests`), so pairing happens
only when the rows really are the same — the same data spec, seed, tokenizer and length. The
difference ``D = sum_i (y_a,i - y_b,i) / sum_i w_i`` over the paired units has the ratio
estimator's SE over those units (:func:`ropex.evaluation.sampling.ratio`); per-unit
differences cancel what the rows share, so it is far tighter than two unpaired intervals.
Identical evaluations give exactly ``0 ± 0``.

Seed groups: ``y`` are the seed-averaged per-unit losses, and the spread over seeds is added:
``var(d_s) / k`` when the two groups are the same trained runs (evaluation-time variants,
paired by seed), else ``s_a^2 / k_a + s_b^2 / k_b``. Rows that differ (no common digest): the
difference of the two unpaired estimates, marked ``unpaired``.
"""

from __future__ import annotations

import json
import math
from typing import Sequence

import numpy as np

from ropex.evaluation import sampling
from ropex.evaluation.reporting import grouped, tables, values
from ropex.evaluation.sampling import Estimate

ZERO_MARK = '≈0'


def _common(members: Sequence[dict], L: int) -> list[str]:
  """Digests every member holds at ``L``, in the first member's order."""
  us = [values.units(r, L) for r in members]
  if any(u is None for u in us):
    return []
  shared = set.intersection(*(set(u['digest']) for u in us))
  return [d for d in us[0]['digest'] if d in shared]


def _on(r: dict, L: int, digests: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  u = values.units(r, L)
  index = {d: i for i, d in enumerate(u['digest'])}
  pick = [index[d] for d in digests]
  return np.asarray(u['loss'])[pick], np.asarray(u['weight'])[pick]


def _run_key(r: dict) -> str:
  return json.dumps([r['run'].get('group'), r['run'].get('seeds')], sort_keys=True, default=str)


def _between(a: Sequence[dict], b: Sequence[dict], L: int, digests) -> tuple[float, int]:
  """The seed-spread variance of the difference and its degrees of freedom."""
  ratio = lambda r: sampling.ratio(*_on(r, L, digests)).value
  if len(a) == len(b) and sorted(map(_run_key, a)) == sorted(map(_run_key, b)) and len(a) > 1:
    by_key = {_run_key(r): r for r in b}
    d = [ratio(r) - ratio(by_key[_run_key(r)]) for r in a]     # same trained runs: per seed
    return float(np.var(d, ddof=1)) / len(d), len(d) - 1
  var, df = 0.0, 0
  for g in (a, b):
    if len(g) > 1:
      var += float(np.var([ratio(r) for r in g], ddof=1)) / len(g)
      df += len(g) - 1
  return var, df


def difference(a: Sequence[dict], b: Sequence[dict], L: int) -> tuple[Estimate | None, bool]:
  """``(loss of a - loss of b at L, paired?)``; a and b are seed groups (lists of results)."""
  digests = _common(list(a) + list(b), L)
  if not digests:
    return unpaired(a, b, L), False
  weight = _on(a[0], L, digests)[1]
  y = (np.mean([_on(r, L, digests)[0] for r in a], axis=0) -
       np.mean([_on(r, L, digests)[0] for r in b], axis=0))
  units = sampling.ratio(y, weight)
  if units is None:
    return None, True
  between, df_b = _between(a, b, L, digests)
  if not between:
    return units, True
  w = units.se ** 2 if units.se is not None else 0.0
  denom = w * w / max(units.df or 1, 1) + between * between / df_b
  return Estimate(units.value, math.sqrt(w + between), units.n,
                  (w + between) ** 2 / denom if denom > 0 else math.inf), True


def unpaired(a: Sequence[dict], b: Sequence[dict], L: int) -> Estimate | None:
  """The difference of the two groups' own estimates as if independent (Welch df)."""
  ea, eb = grouped.loss_at(a, L), grouped.loss_at(b, L)
  if ea is None or eb is None:
    return None
  if ea.se is None or eb.se is None:
    return Estimate(ea.value - eb.value, None, 0)
  va, vb = ea.se ** 2, eb.se ** 2
  inv = lambda df: 1.0 / df if df and math.isfinite(df) else 0.0
  denom = va * va * inv(ea.df) + vb * vb * inv(eb.df)
  return Estimate(ea.value - eb.value, math.sqrt(va + vb), min(ea.n, eb.n),
                  (va + vb) ** 2 / denom if denom > 0 else math.inf)


def _cell(est: Estimate | None, paired: bool, unpaired: Estimate | None) -> str:
  if est is None:
    return '–'
  if est.half_width is None:
    return f'{est.value:+.4f}' + ('' if paired else ' (unpaired)')
  text = f'{est.value:+.4f} ± {est.half_width:.4f}'
  if not est.excludes(0.0):
    text += f' {ZERO_MARK}'
  if not paired:
    return text + ' (unpaired: rows differ)'
  if unpaired is not None and unpaired.half_width is not None:
    text += f' (unpaired ± {unpaired.half_width:.4f})'
  return text


def markdown(groups: Sequence[Sequence[dict]], labels: Sequence[str],
             pairs: Sequence[tuple[int, int]]) -> str:
  """A table of ``loss(other) - loss(baseline)`` per length for ``pairs`` of group indices
  ``(baseline, other)`` (empty text when there is no perplexity to compare)."""
  pairs = [(i, j) for i, j in pairs if i != j and 'perplexity' in groups[i][0]
           and 'perplexity' in groups[j][0]]
  if not pairs:
    return ''
  lengths = sorted({L for i, j in pairs for g in (groups[i], groups[j]) for r in g
                    for L in r['perplexity']['lengths']})
  trained = min(r['run']['train_positions'] for g in groups for r in g)
  rows = []
  for i, j in pairs:
    cells = []
    for L in lengths:
      est, paired = difference(groups[j], groups[i], L)
      cells.append(_cell(est, paired, unpaired(groups[j], groups[i], L) if paired else None))
    rows.append([labels[j], labels[i]] + cells)
  return '\n'.join([
      'Paired differences in loss (nats per scored token), run minus baseline, over the rows '
      'both were scored on: ± the 95% Student-t interval of the per-unit differences (ratio '
      f'estimator; seed groups add the spread over seeds); {ZERO_MARK}: the interval holds 0 '
      '(not distinguishable from zero). In brackets, the unpaired interval of the same '
      'difference. Negative: lower loss than the baseline.', '',
      tables.table(['run', 'baseline'] + tables.length_header(lengths, trained), rows)]) + '\n'
