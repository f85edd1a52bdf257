"""The synthetic diagnostic tasks (``ropex.data.synthetic``) as evaluation tasks over length x
depth (:mod:`ropex.evaluation.grid`).

Each example fills one row of exactly the context length being evaluated; tasks are generated
with the keyword arguments the training data used (the run's ``data.synthetic_vocab``, other
arguments at their defaults) plus ``depth`` for tasks whose generator takes one (the queried
item sits at that fraction of the context: ``prev_token``, ``assoc_recall``). Other tasks
(``copy_offset``, ``induction``) are swept over length only. They are training tasks with many
answers per example (every answer token is its own answer), scored as training scores them:
``teacher_forced_token_accuracy`` (argmax on every answer token given the correct earlier
tokens); there is no generation score.
"""

from __future__ import annotations

import inspect

import numpy as np

from ropex.data import synthetic
from ropex.errors import ConfigError
from ropex.evaluation import grid


def supports_depth(task: str) -> bool:
  if task not in synthetic.TASKS:
    raise ConfigError(f'--tasks names {task!r}; allowed: {", ".join(synthetic.TASKS)}')
  return 'depth' in inspect.signature(synthetic.TASKS[task]).parameters


def task(name: str, **task_kw) -> grid.Task:
  """``name`` as a :class:`ropex.evaluation.grid.Task` (keyword arguments ``task_kw``, e.g. the
  run's ``vocab``)."""
  depth_kw = supports_depth(name)

  def make(rng, n, depth):
    kw = dict(task_kw, depth=float(depth)) if depth_kw and depth is not None else task_kw
    tokens, answer = synthetic.generate(name, rng, n, **kw)
    return tokens, np.where(answer, np.cumsum(answer) - 1, grid.PROMPT).astype(np.int32)

  return grid.Task(name, make, has_depth=depth_kw)
