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

PRIMARY = ('accuracy', 'token_accuracy')


def score_cell(scorer, rows: dict) -> dict:
  """Example (exact-match) and token accuracy of one cell's rows."""
  answer_NT = np.asarray(rows['weights']) > 0
  _, correct_NT = scorer.score(rows)
  has_answer_N = answer_NT.any(axis=1)
  exact_N = np.all(correct_NT | ~answer_NT, axis=1)[has_answer_N]
  tokens = int(answer_NT.sum())
  return {'accuracy': float(exact_N.mean()) if exact_N.size else None,
          'token_accuracy': float(correct_NT[answer_NT].mean()) if tokens else None,
          'examples': int(has_answer_N.sum()), 'answer_tokens': tokens}


def accuracy_grid(scorer, rows_fn: Callable[[int, float | None], dict], lengths: Sequence[int],
                  depths: Sequence[float | None],
                  progress: Callable[[str], None] | None = None, name: str = '',
                  primary: str = 'accuracy') -> dict:
  """``accuracy[d][l]`` (and ``token_accuracy``, ``examples``) for ``depths[d]`` x ``lengths[l]``;
  ``primary`` names the one that tables and figures show."""
  if primary not in PRIMARY:
    raise ValueError(f'primary={primary!r}; allowed: {", ".join(PRIMARY)}')
  out = {'lengths': [int(x) for x in lengths], 'depths': list(depths), 'primary': primary,
         'accuracy': [], 'token_accuracy': [], 'examples': [], 'errors': {}}
  for depth in depths:
    rows_acc, rows_tok, rows_n = [], [], []
    for length in lengths:
      try:
        cell = score_cell(scorer, rows_fn(int(length), depth))
      except ConfigError as e:
        out['errors'][f'{length}@{depth}'] = str(e)
        cell = {'accuracy': None, 'token_accuracy': None, 'examples': 0}
      rows_acc.append(cell['accuracy'])
      rows_tok.append(cell['token_accuracy'])
      rows_n.append(cell['examples'])
      if progress:
        progress(f'{name} L={length} depth={depth}: {cell["accuracy"]}')
    out['accuracy'].append(rows_acc)
    out['token_accuracy'].append(rows_tok)
    out['examples'].append(rows_n)
  return out
