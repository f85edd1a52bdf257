"""The Gemma-style decoder: exact shapes and counts, masks, scan, schedule, golden forward."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ropex import model
from ropex.model import positional
from ropex.model.config import ModelConfig, model_block, pe_block
from ropex.errors import ConfigError
import reference
from model_testlib import apply, init_params, make_cfg


def init(cfg, seed=0, length=12):
  # Non-zero norm scales so that the (1 + scale) convention is exercised.
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.1 * jnp.arange(x.shape[-1]) / x.shape[-1]
      if 'scale' in jax.tree_util.keystr(p) else x, init_params(cfg, seed, length))


def tokens_of(seed, shape=(2, 12), vocab=64):
  return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


@pytest.mark.parametrize('arch, total, embedding', [
    ('gemma_2b', 2_506_434_560, 524_550_144),
    ('gemma_7b', 8_538_074_112, 786_825_216),
])
def test_exact_gemma_parameter_counts(arch, total, embedding):
  counts = model.count_params(ModelConfig.from_config(model_block(arch)))
  assert counts == {'params_total': total, 'params_embedding': embedding,
                    'params_non_embedding': total - embedding}


def test_official_gemma_tree_names_shapes_and_axes():
  cfg = ModelConfig.from_config(model_block('gemma_2b', scan_layers=False, num_layers=1))
  boxed = model.abstract_params(cfg)
  shapes = jax.tree.map(lambda x: x.shape, nn.unbox(boxed))
  assert shapes['embedder']['input_embedding'] == (256_128, 2048)
  layer = shapes['layer_0']
  assert layer['attn']['q_einsum']['w'] == (8, 2048, 256)
  assert layer['attn']['kv_einsum']['w'] == (2, 1, 2048, 256)
  assert layer['attn']['attn_vec_einsum']['w'] == (8, 256, 2048)
  assert layer['mlp']['gating_einsum'] == (2, 2048, 16_384)
  assert layer['mlp']['linear'] == (16_384, 2048)
  assert layer['pre_attention_norm']['scale'] == layer['pre_ffw_norm']['scale'] == (2048,)
  assert shapes['final_norm']['scale'] == (2048,)
  axes = jax.tree.map(lambda b: b.names, boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert axes['layer_0']['attn']['q_einsum']['w'] == ('heads', 'embed', 'head_dim')
  assert axes['embedder']['input_embedding'] == ('vocab', 'embed')
  mha = ModelConfig.from_config(model_block('gemma_7b', scan_layers=False, num_layers=1))
  assert nn.unbox(model.abstract_params(mha))['layer_0']['attn']['qkv_einsum']['w'].shape == (
      3, 16, 3072, 256)


def numpy_forward(cfg: ModelConfig, params, tokens):
  """The shared float64 reference forward (unscanned tree, half-split RoPE, GQA, causal)."""
  return reference.gemma_forward(params, np.asarray(tokens), cfg.num_layers)


def test_forward_matches_independent_numpy_reference():
  cfg = make_cfg(scan_layers=False)
  params = init(cfg)
  tokens = tokens_of(3)
  np.testing.assert_allclose(apply(cfg, params, tokens), numpy_forward(cfg, params, tokens),
                             rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize('kv_heads', [4, 2, 1])  # MHA, GQA, MQA
def test_causality(kv_heads):
  cfg = make_cfg(num_kv_heads=kv_heads)
  params = init(cfg)
  a = tokens_of(1)
  b = a.at[:, 7:].set(tokens_of(2)[:, 7:])
  la, lb = apply(cfg, params, a), apply(cfg, params, b)
  np.testing.assert_allclose(la[:, :7], lb[:, :7], atol=1e-5)
  assert np.abs(la[:, 7:] - lb[:, 7:]).max() > 1e-3


def test_packed_documents_are_isolated():
  cfg = make_cfg()
  params = init(cfg)
  doc1, doc2 = tokens_of(4, (1, 5)), tokens_of(5, (1, 7))
  packed = jnp.concatenate([doc1, doc2], axis=1)
  segments = jnp.asarray([[1] * 5 + [2] * 7])
  positions = jnp.asarray([list(range(5)) + list(range(7))])
  out = apply(cfg, params, packed, positions, segments)
  np.testing.assert_allclose(out[:, :5], apply(cfg, params, doc1), atol=1e-5)
  np.testing.assert_allclose(out[:, 5:], apply(cfg, params, doc2), atol=1e-5)


def test_scan_equals_unrolled_and_tree_conversion_roundtrips():
  pattern = dict(layer_pattern=('a', 'b'),
                 layer_types={'a': {'pe': pe_block('rope')}, 'b': {'pe': pe_block('none')}})
  scanned = make_cfg(num_layers=4, **pattern)
  unrolled = make_cfg(num_layers=4, scan_layers=False, **pattern)
  params = init(scanned)
  flat = model.unstack_layers(params, scanned)
  assert sorted(k for k in flat if k.startswith('layer_')) == [f'layer_{i}' for i in range(4)]
  tokens = tokens_of(6)
  np.testing.assert_allclose(apply(scanned, params, tokens), apply(unrolled, flat, tokens),
                             atol=1e-5)
  back = model.stack_layers(flat, scanned)
  jax.tree.map(np.testing.assert_array_equal, back, params)


@functools.cache
def _loss_and_grads(cfg):
  """The mean squared logits of one batch and their gradient, compiled as training is."""
  return jax.jit(jax.value_and_grad(lambda p: jnp.mean(apply(cfg, p, tokens_of(7)) ** 2)))(
      init(make_cfg()))


@pytest.mark.parametrize('remat', ['full', 'dots', 'dots_no_batch'])
def test_remat_changes_nothing_numerically(remat):
  (l1, g1), (l2, g2) = _loss_and_grads(make_cfg()), _loss_and_grads(make_cfg(remat=remat))
  np.testing.assert_allclose(l2, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), g1, g2)


def test_chunked_attention_equals_dense():
  dense, chunked = make_cfg(), make_cfg(attention_impl='chunked', attention_chunk=4)
  params = init(dense)
  tokens = tokens_of(8, (2, 16))
  segments = jnp.asarray([[1] * 9 + [2] * 7, [1] * 16])
  np.testing.assert_allclose(apply(chunked, params, tokens, None, segments),
                             apply(dense, params, tokens, None, segments), atol=1e-5)
  windowed = dict(sliding_window=5)
  np.testing.assert_allclose(
      apply(make_cfg(attention_impl='chunked', attention_chunk=4, **windowed), params, tokens),
      apply(make_cfg(**windowed), params, tokens), atol=1e-5)


def _probs(cfg, params, tokens, positions=None):
  _, state = apply(cfg, params, tokens, positions, mutable=['intermediates'])
  return state['intermediates']


def test_sliding_window_and_softcaps():
  cfg = make_cfg(sliding_window=3, scan_layers=False, attn_logit_softcap=5.0,
                 final_logit_softcap=2.0)
  params = init(cfg)
  inter = _probs(cfg, params, tokens_of(9))
  probs = np.asarray(inter['layer_0']['attn']['probs_BNTS'][0])
  t, s = np.meshgrid(np.arange(12), np.arange(12), indexing='ij')
  assert np.all(probs[..., (s > t) | (t - s >= 3)] == 0)
  assert np.all(probs[..., (s <= t) & (t - s < 3)] > 0)
  logits = apply(cfg, params, tokens_of(9))
  assert np.abs(logits).max() < 2.0
  plain = apply(make_cfg(sliding_window=3, scan_layers=False, attn_logit_softcap=5.0), params,
                tokens_of(9))
  np.testing.assert_allclose(logits, 2.0 * np.tanh(plain / 2.0), atol=1e-5)


def test_every_layer_gets_the_scheduled_encoding_and_window():
  """All encodings are relative, so shifting every position by delta leaves each layer's
  input unchanged; each layer's queries must then move exactly by its own encoding."""
  types = {
      'nope': {'pe': pe_block('none')},
      'local': {'pe': pe_block('rope', max_wavelength=10), 'window': 4},
      'global': {'pe': pe_block('prope', fraction=0.5, max_wavelength=1_000_000)},
  }
  cfg = make_cfg(num_layers=6, layer_pattern=('nope', 'local', 'global'), layer_types=types,
                 scan_layers=False)
  expected = [positional.from_config(types[n]['pe'], 8) for n in ('nope', 'local', 'global')] * 2
  assert [s.type_name for s in cfg.layers] == ['nope', 'local', 'global'] * 2
  assert [s.window for s in cfg.layers] == [0, 4, 0] * 2
  params = init(cfg)
  tokens = tokens_of(10)
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  delta = 3
  base, shifted = _probs(cfg, params, tokens, pos), _probs(cfg, params, tokens, pos + delta)
  for i, pe in enumerate(expected):
    q0 = base[f'layer_{i}']['attn']['q_BTNH'][0]
    q1 = shifted[f'layer_{i}']['attn']['q_BTNH'][0]
    np.testing.assert_allclose(q1, pe(q0, jnp.full((2, 12), delta)), atol=2e-4)
    others = [o for o in expected[:3] if o != pe]
    for other in others:  # the test can tell the encodings apart
      assert np.abs(q1 - other(q0, jnp.full((2, 12), delta))).max() > 1e-2
    probs = np.asarray(base[f'layer_{i}']['attn']['probs_BNTS'][0])
    t, s = np.meshgrid(np.arange(12), np.arange(12), indexing='ij')
    window = cfg.layers[i].window
    if window:
      assert np.all(probs[..., t - s >= window] == 0)
    else:
      assert np.all(probs[..., (s <= t)] > 0)


