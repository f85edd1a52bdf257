"""Periodic evaluation during training: the same ``eval.steps`` held-out batches every time."""

from __future__ import annotations

import math

import jax
import numpy as np

from ropex import data
from ropex.training import sharding, step


class Evaluator:
  """Evaluates on the same ``eval.steps`` held-out batches every time."""

  def __init__(self, config, setup, process_index, process_count):
    self.tasks = data.task_names(config)
    self.steps = int(config.eval.steps)
    self.rows = data.batch_size(config, 'eval')
    self.setup = setup
    self.eval_step = step.make_eval_step(setup, len(self.tasks))
    self.it = data.make_iterator(config, 'eval', process_index, process_count) \
        if self.steps else None
    self.start = self.it.get_state() if self.it else None

  def __call__(self, params) -> dict:
    self.it.set_state(self.start)
    totals = None
    for _ in range(self.steps):
      batch = sharding.global_batch(next(self.it), self.setup.batch_sharding, self.rows,
                                    step.BATCH_DTYPES)
      out = jax.device_get(self.eval_step(params, batch))
      totals = out if totals is None else jax.tree.map(np.add, totals, out)
    loss = float(totals['ce_sum'] / max(float(totals['weight_sum']), 1.0))
    result = {'eval/loss': loss, 'eval/perplexity': math.exp(min(loss, 700.0))}
    for name, correct, total in zip(self.tasks, totals['correct_K'], totals['total_K']):
      if total:
        result[f'eval/accuracy/{name}'] = float(correct) / float(total)
    return result

  def close(self):
    if self.it is not None and hasattr(self.it, 'close'):
      self.it.close()
