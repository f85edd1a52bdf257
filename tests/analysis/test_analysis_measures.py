"""Capture (both layer layouts), frequency usage and head scores against plain numpy."""
import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import pytest

from ropex import model as model_lib
from ropex.analysis import capture, frequency, heads, prompts
from ropex.data.tokenizers import ByteTokenizer
from ropex.model.config import ModelConfig, model_block, pe_block
from ropex.errors import ConfigError

from analysis_testlib import random_params


def pattern_cfg(scan=True):
  """4 layers, alternating a RoPE type and a p-RoPE type, GQA."""
  return ModelConfig.from_config(model_block(
      'tiny', vocab_size=300, num_layers=4, embed_dim=32, num_heads=4, num_kv_heads=2,
      head_dim=8, hidden_dim=48, scan_layers=scan, layer_pattern=('a', 'b'),
      layer_types={'a': {'pe': pe_block('rope', max_wavelength=100.0)},
                   'b': {'pe': pe_block('prope', fraction=0.5, max_wavelength=10_000.0)}}))


@pytest.fixture(scope='module')
def scanned():
  cfg = pattern_cfg(scan=True)
  params = random_params(cfg, seed=1)
  texts = ['short one', 'a somewhat longer prompt for the test', 'mid length text']
  batch = prompts.tokenize(texts, ByteTokenizer(), 24, cfg.vocab_size)
  return cfg, params, batch


def test_scanned_and_unscanned_captures_agree_layer_by_layer(scanned):
  cfg, params, batch = scanned
  tokens, valid, _ = next(capture.batches(batch, 3))
  a = capture.capture(cfg, params, tokens, valid)
  flat_cfg, flat_params = capture.for_analysis(cfg, params)
  assert not flat_cfg.scan_layers and len(flat_cfg.pattern) == 4 and 'layer_3' in flat_params
  b = capture.capture(flat_cfg, flat_params, tokens, valid)
  for name in ('q', 'k', 'probs'):
    for x, y in zip(getattr(a, name), getattr(b, name)):
      np.testing.assert_allclose(x, y, atol=2e-5)
  # Layers really differ (a wrong order would pass the comparison above only by accident).
  assert not np.allclose(a.q[0], a.q[2])
  np.testing.assert_allclose(a.nll_BT, b.nll_BT, atol=1e-4)