def test_scanned_schedule_applies_the_pattern_per_group():
  types = {'a': {'pe': pe_block('none')}, 'b': {'pe': pe_block('rope')}}
  cfg = make_cfg(num_layers=4, layer_pattern=('a', 'b'), layer_types=types)
  params = init(cfg)
  pos = jnp.broadcast_to(jnp.arange(12), (2, 12))
  base = _probs(cfg, params, tokens_of(11), pos)['layers']
  shifted = _probs(cfg, params, tokens_of(11), pos + 2)['layers']
  a0, a1 = base['layer_0']['attn']['q_BTNH'][0], shifted['layer_0']['attn']['q_BTNH'][0]
  np.testing.assert_allclose(a0, a1, atol=2e-4)  # NoPE in both groups
  rope = positional.from_config(pe_block('rope'), 8)
  b0, b1 = base['layer_1']['attn']['q_BTNH'][0], shifted['layer_1']['attn']['q_BTNH'][0]
  for g in range(2):
    np.testing.assert_allclose(b1[g], rope(b0[g], jnp.full((2, 12), 2)), atol=2e-4)


def test_bfloat16_compute_with_float32_params():
  cfg = make_cfg(dtype='bfloat16')
  params = init(make_cfg())
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  out = apply(cfg, params, tokens_of(12))
  assert out.dtype == jnp.float32   # logits in float32 whatever the compute dtype
  ref = apply(make_cfg(), params, tokens_of(12))
  assert np.abs(np.asarray(out, np.float32) - ref).max() < 0.15 * np.abs(ref).max()


