"""Accuracy over a (depth x length) grid of generated examples.

A cell's rows come from ``rows_fn(length, depth)`` (``depth`` is ``None`` for tasks without a
depth). An answer token is correct when the model's argmax at the previous position equals it
(teacher forcing); an example is correct when ALL its answer tokens are, which for a
multi-token answer is exactly what greedy decoding from the prompt would produce. Cells whose
examples cannot be generated at that length are ``None`` with the reason in ``errors``.
``primary`` says which number tables and figures show: example accuracy for retrieval (one
answer per example), token accuracy for the tasks (whose examples hold many answers, so their
exact match falls with length even at a fixed per-token error rate).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ropex.errors import ConfigError

PRIMARY = ('accuracy', 'token_accuracy', 'recall')


def recall(correct_NT: np.ndarray, answer_ids_NT: np.ndarray) -> np.ndarray:
  """``recall_N``: the fraction of each row's answers (ids >= 0) whose tokens are all correct
  (NaN for a row without answers)."""
  out = np.full(len(answer_ids_NT), np.nan)
  for i, (correct_T, ids_T) in enumerate(zip(correct_NT, answer_ids_NT)):
    refs = np.unique(ids_T[ids_T >= 0])
    if refs.size:
      out[i] = np.mean([correct_T[ids_T == r].all() for r in refs])
  return out


def score_cell(scorer, rows: dict) -> dict:
  """Example (exact-match) and token accuracy of one cell's rows (and ``recall`` when the rows
  carry ``answer_ids``)."""
  answer_NT = np.asarray(rows['weights']) > 0
  _, correct_NT = scorer.score(rows)
  has_answer_N = answer_NT.any(axis=1)
  exact_N = np.all(correct_NT | ~answer_NT, axis=1)[has_answer_N]
  tokens = int(answer_NT.sum())
  cell = {'accuracy': float(exact_N.mean()) if exact_N.size else None,
          'token_accuracy': float(correct_NT[answer_NT].mean()) if tokens else None,
          'examples': int(has_answer_N.sum()), 'answer_tokens': tokens}
  if 'answer_ids' in rows:
    recall_N = recall(correct_NT, np.asarray(rows['answer_ids']))
    cell['recall'] = float(np.nanmean(recall_N)) if np.isfinite(recall_N).any() else None
  return cell


def accuracy_grid(scorer, rows_fn: Callable[[int, float | None], dict], lengths: Sequence[int],
                  depths: Sequence[float | None],
                  progress: Callable[[str], None] | None = None, name: str = '',
                  primary: str = 'accuracy') -> dict:
  """``accuracy[d][l]`` (and ``token_accuracy``, ``examples``) for ``depths[d]`` x ``lengths[l]``;
  ``primary`` names the one that tables and figures show."""
  if primary not in PRIMARY:
    raise ValueError(f'primary={primary!r}; allowed: {", ".join(PRIMARY)}')
  keys = ('accuracy', 'token_accuracy') + (('recall',) if primary == 'recall' else ())
  out = {'lengths': [int(x) for x in lengths], 'depths': list(depths), 'primary': primary,
         **{k: [] for k in keys}, 'examples': [], 'errors': {}}
  for depth in depths:
    row = {k: [] for k in keys + ('examples',)}
    for length in lengths:
      try:
        cell = score_cell(scorer, rows_fn(int(length), depth))
      except ConfigError as e:
        out['errors'][f'{length}@{depth}'] = str(e)
        cell = {'examples': 0}
      for k in keys + ('examples',):
        row[k].append(cell.get(k))
      if progress:
        progress(f'{name} L={length} depth={depth}: {cell.get(primary)}')
    for k, v in row.items():
      out[k].append(v)
  return out