def test_token_loss_is_the_log_softmax_of_the_next_token(scanned):
  cfg, params, batch = scanned
  tokens, valid, _ = next(capture.batches(batch, 3))
  got = capture.capture(cfg, params, tokens, valid).nll_BT
  apply = jax.jit(lambda p, t: model_lib.Transformer(cfg).apply({'params': p}, t))
  logits = np.asarray(apply(params, jnp.asarray(tokens)), np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  for b in range(3):
    n = batch.lengths_P[b]
    expected = [-logp[b, t, tokens[b, t + 1]] for t in range(n - 1)]
    np.testing.assert_allclose(got[b, :n - 1], expected, rtol=1e-4, atol=1e-4)
    assert not got[b, n - 1:].any()
  # The loss counts only the scored targets (default: every real token after the first).
  scored = np.zeros_like(valid)
  scored[:, 3::2] = True
  for mask, targets in ((None, valid[:, 1:]), (scored, (scored & valid)[:, 1:])):
    acc = capture.LossAccumulator()
    acc.add(capture.capture(cfg, params, tokens, valid, mask))
    expected = [-logp[b, t, tokens[b, t + 1]] for b, t in zip(*np.nonzero(targets))]
    assert acc.result() == pytest.approx(np.mean(expected), rel=1e-5)


def test_frequency_usage_is_the_mean_chunk_norm_over_real_tokens(scanned):
  cfg, params, batch = scanned
  flat_cfg, flat_params = capture.for_analysis(cfg, params)
  acc = frequency.FrequencyAccumulator(flat_cfg)
  captured = []

  class Keep:
    def add(self, c):
      captured.append(c)

  capture.run(flat_cfg, flat_params, batch, 2, [acc, Keep()])
  usage = acc.result()
  assert len(captured) == 2 and usage.tokens == batch.num_tokens
  H = cfg.head_dim
  for layer in range(4):
    q = np.concatenate([c.q[layer][c.valid_BT] for c in captured])   # [tokens, N, H]
    k = np.concatenate([c.k[layer][c.valid_BT] for c in captured])
    # Half layout for both layer types: chunk j = dims (j, j + H/2).
    q_norm = np.sqrt(q[..., :H // 2] ** 2 + q[..., H // 2:] ** 2).mean(0)
    k_norm = np.sqrt(k[..., :H // 2] ** 2 + k[..., H // 2:] ** 2).mean(0)
    np.testing.assert_allclose(usage.q_LNC[layer], q_norm, rtol=1e-5)
    np.testing.assert_allclose(usage.k_LKC[layer], k_norm, rtol=1e-5)
  # Layer types: 'a' rotates all 4 chunks at 100^(-2j/8); 'b' keeps the top 2 only.
  np.testing.assert_allclose(usage.freqs_LC[0], 100.0 ** (-np.arange(4) / 4))
  assert usage.freqs_LC[1].tolist()[2:] == [0.0, 0.0] and usage.freqs_LC[1][1] > 0
  shares = usage.band_shares(0.25)
  q0 = usage.q_LNC[0].sum(0)
  np.testing.assert_allclose(shares['q_high'][0], q0[0] / q0.sum())
  np.testing.assert_allclose(shares['q_low'][1], usage.q_LNC[1].sum(0)[3] / usage.q_LNC[1].sum())


def test_head_scores_match_explicit_loops():
  rng = np.random.default_rng(0)
  B, N, T = 2, 3, 7
  probs = rng.random((B, N, T, T))
  probs = np.tril(probs)
  probs /= probs.sum(-1, keepdims=True)
  valid = np.ones((B, T), bool)
  valid[1, 5:] = False
  sums, rows = heads.pattern_sums(probs, valid)
  assert rows == (T - 2) + (5 - 2)
  expected = np.zeros((N, 3))
  for b in range(B):
    for t in range(2, T):
      if valid[b, t]:
        expected[:, 0] += probs[b, :, t, t]
        expected[:, 1] += probs[b, :, t, t - 1]
        expected[:, 2] += probs[b, :, t, 0]
  np.testing.assert_allclose(sums, expected)
  offsets, offset_rows = heads.offset_sums(probs, valid, max_offset=5)
  for delta in range(5):
    rows_d = [(b, t) for b in range(B) for t in range(max(2, delta), T) if valid[b, t]]
    assert offset_rows[delta] == len(rows_d)
    np.testing.assert_allclose(offsets[:, delta],
                               sum(probs[b, :, t, t - delta] for b, t in rows_d))
  np.testing.assert_allclose(offsets[:, :2], sums[:, :2])


def test_heads_rank_by_the_peak_of_their_offset_profile():
  scores_LNS = np.asarray([[[0.1, 0.8, 0.0], [0.9, 0.2, 0.0]],
                           [[0.3, 0.3, 0.5], [0.2, 0.95, 0.0]]])
  offsets_LNO = np.zeros((2, 2, 4))
  offsets_LNO[..., :2] = scores_LNS[..., :2]
  offsets_LNO[1, 0, 3] = 0.85       # a head attending 3 tokens back
  scores = heads.HeadScores(scores_LNS, offsets_LNO, 10)
  ranked = scores.ranked()
  assert [(r['layer'], r['head'], r['kind']) for r in ranked] == [
      (1, 1, 'previous'), (0, 1, 'diagonal'), (1, 0, 'offset 3'), (0, 0, 'previous')]
  assert ranked[2]['positional'] == 0.85 and ranked[2]['offset'] == 3
  assert scores.score(1, 0, 'offset 3') == 0.85 and scores.score(1, 0, 'first') == 0.5


def test_task_prompts_score_only_the_answers():
  data = ml_collections.ConfigDict(dict(tasks=('copy_offset', 'assoc_recall'),
                                        synthetic_length=(16, 32), synthetic_vocab=16))
  batch = prompts.task_prompts(data, bos_id=1, per_task=3, seed=0)
  assert batch.tokens_PT.shape == (6, 31) and (batch.tokens_PT[:, 0] == 1).all()
  assert batch.tokens_PT[:3, 1].tolist() == [3] * 3 and batch.tokens_PT[3:, 1].tolist() == [5] * 3
  assert not batch.scored_PT[:, :2].any() and batch.scored_PT.any(axis=1).all()
  # copy_offset (offset 8): every scored token repeats the token 8 back.
  rows, cols = np.nonzero(batch.scored_PT[:3])
  np.testing.assert_array_equal(batch.tokens_PT[rows, cols], batch.tokens_PT[rows, cols - 8])
  tokens, valid, scored = next(capture.batches(batch, 4))
  assert scored.sum() == batch.scored_PT[:4].sum() and valid.all()


def test_prompts_files_and_tokenisation(tmp_path):
  txt = tmp_path / 'p.txt'
  txt.write_text('first prompt\nwraps here\n\n\nsecond\n')
  assert prompts.read_prompts(str(txt)) == ['first prompt wraps here', 'second']
  jsonl = tmp_path / 'p.jsonl'
  jsonl.write_text('{"text": "abc"}\n\n{"text": "de"}\n')
  texts = prompts.read_prompts(str(jsonl))
  assert texts == ['abc', 'de']
  batch = prompts.tokenize(texts, ByteTokenizer(), 3)
  np.testing.assert_array_equal(batch.tokens_PT, [[1, 100, 101], [1, 103, 104]])
  np.testing.assert_array_equal(batch.lengths_P, [3, 3])
  with pytest.raises(ConfigError, match='vocab_size'):
    prompts.tokenize(['abc'], ByteTokenizer(), 8, vocab_size=64)
  with pytest.raises(ConfigError, match='--prompts'):
    prompts.read_prompts(str(tmp_path / 'missing.txt'))