@pytest.mark.parametrize('overrides, words', [
    (dict(num_kv_heads=3), 'model.num_kv_heads=3 must divide model.num_heads=4'),
    (dict(head_dim=7), 'model.head_dim=7 must be even'),
    (dict(remat='some'), "model.remat='some' is not allowed"),
    (dict(dtype='int8'), "model.dtype='int8' is not allowed"),
    (dict(sliding_window=-2), 'model.sliding_window=-2 is not allowed; it must be an integer >= 0'),
    (dict(num_layers=3, layer_pattern=('a', 'b'), layer_types={'a': {}, 'b': {}}),
     'model.layer_pattern has length 2, which must divide model.num_layers=3'),
    (dict(layer_pattern=('a',), layer_types={}), "layer type 'a', which is not in"),
    (dict(layer_pattern=('a',), layer_types={'a': {'window': 2.5}}),
     r'model.layer_types.a.window=2.5 is not allowed; it must be an integer'),
    (dict(layer_pattern=('a',), layer_types={'a': {'pe': pe_block('prope', fraction=2.0)}}),
     r'model.layer_types.a.pe.fraction=2.0 is not allowed; it must be a number in \[0, 1\]'),
    (dict(layer_pattern=('a',), layer_types={'a': {'rope': 1}}),
     'model.layer_types.a.rope is not a layer-type field'),
])
def test_invalid_model_configs_name_the_field(overrides, words):
  with pytest.raises(ConfigError, match=words):
    make_cfg(**overrides)


def test_unscanned_pattern_need_not_divide_layers():
  cfg = make_cfg(num_layers=5, scan_layers=False, layer_pattern=('a', 'b'),
                 layer_types={'a': {'window': 2}, 'b': {}})
  assert [s.window for s in cfg.layers] == [2, 0, 2, 0, 2]


def test_model_block_is_a_configdict_with_every_pe_field_overridable():
  block = model_block('tiny')
  assert isinstance(block, ml_collections.ConfigDict)
  block.pe.kind, block.pe.fraction = 'prope', 0.25
  cfg = ModelConfig.from_config(block)
  assert cfg.layers[0].pe.rotated_chunks() == tuple(range(4))
  assert dataclasses.is_dataclass(cfg)
