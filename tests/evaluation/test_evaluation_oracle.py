"""Oracle: a hand-built model that copies the token 7 positions back gets exactly the accuracy
its rule implies, computed here from the examples alone (no model)."""

import numpy as np
import pytest

from ropex.evaluation import grid, retrieval, scoring, tasks
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
  rows = tasks.task_rows_fn('prev_token', 3, seed=0, bos_id=1)(40, 0.5)
  _, correct = dense_token_stats(config, params, rows)
  shifted = rows['inputs'][:, :-DELTA]
  np.testing.assert_array_equal(correct[:, DELTA:], shifted == rows['targets'][:, DELTA:])


def test_copy_task_accuracy_is_perfect_at_every_length(copy_model):
  _, _, scorer = copy_model
  out = tasks.task_sweep(scorer, ['copy_offset'], [16, 48, 200], [0.0, 1.0], count=3, seed=1,
                         bos_id=1)['copy_offset']
  assert out['depths'] == [None]                  # copy_offset has no depth
  assert out['accuracy'] == [[1.0, 1.0, 1.0]]     # 200 > 64: the chunked path as well
  assert out['token_accuracy'] == [[1.0, 1.0, 1.0]]
  assert out['examples'] == [[3, 3, 3]]


@pytest.mark.parametrize('task', ['prev_token', 'assoc_recall', 'induction'])
def test_task_sweep_reports_the_rule(copy_model, task):
  _, _, scorer = copy_model
  lengths = [24, 80]
  depths = [0.0, 1.0] if tasks.supports_depth(task) else [None]
  out = tasks.task_sweep(scorer, [task], lengths, [0.0, 1.0], 4, 2, 1)[task]
  rows_fn = tasks.task_rows_fn(task, 4, seed=2, bos_id=1)
  assert out['depths'] == depths
  want = [[_rule(rows_fn(L, depth)) for L in lengths] for depth in depths]
  np.testing.assert_allclose(out['accuracy'], [[w[0] for w in row] for row in want])
  np.testing.assert_allclose(out['token_accuracy'], [[w[1] for w in row] for row in want])


def test_grid_accuracy_on_random_rows(copy_model):
  """Random tokens over 4 symbols, random answer positions: the rule is right ~1/4 of the time,
  so reported == rule can only hold if every answer token is scored correctly."""
  _, _, scorer = copy_model

  def rows_fn(L, depth):
    rng = np.random.default_rng((L, int(depth * 10)))
    tokens = (16 + rng.integers(0, 4, size=(6, L + 1))).astype(np.int32)
    weights = (rng.random((6, L)) < 0.3) & (np.arange(L) >= DELTA)
    return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
            'positions': np.broadcast_to(np.arange(L), (6, L)).astype(np.int32),
            'segment_ids': np.ones((6, L), np.int32), 'weights': weights.astype(np.float32)}

  out = grid.accuracy_grid(scorer, rows_fn, [12, 90], [0.0, 0.5])
  want = [[_rule(rows_fn(L, d)) for L in (12, 90)] for d in (0.0, 0.5)]
  np.testing.assert_allclose(out['accuracy'], [[w[0] for w in row] for row in want])
  np.testing.assert_allclose(out['token_accuracy'], [[w[1] for w in row] for row in want])
  assert 0.1 < np.mean([w[1] for row in want for w in row]) < 0.5


def test_needle_accuracy_matches_the_rule():
  # Copier of the token 2 back: it answers with the value of the last pair before the query,
  # which is the needle at depth 1 and, with 2 value tokens (vocab 4), right half the time else.
  config, params = copier(2)
  scorer = scoring.Scorer(ModelConfig.from_config(config.model), params, attention_chunk=64,
                          loss_chunk=64)
  rows_fn = retrieval.retrieval_rows_fn('needle', 8, seed=3, bos_id=1, vocab=4)
  out = grid.accuracy_grid(scorer, rows_fn, [10, 31], [0.0, 1.0])
  want = [[_rule(rows_fn(L, depth), delta=2)[0] for L in (10, 31)] for depth in (0.0, 1.0)]
  np.testing.assert_allclose(out['accuracy'], want)
  assert want[1] == [1.0, 1.0] and 0 < np.mean(want[0]) < 1
