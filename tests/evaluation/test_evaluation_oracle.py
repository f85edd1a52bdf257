"""Oracle: a hand-built model that copies the token 7 positions back gets exactly the
teacher-forced accuracy its rule implies, computed here from the examples alone (no model).
(Generation with it: test_evaluation_generation.py.)"""

import numpy as np
import pytest

from ropex.evaluation import grid, scoring, tasks
from ropex.model.config import ModelConfig

from evaluation_testlib import copier, dense_token_stats

DELTA = 7   # copy_offset's default offset is 8: target t+1 == token t+1-8 == input t-7


@pytest.fixture(scope='module')
def copy_model():
  config, params = copier(DELTA)
  return config, params, scoring.Scorer(ModelConfig.from_config(config.model), params,
                                        attention_chunk=64, loss_chunk=64)


def _rule(rows, delta=DELTA):
  """Accuracy of "the target is the input ``delta`` positions back": per example (all answer
  tokens), and per answer token."""
  answer = rows['weights'] > 0
  shifted = np.full_like(rows['inputs'], -1)
  shifted[:, delta:] = rows['inputs'][:, :-delta]
  ok = shifted == rows['targets']
  exact = np.all(ok | ~answer, axis=1)[answer.any(1)]
  return exact.mean(), ok[answer].mean()


def test_copier_is_what_it_claims(copy_model):
  config, params, _ = copy_model
  rows = grid.rows(tasks.task('prev_token'), 40, 0.5, 3, seed=0, bos_id=1)
  _, correct = dense_token_stats(config, params, rows)
  shifted = rows['inputs'][:, :-DELTA]
  np.testing.assert_array_equal(correct[:, DELTA:], shifted == rows['targets'][:, DELTA:])


def test_copy_task_accuracy_is_perfect_at_every_length(copy_model):
  _, _, scorer = copy_model
  out = grid.sweep(scorer, [tasks.task('copy_offset')], [16, 48, 200], [0.0, 1.0], count=3,
                   seed=1, bos_id=1)['copy_offset']
  assert out['depths'] == [None]                  # copy_offset has no depth
  assert out['primary'] == 'teacher_forced_token_accuracy'
  assert out['teacher_forced_accuracy'] == [[1.0, 1.0, 1.0]]   # 200 > 64: the chunked path too
  assert out['teacher_forced_token_accuracy'] == [[1.0, 1.0, 1.0]]
  assert out['examples'] == [[3, 3, 3]]


@pytest.mark.parametrize('task', ['prev_token', 'assoc_recall', 'induction'])
def test_task_sweep_reports_the_rule(copy_model, task):
  _, _, scorer = copy_model
  lengths = [24, 80]
  depths = [0.0, 1.0] if tasks.supports_depth(task) else [None]
  out = grid.sweep(scorer, [tasks.task(task)], lengths, [0.0, 1.0], 4, 2, 1)[task]
  assert out['depths'] == depths
  want = [[_rule(grid.rows(tasks.task(task), L, depth, 4, 2, 1)) for L in lengths]
          for depth in depths]
  np.testing.assert_allclose(out['teacher_forced_accuracy'],
                             [[w[0] for w in row] for row in want])
  np.testing.assert_allclose(out['teacher_forced_token_accuracy'],
                             [[w[1] for w in row] for row in want])


def test_grid_accuracy_on_random_rows(copy_model):
  """Random tokens over 4 symbols, random answer positions: the rule is right ~1/4 of the time,
  so reported == rule can only hold if every answer token is scored correctly."""
  _, _, scorer = copy_model

  def make(rng, n, depth):
    tokens = (16 + rng.integers(0, 4, size=n)).astype(np.int32)
    answer = (rng.random(n) < 0.3) & (np.arange(n) > DELTA)
    return tokens, np.where(answer, np.cumsum(answer) - 1, -1).astype(np.int32)

  task = grid.Task('random', make, has_depth=True)
  out = grid.sweep(scorer, [task], [12, 90], [0.0, 0.5], 6, 0, None)['random']
  want = [[_rule(grid.rows(task, L, d, 6, 0, None)) for L in (12, 90)] for d in (0.0, 0.5)]
  np.testing.assert_allclose(out['teacher_forced_accuracy'], [[w[0] for w in row] for row in want])
  np.testing.assert_allclose(out['teacher_forced_token_accuracy'],
                             [[w[1] for w in row] for row in want])
  assert 0.1 < np.mean([w[1] for row in want for w in row]) < 0.5
