"""Scorer: chunked attention + chunked logits equal the dense model on short inputs."""

import numpy as np

from ropex.evaluation import scoring
from ropex.model.config import ModelConfig

from evaluation_testlib import dense_token_stats


def _rows(N, T, seed=0, vocab=260):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, vocab, size=(N, T + 1)).astype(np.int32)
  segments = np.ones((N, T), np.int32)
  positions = np.broadcast_to(np.arange(T, dtype=np.int32), (N, T)).copy()
  segments[0, T // 2:] = 2                     # two documents in row 0
  positions[0, T // 2:] = np.arange(T - T // 2)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'positions': positions,
          'segment_ids': segments}


def test_chunked_path_equals_dense(micro_rope):
  config, params = micro_rope
  rows = _rows(3, 20)
  want_loss, want_correct = dense_token_stats(config, params, rows)
  scorer = scoring.Scorer(ModelConfig.from_config(config.model), params, attention_chunk=8, loss_chunk=6,
                          tokens_per_batch=40)
  cfg, padded = scorer.model_cfg(20)
  assert (cfg.attention_impl, cfg.attention_chunk, padded) == ('chunked', 8, 24)
  assert scorer.batch_size(20, 3) == 2        # 2 batches, the last one padded
  loss, correct = scorer.score(rows)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(correct, want_correct)
  dense = scoring.Scorer(ModelConfig.from_config(config.model), params, attention_chunk=0, loss_chunk=512)
  assert dense.model_cfg(20)[0].attention_impl == 'dense'
  loss_dense, _ = dense.score(rows)
  np.testing.assert_allclose(loss_dense, want_loss, rtol=1e-5, atol=1e-5)


def test_rejects_mismatched_rows(micro_rope):
  config, params = micro_rope
  rows = _rows(2, 8)
  rows['positions'] = rows['positions'][:, :4]
  try:
    scoring.Scorer(ModelConfig.from_config(config.model), params).score(rows)
  except ValueError as e:
    assert 'positions' in str(e)
  else:
    raise AssertionError('mismatched rows were accepted')
