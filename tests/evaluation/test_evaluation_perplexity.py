"""Length sweep: exactly the requested lengths; perplexity = exp(weighted mean token loss)."""

import math

import numpy as np
import pytest

from ropex.data import sources
from ropex.evaluation import perplexity, rows as rows_lib, scoring
from ropex.model.config import ModelConfig
from ropex.errors import ConfigError

from evaluation_testlib import dense_token_stats


class SpyScorer:
  """Records the shapes it is asked to score; loss = position, correct = even targets."""

  def __init__(self):
    self.shapes = []

  def score(self, rows):
    self.shapes.append(rows['inputs'].shape)
    loss = rows['positions'].astype(np.float64)
    return loss, rows['targets'] % 2 == 0


def test_sweep_evaluates_exactly_the_requested_lengths():
  asked = []

  def rows_fn(L):
    asked.append(L)
    return rows_lib.synthetic(('copy_offset',), L, 3, (0,), bos_id=1)

  spy = SpyScorer()
  out = perplexity.length_sweep(spy, rows_fn, [24, 12, 40], bucket=8)
  assert asked == [24, 12, 40]
  assert spy.shapes == [(3, 24), (3, 12), (3, 40)]
  assert out['lengths'] == [24, 12, 40] and len(out['perplexity']) == 3
  assert sorted(out['by_position']) == ['12', '24', '40']
  # loss = position: the weighted mean is the mean position of the answer tokens.
  rows = rows_fn(40)
  w = rows['weights']
  want = float((rows['positions'] * w).sum() / w.sum())
  assert out['loss'][2] == pytest.approx(want)
  assert out['perplexity'][2] == pytest.approx(math.exp(want))
  short = perplexity.length_sweep(spy, rows_fn, [6, 12], bucket=8)   # copy_offset needs >= 10
  assert short['perplexity'][0] is None and short['rows'] == [0, 3]
  assert 'copy_offset needs length' in short['errors']['6'] and short['perplexity'][1] > 0
  for bad in ([], [8, 8], [0, 4], [4.5]):
    with pytest.raises(ConfigError):
      perplexity.length_sweep(spy, rows_fn, bad, bucket=8)


def test_perplexity_is_exp_of_mean_token_loss(micro_rope):
  config, params = micro_rope
  scorer = scoring.Scorer(ModelConfig.from_config(config.model), params, attention_chunk=16,
                          loss_chunk=7)
  make = lambda L: rows_lib.synthetic(('copy_offset', 'assoc_recall'), L, 4, (5,), bos_id=1)
  out = perplexity.length_sweep(scorer, make, [20, 40], bucket=16)
  for i, L in enumerate([20, 40]):
    rows = make(L)
    loss_NT, correct_NT = dense_token_stats(config, params, rows)
    w = rows['weights'].astype(np.float64)
    assert w.sum() > 0 and w.sum() < w.size     # answer tokens only
    mean = (loss_NT * w).sum() / w.sum()
    assert out['loss'][i] == pytest.approx(mean, rel=1e-5)
    assert out['perplexity'][i] == pytest.approx(math.exp(mean), rel=1e-5)
    assert out['accuracy'][i] == pytest.approx((correct_NT * w).sum() / w.sum())
    buckets = out['by_position'][str(L)]
    for start, loss in zip(buckets['start'], buckets['loss']):
      sel = (rows['positions'] >= start) & (rows['positions'] < start + 16)
      assert loss == pytest.approx((loss_NT * w)[sel].sum() / w[sel].sum(), rel=1e-5)


def test_synthetic_rows_are_one_example_per_row():
  rows = rows_lib.synthetic(('copy_offset',), 30, 2, (3,), bos_id=1)
  assert rows['inputs'].shape == (2, 30)
  assert (rows['inputs'][:, 0] == 1).all()                # bos, as in training
  np.testing.assert_array_equal(rows['inputs'][:, 1:], rows['targets'][:, :-1])
  # copy_offset (offset 8): every weighted target equals the input 7 positions earlier.
  n, t = np.nonzero(rows['weights'])
  np.testing.assert_array_equal(rows['targets'][n, t], rows['inputs'][n, t - 7])
  assert (rows['segment_ids'] == 1).all()
  np.testing.assert_array_equal(rows['positions'][0], np.arange(30))


def _doc(tokens):
  return sources.Document.from_tokens(np.asarray(tokens, np.int32))


def test_eval_split_rows_from_documents_and_stream():
  docs = [_doc(np.arange(100, 100 + n)) for n in (5, 12, 7, 30, 11)]
  rows = rows_lib.from_source(docs, 10, 3, 'documents', max_documents=5)
  # only documents with >= 11 tokens, each row its first 11 tokens
  np.testing.assert_array_equal(rows['inputs'][:, 0], [100, 100, 100])
  np.testing.assert_array_equal(rows['targets'][:, -1], [110, 110, 110])
  assert rows['inputs'].shape == (3, 10)
  stream = rows_lib.from_source(docs, 10, 2, 'stream', max_documents=5)
  flat = np.concatenate([np.arange(100, 100 + n) for n in (5, 12, 7, 30, 11)])
  np.testing.assert_array_equal(stream['inputs'][1], flat[11:21])
  np.testing.assert_array_equal(stream['targets'][1], flat[12:22])
  # the first token of each document is not a target (weight 0), everything else is
  starts = np.cumsum([0, 5, 12, 7, 30])
  want_w = np.ones(len(flat))
  want_w[starts] = 0
  np.testing.assert_array_equal(stream['weights'][0], want_w[1:11])
  with pytest.raises(ConfigError):
    rows_lib.from_source(docs, 10, 2, 'pages')
