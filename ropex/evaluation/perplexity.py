"""Perplexity by context length, and loss by (bucketed) token position.

For every requested length ``L`` (exactly those, in the order given) rows of ``L`` tokens are
scored and reduced with their ``weights``::

  loss(L) = sum(w * loss) / sum(w),  perplexity(L) = exp(loss(L)),
  accuracy(L) = sum(w * [argmax == target]) / sum(w)

and, for position buckets ``[k * bucket, (k + 1) * bucket)`` of the rows' ``positions``, the
same weighted mean loss per bucket (the curve that shows where a model stops generalising).
A length whose rows cannot be made (or that gets no rows) has ``None`` numbers, the reason in
``errors``. Rows that name their documents (``doc_ids``, see
:func:`ropex.evaluation.rows.prefixes`) have them listed per length in ``document_ids``.

Sampling error (:mod:`ropex.evaluation.sampling`): every loss (per length, per position
bucket) comes with ``se``, the ratio-estimator standard error over the *units* it averages
(one unit = one row: a document's prefix, a stream row or a generated example), and the
count of units (``rows``) and tokens (``weight``). ``units[L]`` keeps each unit's id, content
digest, loss sum and weight, so that two evaluations on the same rows can be paired.

Sizing: with a :class:`Sizing` the rows come from ``rows_fn(L, count)`` (the first ``count``
rows; fewer when the data holds fewer) and ``count`` doubles from ``Sizing.first`` until the
loss's SE at every length is at most ``target_se``, the data runs out, or ``max_units`` is
reached (``sizing.stop``: ``target``, ``data``, ``max_examples``). The same units are used at
every length.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from ropex import fields
from ropex.errors import ConfigError
from ropex.evaluation import sampling

RowsFn = Callable[[int], dict]


def check_lengths(lengths: Sequence[int], field: str = '--lengths') -> tuple[int, ...]:
  """Positive, distinct integers, kept in the order given."""
  out = []
  for value in lengths:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ConfigError(f'{field} has {value!r}; allowed: positive integers')
    if int(value) in out:
      raise ConfigError(f'{field} lists {value} twice; allowed: distinct lengths')
    out.append(int(value))
  if not out:
    raise ConfigError(f'{field} is empty; give at least one length')
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class Sizing:
  """``--examples auto``: grow the rows until the loss's SE is at most ``target_se``."""
  target_se: float
  max_units: int
  first: int = 16


def _exp(loss: float | None) -> float | None:
  return None if loss is None else (math.exp(loss) if loss < 700 else float('inf'))


def _empty(L: int) -> dict:
  rows = {k: np.zeros((0, L), np.int32) for k in ('inputs', 'targets', 'positions')}
  rows['weights'] = np.zeros((0, L), np.float32)
  return rows


def _rows(rows_fn, L: int, count: int | None, errors: dict) -> dict:
  try:
    rows = rows_fn(L) if count is None else rows_fn(L, count)
  except ConfigError as e:   # e.g. a task that needs longer examples: no rows at this length
    errors[str(L)] = str(e)
    rows = _empty(L)
  if rows['inputs'].shape[1:] != (L,):
    raise ValueError(f'rows for length {L} have shape {rows["inputs"].shape}')
  return rows


