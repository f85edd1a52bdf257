"""The bench's plain Flax reference is the same model as ropex's preset: ropex's parameters,
moved into the reference's tree, give the same logits (two implementations written
independently — ropex's decoder and the reference written from the Gemma paper — agree, so a
wrong norm offset, RoPE pairing, GeGLU order or embedding scale in either fails); the same
parameter count as ropex's bench configs; and XLA's cost analysis of the two train steps
agrees within a few per cent (the ratio the bench prints compares like with like)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropex import model as model_lib
from ropex.config import defaults
from ropex.model import config as model_config
from ropex.tools import bench, flax_reference


def _ropex_to_reference(p: dict, shape: flax_reference.Shape) -> dict:
  """ropex's unscanned Gemma v1 tree → the reference's ``nn.Dense`` kernels."""
  D, N, K, H = shape.embed, shape.heads, shape.kv_heads, shape.head_dim
  out = {'embed': {'embedding': p['embedder']['input_embedding']},
         'final_norm': {'scale': p['final_norm']['scale']}}
  for i in range(shape.layers):
    l = p[f'layer_{i}']
    a = l['attn']
    if 'qkv_einsum' in a:                                  # N == K: one [3, N, D, H] kernel
      q, kv = a['qkv_einsum']['w'][0], a['qkv_einsum']['w'][1:]
    else:                                                  # [N, D, H] and [2, K, D, H]
      q, kv = a['q_einsum']['w'], a['kv_einsum']['w']
    gate = l['mlp']['gating_einsum']                       # [2, D, F]
    out[f'layer_{i}'] = {
        'q': {'kernel': q.transpose(1, 0, 2).reshape(D, N * H)},
        'k': {'kernel': kv[0].transpose(1, 0, 2).reshape(D, K * H)},
        'v': {'kernel': kv[1].transpose(1, 0, 2).reshape(D, K * H)},
        'o': {'kernel': l['attn']['attn_vec_einsum']['w'].reshape(N * H, D)},
        'gate': {'kernel': gate[0]}, 'up': {'kernel': gate[1]},
        'down': {'kernel': l['mlp']['linear']},
        'pre_attention_norm': l['pre_attention_norm'], 'pre_ffw_norm': l['pre_ffw_norm']}
  return out


@pytest.mark.parametrize('kv_heads', [1, 4])   # grouped K/V, and one fused Q/K/V kernel
def test_reference_gives_ropex_logits_from_ropex_parameters(kv_heads):
  c = defaults.base_config('tiny')
  c.model.update(scan_layers=False, attention_impl='xla', num_kv_heads=kv_heads)
  cfg = model_config.ModelConfig.from_config(c.model)
  tokens_BT = jax.random.randint(jax.random.key(2), (2, 48), 0, cfg.vocab_size)
  ropex_model = model_lib.Transformer(cfg)
  params = ropex_model.init(jax.random.key(0), tokens_BT)['params']
  # non-trivial norm scales, so that the 1 + scale offset is exercised
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x + 0.1 * jax.random.normal(jax.random.key(len(str(path))), x.shape)
      if 'scale' in jax.tree_util.keystr(path) else x, nn.unbox(params))
  expected = ropex_model.apply({'params': params}, tokens_BT)
  shape = flax_reference.Shape.of(c.model)
  got = flax_reference.Decoder(shape).apply({'params': _ropex_to_reference(params, shape)},
                                            tokens_BT)
  np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize('name', list(bench.BENCH_CONFIGS))
def test_reference_has_the_parameters_of_the_bench_config(name):
  c = bench.experiment_config(name)
  shape = flax_reference.Shape.of(c.model)
  tokens = jnp.zeros((1, 8), jnp.int32)
  ref = jax.eval_shape(lambda: flax_reference.Decoder(shape).init(jax.random.key(0), tokens))
  cfg = model_config.ModelConfig.from_config(c.model)
  assert flax_reference.param_count(ref['params']) == model_lib.count_params(cfg)['params_total']


def test_reference_step_costs_what_ropex_step_costs():
  """XLA's FLOPs of one train step (unrolled layers on both sides) of the tiny preset, whose
  attention and MLP weigh as much as its vocabulary."""
  c = defaults.base_config('tiny')
  c.train.update(batch_size=8, seq_len=64)
  shape = flax_reference.Shape.of(c.model)
  ref_step, ref_state, tokens = flax_reference.make(shape, 'float32', 8, 64)
  cost = ref_step.lower(ref_state, tokens).compile().cost_analysis()
  ref_flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost)['flops'])
  assert ref_flops == pytest.approx(bench.compiler_flops(c), rel=0.05)
