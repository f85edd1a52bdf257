"""Positional heads found and causally ablated in a model whose weights the test constructs."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropex.analysis import ablation, capture, heads, pipeline
from ropex.analysis.prompts import Prompts
from ropex.model.config import ModelConfig, model_block, pe_block
from ropex.errors import ConfigError

from analysis_testlib import random_params

C_LOGIT = 400.0  # |q|^2 / sqrt(H) of the constructed heads


def constructed(num_kv_heads):
  """One layer, 2 heads, RoPE: head 0 is a diagonal head, head 1 a previous-token head.

  Every token embeds to 4 e_0 after RMSNorm, so every query/key is constant before RoPE. In
  the highest-frequency chunk (dims 0 and 4): k = a e_0, q0 = a e_0, q1 = R(-1 rad) a e_0, so
  logit(t, s) = C cos(s - t) for head 0 and C cos(s - t + 1) for head 1."""
  cfg = ModelConfig.from_config(model_block(
      'tiny', vocab_size=8, num_layers=1, embed_dim=16, num_heads=2, num_kv_heads=num_kv_heads,
      head_dim=8, hidden_dim=16, scan_layers=False, pe=pe_block('rope', max_wavelength=1e4)))
  params = jax.tree.map(np.zeros_like, random_params(cfg))
  params['embedder']['input_embedding'][:, 0] = 1.0
  a = math.sqrt(C_LOGIT * math.sqrt(8))
  q = np.zeros((2, 16, 8), np.float32)
  q[0, 0, 0] = a / 4
  q[1, 0, 0], q[1, 0, 4] = a * math.cos(1) / 4, -a * math.sin(1) / 4
  k = np.zeros((num_kv_heads, 16, 8), np.float32)
  k[:, 0, 0] = a / 4
  v = np.ones((num_kv_heads, 16, 8), np.float32) * 0.01
  attn = params['layer_0']['attn']
  if num_kv_heads == 2:
    attn['qkv_einsum']['w'] = np.stack([q, k, v])
  else:
    attn['q_einsum']['w'], attn['kv_einsum']['w'] = q, np.stack([k, v])
  tokens = np.zeros((2, 16), np.int32)
  tokens[0] = np.arange(16) % 8
  tokens[1, :11] = (3 * np.arange(11)) % 8
  return cfg, params, Prompts(['a', 'b'], tokens, np.asarray([16, 11]))


def uniform_score(lengths):
  """Attention on any one allowed key under uniform causal attention, averaged over t >= 2."""
  w = [1.0 / (t + 1) for n in lengths for t in range(2, n)]
  return float(np.mean(w))


def test_constructed_heads_are_found_and_live_on_the_highest_frequency():
  cfg, params, batch = constructed(num_kv_heads=1)
  result = pipeline.analyze(cfg, params, batch, top_heads=2, ablate_fraction=0.25,
                            batch_size=2)
  top = sorted(result.head_scores.top(2), key=lambda r: r['head'])
  assert [(r['layer'], r['head'], r['kind']) for r in top] == [(0, 0, 'diagonal'),
                                                               (0, 1, 'previous')]
  assert top[0]['diagonal'] > 0.999 and top[1]['previous'] > 0.999
  assert result.head_scores.ranked()[0]['positional'] > 0.999
  rows = {(r['heads'], r['band']): r for r in result.ablations}
  rows.update({(' '.join(sorted(h.split())), b): r for (h, b), r in rows.items()})
  assert {(' '.join(sorted(h.split())), b) for h, b in rows} == {
      (h, b) for h in ('L0H0', 'L0H1', 'L0H0 L0H1') for b in ('high', 'low')}
  uniform = uniform_score(batch.lengths_P)
  # Removing chunk 0 (the highest frequency) zeroes every logit: uniform causal attention.
  assert rows['L0H0', 'high']['chunks'] == {0: [0]}
  assert rows['L0H0', 'high']['diagonal_after'] == pytest.approx(uniform, abs=1e-6)
  assert rows['L0H0', 'high']['pattern_after'] == pytest.approx(uniform, abs=1e-6)
  assert rows['L0H1', 'high']['kinds'] == ['previous']
  assert rows['L0H1', 'high']['previous_after'] == pytest.approx(uniform, abs=1e-6)
  assert rows['L0H0 L0H1', 'high']['previous_after'] == pytest.approx(uniform, abs=1e-6)
  # Removing the lowest chunk (3), which the heads do not use, changes nothing.
  assert rows['L0H0', 'low']['chunks'] == {0: [3]}
  for key in ('L0H0', 'L0H1', 'L0H0 L0H1'):
    r = rows[key, 'low']
    for name in ('diagonal', 'previous', 'first'):
      assert r[f'{name}_after'] == pytest.approx(r[f'{name}_before'], abs=1e-6)
    assert r['loss_after'] == pytest.approx(r['loss_before'], abs=1e-5)


def test_mha_ablation_zeroes_the_heads_own_keys_and_only_its_pattern():
  cfg, params, batch = constructed(num_kv_heads=2)
  flat_cfg, flat_params = capture.for_analysis(cfg, params)
  wrapped = ablation.ablated_config(flat_cfg, {0: (ablation.band(flat_cfg, 0, 'high', 0.25),
                                                   [1])})
  assert wrapped.layers[0].pe.kv_heads == (1,)
  scores, _ = ablation.measure(wrapped, flat_params, batch, 2)
  assert scores.score(0, 1, 'previous') == pytest.approx(uniform_score(batch.lengths_P),
                                                         abs=1e-6)
  assert scores.score(0, 0, 'diagonal') > 0.999


def test_ablating_one_head_of_a_kv_group_leaves_the_other_head_alone():
  cfg, params, batch = constructed(num_kv_heads=1)
  flat_cfg, flat_params = capture.for_analysis(cfg, params)
  wrapped = ablation.ablated_config(flat_cfg, {0: ([0], [0])})
  pe = wrapped.layers[0].pe
  assert isinstance(pe, ablation.ZeroChunks) and pe.query_heads == (0,) and pe.kv_heads == ()
  assert pe.dims == (0, 4)
  scores, _ = ablation.measure(wrapped, flat_params, batch, 2)
  base, _ = ablation.measure(flat_cfg, flat_params, batch, 2)
  assert scores.score(0, 1, 'previous') == pytest.approx(base.score(0, 1, 'previous'), abs=1e-7)
  assert scores.score(0, 0, 'diagonal') == pytest.approx(uniform_score(batch.lengths_P), abs=1e-6)
  # The whole group ablated: the shared KV head is zeroed too.
  both = ablation.ZeroChunks.build(flat_cfg.layers[0].pe, flat_cfg, [0], [0, 1])
  assert both.kv_heads == (0,)


def test_zero_chunks_zeroes_exactly_the_chosen_dims_and_heads():
  cfg = ModelConfig.from_config(model_block('tiny', head_dim=8, num_heads=4, num_kv_heads=2))
  base = cfg.layers[0].pe
  pe = ablation.ZeroChunks.build(base, cfg, chunks=[1, 3], heads=[2, 3])
  assert hash(pe) == hash(ablation.ZeroChunks.build(base, cfg, [3, 1], [3, 2]))
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 5, 4, 8)), jnp.float32)
  pos = jnp.arange(5)[None]
  y, ref = np.asarray(pe(x, pos)), np.asarray(base(x, pos))
  np.testing.assert_array_equal(y[:, :, :2], ref[:, :, :2])
  np.testing.assert_array_equal(y[:, :, 2:][..., [1, 3, 5, 7]], 0.0)
  np.testing.assert_array_equal(y[:, :, 2:][..., [0, 2, 4, 6]], ref[:, :, 2:][..., [0, 2, 4, 6]])
  k = jnp.asarray(np.ones((1, 5, 2, 8)), jnp.float32)
  yk = np.asarray(pe(k, pos))   # KV head 1 serves query heads 2 and 3, both ablated
  np.testing.assert_array_equal(yk[:, :, 1][..., [1, 3, 5, 7]], 0.0)
  np.testing.assert_array_equal(yk[:, :, 0], np.asarray(base(k, pos))[:, :, 0])
  with pytest.raises(ConfigError, match='chunks'):
    ablation.ZeroChunks.build(base, cfg, [4], [0])
  with pytest.raises(ConfigError, match='band'):
    ablation.band(dataclasses.replace(cfg, scan_layers=False), 0, 'middle', 0.25)


def test_empty_ablation_is_the_identity():
  cfg, params, batch = constructed(num_kv_heads=2)
  flat_cfg, flat_params = capture.for_analysis(cfg, params)
  tokens, valid, _ = next(capture.batches(batch, 2))
  a = capture.capture(flat_cfg, flat_params, tokens, valid)
  b = capture.capture(ablation.ablated_config(flat_cfg, {0: ([0, 1], [])}), flat_params,
                      tokens, valid)
  np.testing.assert_array_equal(a.probs[0], b.probs[0])
  np.testing.assert_array_equal(a.nll_BT, b.nll_BT)


def test_head_scores_accumulate_over_batches():
  cfg, params, batch = constructed(num_kv_heads=2)
  flat_cfg, flat_params = capture.for_analysis(cfg, params)
  one, _ = ablation.measure(flat_cfg, flat_params, batch, 1)
  two, _ = ablation.measure(flat_cfg, flat_params, batch, 2)
  np.testing.assert_allclose(one.scores_LNS, two.scores_LNS, atol=1e-6)
  assert one.queries == two.queries == (16 - 2) + (11 - 2)
  assert isinstance(one, heads.HeadScores)