def score_units(scorer, rows: dict, bucket: int, first: int = 0) -> dict:
  """Per-unit (per-row) sums of one length's rows ``[first:]``: ``loss`` (weighted token loss),
  ``weight``, ``correct``, position-bucket ``bucket_loss`` / ``bucket_weight`` [N, K], ``id``
  (``doc_ids`` or the row number) and ``digest``."""
  rows = {k: v[first:] for k, v in rows.items()}
  N, L = rows['inputs'].shape
  K = -(-L // bucket)
  if N:
    loss_NT, correct_NT = scorer.score(rows)
    w_NT = np.asarray(rows['weights'], np.float64)
  else:
    loss_NT = correct_NT = w_NT = np.zeros((0, L))
  index_NT = np.asarray(rows['positions']) // bucket + K * np.arange(N)[:, None]
  sums = lambda v_NT: np.bincount(index_NT.ravel(), np.ravel(v_NT), N * K).reshape(N, K)
  ids = rows.get('doc_ids')
  return {'loss': (w_NT * loss_NT).sum(1), 'weight': w_NT.sum(1),
          'correct': (w_NT * correct_NT).sum(1),
          'bucket_loss': sums(w_NT * loss_NT), 'bucket_weight': sums(w_NT),
          'id': [str(i) for i in ids] if ids is not None else [str(first + i) for i in range(N)],
          'digest': sampling.digests(rows)}


def _join(a: dict | None, b: dict) -> dict:
  if a is None:
    return b
  return {k: (a[k] + b[k]) if isinstance(a[k], list) else np.concatenate([a[k], b[k]])
          for k in a}


def by_position(units: dict, bucket: int) -> dict:
  """Weighted mean loss per position bucket with its SE over units (buckets with no weight
  are left out)."""
  y_NK, w_NK = units['bucket_loss'], units['bucket_weight']
  out = {'start': [], 'stop': [], 'loss': [], 'weight': [], 'se': []}
  for k in np.flatnonzero(w_NK.sum(0) > 0):
    est = sampling.ratio(y_NK[:, k], w_NK[:, k])
    out['start'].append(int(k * bucket))
    out['stop'].append(int((k + 1) * bucket))
    out['loss'].append(est.value)
    out['weight'].append(float(w_NK[:, k].sum()))
    out['se'].append(est.se)
  return out


def _record(out: dict, L: int, units: dict, bucket: int) -> None:
  est = sampling.ratio(units['loss'], units['weight'])
  out['loss'].append(None if est is None else est.value)
  out['se'].append(None if est is None else est.se)
  out['perplexity'].append(_exp(out['loss'][-1]))
  total = float(units['weight'].sum())
  out['accuracy'].append(float(units['correct'].sum()) / total if total > 0 else None)
  out['rows'].append(len(units['id']))
  out['weight'].append(float(units['weight'].sum()))
  out['by_position'][str(L)] = by_position(units, bucket)
  out['units'][str(L)] = {'id': units['id'], 'digest': units['digest'],
                          'loss': [float(v) for v in units['loss']],
                          'weight': [float(v) for v in units['weight']]}


def _grow(scorer, rows_fn, lengths, bucket, sizing: Sizing, errors: dict, progress):
  """Units per length, grown until the target SE, the data's end or the cap (module doc)."""
  units: dict = {L: None for L in lengths}
  count = min(sizing.first, sizing.max_units)
  while True:
    short = False
    for L in lengths:
      rows = _rows(rows_fn, L, count, errors)
      done = 0 if units[L] is None else len(units[L]['id'])
      units[L] = _join(units[L], score_units(scorer, rows, bucket, done))
      short |= len(units[L]['id']) < count and str(L) not in errors
    ses = [sampling.ratio(u['loss'], u['weight']) for L, u in units.items()
           if str(L) not in errors]
    if progress:
      progress(f'perplexity: {count} rows per length, SE ' + ', '.join(
          '-' if e is None or e.se is None else f'{e.se:.4f}' for e in ses))
    if all(e is not None and e.se is not None and e.se <= sizing.target_se for e in ses):
      return units, 'target'
    if short:
      return units, 'data'
    if count >= sizing.max_units:
      return units, 'max_examples'
    count = min(2 * count, sizing.max_units)


def length_sweep(scorer, rows_fn: RowsFn, lengths: Sequence[int], bucket: int,
                 progress: Callable[[str], None] | None = None,
                 sizing: Sizing | None = None) -> dict:
  """Scores ``rows_fn(L)`` (with ``sizing``: ``rows_fn(L, count)``) for each length ``L``;
  see the module doc for the numbers."""
  lengths = check_lengths(lengths)
  fields.check(bucket, '--position_bucket', fields.integer(1))
  out = {'lengths': list(lengths), 'loss': [], 'se': [], 'perplexity': [], 'accuracy': [],
         'rows': [], 'weight': [], 'position_bucket': int(bucket), 'by_position': {},
         'units': {}, 'errors': {}}
  if sizing is None:
    units = {}
    for L in lengths:
      rows = _rows(rows_fn, L, None, out['errors'])
      units[L] = score_units(scorer, rows, bucket)
      if 'doc_ids' in rows:
        out.setdefault('document_ids', {})[str(L)] = list(rows['doc_ids'])
      if progress:
        progress(f'perplexity L={L}: {len(units[L]["id"])} rows')
  else:
    units, stop = _grow(scorer, rows_fn, lengths, bucket, sizing, out['errors'], progress)
    out['sizing'] = {'target_se': sizing.target_se, 'max_examples': sizing.max_units,
                     'stop': stop}
  for L in lengths:
    _record(out, L, units[L], bucket)
  return out
