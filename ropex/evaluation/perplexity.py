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
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ropex import fields
from ropex.errors import ConfigError

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


def weighted_mean(values, weights) -> float | None:
  total = float(np.sum(weights))
  return float(np.sum(np.asarray(values, np.float64) * weights) / total) if total > 0 else None


def by_position(loss_NT, weights_NT, positions_NT, bucket: int) -> dict:
  """Weighted mean loss per position bucket (buckets with no weight are left out)."""
  index_NT = np.asarray(positions_NT) // bucket
  size = int(index_NT.max()) + 1 if index_NT.size else 0
  weight_K = np.bincount(index_NT.ravel(), weights=np.ravel(weights_NT), minlength=size)
  loss_K = np.bincount(index_NT.ravel(), weights=np.ravel(weights_NT * loss_NT), minlength=size)
  keep = np.flatnonzero(weight_K > 0)
  return {'start': [int(k * bucket) for k in keep], 'stop': [int((k + 1) * bucket) for k in keep],
          'loss': [float(loss_K[k] / weight_K[k]) for k in keep],
          'weight': [float(weight_K[k]) for k in keep]}


def _exp(loss: float | None) -> float | None:
  return None if loss is None else (math.exp(loss) if loss < 700 else float('inf'))


def length_sweep(scorer, rows_fn: RowsFn, lengths: Sequence[int], bucket: int,
                 progress: Callable[[str], None] | None = None) -> dict:
  """Scores ``rows_fn(L)`` for each length ``L``; see the module doc for the numbers."""
  lengths = check_lengths(lengths)
  fields.check(bucket, '--position_bucket', fields.integer(1))
  out = {'lengths': list(lengths), 'loss': [], 'perplexity': [], 'accuracy': [], 'rows': [],
         'weight': [], 'position_bucket': int(bucket), 'by_position': {}, 'errors': {}}
  for L in lengths:
    try:
      rows = rows_fn(L)
    except ConfigError as e:   # e.g. a task that needs longer examples: no rows at this length
      out['errors'][str(L)] = str(e)
      rows = {k: np.zeros((0, L), np.int32) for k in ('inputs', 'targets', 'positions')}
      rows['weights'] = np.zeros((0, L), np.float32)
    if rows['inputs'].shape[1:] != (L,):
      raise ValueError(f'rows for length {L} have shape {rows["inputs"].shape}')
    n = rows['inputs'].shape[0]
    if n:
      loss_NT, correct_NT = scorer.score(rows)
      w_NT = np.asarray(rows['weights'], np.float64)
    else:
      loss_NT = correct_NT = w_NT = np.zeros((0, L))
    loss = weighted_mean(loss_NT, w_NT)
    out['loss'].append(loss)
    out['perplexity'].append(_exp(loss))
    out['accuracy'].append(weighted_mean(correct_NT, w_NT))
    out['rows'].append(int(n))
    out['weight'].append(float(w_NT.sum()))
    out['by_position'][str(L)] = by_position(loss_NT, w_NT, rows['positions'][:n], bucket)
    if 'doc_ids' in rows:
      out.setdefault('document_ids', {})[str(L)] = list(rows['doc_ids'])
    if progress:
      progress(f'perplexity L={L}: {out["perplexity"][-1]}')
  return out
