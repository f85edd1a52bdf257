"""Sweeps of the synthetic diagnostic tasks (``ropex.data.synthetic``) over length x depth.

Each example fills one row of exactly the context length being evaluated; tasks are generated
with the keyword arguments the training data used (the run's ``data.synthetic_vocab``, other
arguments at their defaults) plus ``depth`` for tasks whose
generator takes one (the queried item sits at that fraction of the context: ``prev_token``,
``assoc_recall``). Other tasks (``copy_offset``, ``induction``) are swept over length only.
Scoring: :mod:`ropex.evaluation.grid` (argmax on the answer tokens; tables and figures show
the token accuracy, as the training metrics do).
"""

from __future__ import annotations

import inspect
import zlib
from typing import Callable, Sequence

from ropex.data import synthetic
from ropex.evaluation import grid, rows as rows_lib
from ropex.errors import ConfigError


def supports_depth(task: str) -> bool:
  if task not in synthetic.TASKS:
    raise ConfigError(f'--tasks names {task!r}; allowed: {", ".join(synthetic.TASKS)}')
  return 'depth' in inspect.signature(synthetic.TASKS[task]).parameters


def task_rows_fn(task: str, count: int, seed: int, bos_id: int | None, **task_kw):
  """``(length, depth) -> rows``: ``count`` examples of ``task`` (keyword arguments ``task_kw``,
  e.g. the run's ``vocab``); the same seed gives the same random draws at every depth."""
  salt = zlib.crc32(task.encode())

  def rows_fn(length: int, depth: float | None):
    kw = dict(task_kw) if depth is None else dict(task_kw, depth=float(depth))
    return rows_lib.synthetic((task,), length, count, (seed, salt), bos_id, **kw)

  return rows_fn


def task_sweep(scorer, tasks: Sequence[str], lengths: Sequence[int], depths: Sequence[float],
               count: int, seed: int, bos_id: int | None,
               progress: Callable[[str], None] | None = None, **task_kw) -> dict:
  """``{task: accuracy grid}`` for every task (depth axis ``[None]`` for depth-free tasks)."""
  out = {}
  for task in tasks:
    task_depths = list(depths) if supports_depth(task) else [None]
    out[task] = grid.accuracy_grid(scorer, task_rows_fn(task, count, seed, bos_id, **task_kw),
                                   lengths, task_depths, progress, name=task,
                                   primary='token_accuracy')
  return out
