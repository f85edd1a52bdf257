"""`ropex.tools.scaling` and the forward-only FLOPs formula: arithmetic checked against XLA's
cost analysis and synthetic data; no speed is ever asserted."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropex.config import defaults
from ropex.model.config import ModelConfig
from ropex.model.decoder import Transformer
from ropex.tools import flops, scaling


def _xla_forward_flops(cfg: ModelConfig, batch: int, seq_len: int) -> float:
  model = Transformer(cfg)
  params = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  tokens = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
  compiled = jax.jit(lambda p, x: model.apply({'params': p}, x)).lower(params, tokens).compile()
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']


@pytest.mark.parametrize('seq_len', [128, 512])
def test_forward_flops_equal_xla_cost_analysis(seq_len):
  # Unrolled layers (XLA counts a loop body once) and dense attention, which scores every key
  # (masked ones too): XLA's count is the formula's matmuls with attended_keys = T, plus the
  # elementwise work (norms, softmax, GeGLU; < 3 % for this model). The causal count (about
  # half the keys) is far below it: the tolerance tells the two apart.
  cfg = ModelConfig.from_config(
      defaults.base_config('tiny', scan_layers=False, attention_impl='dense').model)
  xla = _xla_forward_flops(cfg, 2, seq_len)
  executed = flops.forward_flops(cfg, 2, seq_len, attended_keys=seq_len)
  assert 1.0 <= xla / executed < 1.03
  assert xla / flops.forward_flops(cfg, 2, seq_len) > 1.05
  # A train step is the forward and a backward pass of twice its matmuls.
  assert flops.model_flops_per_step(cfg, 2, seq_len) == pytest.approx(
      3 * flops.forward_flops(cfg, 2, seq_len))


def test_fit_exponents_recovers_known_slopes():
  t = np.array([256, 512, 1024, 2048, 4096, 8192])
  linear_then_quadratic = np.where(t <= 1024, 3e-5 * t, 3e-5 * t ** 2 / 1024)
  e = scaling.fit_exponents(t, linear_then_quadratic)
  assert e['low'] == pytest.approx(1.0) and e['high'] == pytest.approx(2.0)
  assert e['low_range'] == [256, 1024] and e['high_range'] == [2048, 8192]
  noisy = 7.0 * t ** 1.5 * np.exp(np.random.default_rng(0).normal(0, 0.01, t.size))
  fit = scaling.fit_exponents(t[::-1], noisy[::-1])   # order does not matter
  assert fit['all'] == pytest.approx(1.5, abs=0.03)
  # Five points: the middle one belongs to both halves.
  e5 = scaling.fit_exponents(t[:5], t[:5] ** 1.0)
  assert e5['low_range'] == [256, 1024] and e5['high_range'] == [1024, 4096]
  with pytest.raises(ValueError, match='at least 3 lengths'):
    scaling.fit_exponents(t[:2], t[:2])


def test_native_impls_skip_emulated_kernels():
  assert scaling.native_impls('cpu') == ('xla', 'dense', 'chunked')
  assert 'splash' in scaling.native_impls('tpu') and 'cudnn' in scaling.native_impls('gpu')


def test_scaling_run_writes_json_and_figure(tmp_path):
  plan = scaling.ScalingPlan(train_lens=(32, 64, 128), tokens_per_batch=128, train_len=32,
                             eval_factors=(1, 2, 4), attention_chunk=32, size_archs=('tiny',),
                             size_len=32, size_tokens=64, steps=1, warmup=0, impls=('chunked',))
  result = scaling.run(plan, peak=1e11)
  paths = scaling.write(result, str(tmp_path), {'cpu': 'test'})
  data = json.loads(open(paths['json']).read())
  assert {'machine', 'plan', 'impls', 'length', 'size', 'exponents', 'skipped_impls',
          'load_average', 'peak_flops'} <= set(data)
  assert 'splash' in data['skipped_impls']
  assert set(data['exponents']) == {'train', 'eval'}
  assert set(data['exponents']['train']) == {'chunked'}
  train = [p for p in data['length'] if p['mode'] == 'train']
  assert [(p['seq_len'], p['batch_size']) for p in train] == [(32, 4), (64, 2), (128, 1)]
  assert [p['seq_len'] for p in data['length'] if p['mode'] == 'eval'] == [32, 64, 128]
  for p in data['length'] + data['size']:
    assert p['tokens_per_s'] == pytest.approx(p['batch_size'] * p['seq_len'] / p['step_s'])
    assert p['mfu'] == pytest.approx(p['model_flops'] / p['step_s'] / 1e11)
    assert p['xla_temp_bytes'] > 0 and p['peak_rss_bytes'] > 0
  assert data['size'][0]['params'] > 0
  with open(paths['png'], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
