"""Attention implementations (``model.attention_impl``): every one gives the values and the
gradients of the plain reference, which itself matches an independent float64 numpy attention.

``splash`` (the Pallas TPU kernel) runs here in Pallas interpret mode. ``cudnn`` cannot run on a
CPU: its argument construction (GQA layout, segment-id mask, causal flag, sliding window,
bias) is checked by passing the very same arguments to
``jax.nn.dot_product_attention(implementation='xla')``."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropex.model import attention, platform

B, T, N, H = 2, 40, 4, 16      # T: not a multiple of the chunk (16) nor of splash's 128
SEGMENTS = np.array([[1] * 25 + [2] * 15, [1] * 7 + [2] * 30 + [3] * 3])


def alibi_bias(t_T, s_S):
  """A bias-style encoding (ALiBi-like, one slope per kv-head group): [1, 1, G, T, S]."""
  slopes_G = 2.0 ** -jnp.arange(1, N // 2 + 1)
  return -(slopes_G[:, None, None] * (t_T[:, None] - s_S[None, :]))[None, None]


def inputs(K, seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(ks[0], (B, T, K, N // K, H)) * H ** -0.5
  k = jax.random.normal(ks[1], (B, T, K, H))
  v = jax.random.normal(ks[2], (B, T, K, H))
  return q, k, v, jnp.asarray(SEGMENTS)


def numpy_attention(q, k, v, segments, window=0, softcap=0.0, bias_fn=None):
  """Independent float64 attention over [B, T, K, G, H] queries."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum('btkgh,bskh->bkgts', q, k)
  if softcap:
    logits = np.tanh(logits / softcap) * softcap
  if bias_fn is not None:
    logits = logits + np.asarray(bias_fn(jnp.arange(T), jnp.arange(T)), np.float64)
  t, s = np.meshgrid(np.arange(T), np.arange(T), indexing='ij')
  ok = (s <= t) & ((t - s < window) if window else True)
  ok = ok[None] & (segments[:, :, None] == segments[:, None, :])
  logits = np.where(ok[:, None, None], logits, -np.inf)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum('bkgts,bskh->btkgh', p, v)


CASES = {
    'plain': attention.Options(chunk=16),
    'window_softcap': attention.Options(window=7, softcap=5.0, chunk=16),
}


def run(impl, q, k, v, seg, opts):
  if impl == 'cudnn_args':
    return attention.cudnn(q, k, v, seg, opts, implementation='xla')[0]
  if impl == 'dense_tuned':
    return attention.attend('dense', q, k, v, seg, opts._replace(tuned=True))[0]
  return attention.attend(impl, q, k, v, seg, opts)[0]


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('K', [4, 2, 1])  # MHA, GQA, MQA
def test_reference_matches_independent_numpy(case, K):
  q, k, v, seg = inputs(K)
  opts = CASES[case]
  out = attention.xla(q, k, v, seg, opts)[0]
  np.testing.assert_allclose(out, numpy_attention(q, k, v, SEGMENTS, opts.window, opts.softcap),
                             atol=2e-6)


IMPLS = ['dense', 'dense_tuned', 'chunked', 'splash', 'cudnn_args']


# cuDNN attention has no soft-cap: those cases are not run through it (resolve() falls back to
# xla with a log line; tested below).
PAIRS = [(impl, case) for impl in IMPLS for case in CASES
         if not (impl == 'cudnn_args' and CASES[case].softcap)]


@pytest.mark.parametrize('impl, case', PAIRS)
@pytest.mark.parametrize('K', [2, 1])
def test_every_implementation_equals_the_reference_values_and_gradients(impl, case, K):
  opts = CASES[case]
  q, k, v, seg = inputs(K, seed=K)
  w = jax.random.normal(jax.random.key(9), (B, T, K, N // K, H))
  loss = lambda fn: lambda q, k, v: jnp.sum(w * fn(q, k, v))
  ref = lambda q, k, v: attention.xla(q, k, v, seg, opts)[0]
  got = lambda q, k, v: run(impl, q, k, v, seg, opts)
  np.testing.assert_allclose(got(q, k, v), ref(q, k, v), atol=3e-6)
  g_ref = jax.grad(loss(ref), (0, 1, 2))(q, k, v)
  g_got = jax.grad(loss(got), (0, 1, 2))(q, k, v)
  assert float(jnp.abs(g_ref[0]).max()) > 0.1   # the compared gradients are not trivially 0
  for a, b in zip(g_got, g_ref):
    np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize('impl', ['xla', 'dense', 'chunked', 'cudnn_args'])
def test_a_logit_bias_is_added_by_every_implementation_that_can(impl):
  q, k, v, seg = inputs(2)
  opts = attention.Options(chunk=16, bias_fn=alibi_bias)
  want = numpy_attention(q, k, v, SEGMENTS, bias_fn=alibi_bias)
  assert np.abs(want - numpy_attention(q, k, v, SEGMENTS)).max() > 0.1  # the bias matters
  np.testing.assert_allclose(run(impl, q, k, v, seg, opts), want, atol=3e-6)


def test_chunked_pads_instead_of_falling_back_to_dense():
  q, k, v, seg = inputs(1)
  f = lambda q, k, v: attention.attend('chunked', q, k, v, seg, CASES['plain'])[0]
  shapes = [x.aval.shape for eqn in jax.make_jaxpr(f)(q, k, v).jaxpr.eqns
            for x in eqn.outvars] + [x.aval.shape for eqn in _inner_eqns(jax.make_jaxpr(f)(
                q, k, v).jaxpr) for x in eqn.outvars]
  assert (B, 1, N, 16, T) in shapes           # [B, K, G, chunk, S] scores, padded 40 -> 48
  assert not any(s[-2:] == (T, T) for s in shapes if len(s) >= 2)  # never the T x S scores


def _inner_eqns(jaxpr):
  for eqn in jaxpr.eqns:
    for value in eqn.params.values():
      if hasattr(value, 'jaxpr') and hasattr(value.jaxpr, 'eqns'):
        yield from value.jaxpr.eqns
        yield from _inner_eqns(value.jaxpr)


def test_kernels_that_cannot_express_a_layer_fall_back_with_a_log_line(caplog):
  attention._logged.clear()
  with caplog.at_level(logging.WARNING, logger='ropex.model.attention'):
    biased = attention.Options(chunk=16, bias_fn=alibi_bias)
    assert attention.resolve('splash', T, biased) == 'chunked'
    assert attention.resolve('splash', 8, biased) == 'dense'
    assert attention.resolve('cudnn', T, attention.Options(softcap=50.0, chunk=64)) == 'dense'
  text = caplog.text
  assert 'attention_impl=splash: the splash kernel cannot add a positional logit bias; this ' \
         'attention runs chunked instead' in text
  assert 'attention_impl=cudnn: cuDNN attention has no logit soft-cap' in text
  q, k, v, seg = inputs(2)  # and the fallback computes the biased attention
  np.testing.assert_allclose(attention.attend('splash', q, k, v, seg, biased)[0],
                             numpy_attention(q, k, v, SEGMENTS, bias_fn=alibi_bias), atol=3e-6)


def test_auto_picks_the_platforms_implementation():
  opts = attention.Options(chunk=64)
  layer = dict(dtype='bfloat16', head_dim=128)
  assert attention.resolve('auto', 8192, opts, on='tpu', **layer) == 'splash'
  assert attention.resolve('auto', 8192, opts, on='gpu', gpu_compute_capability=(9, 0),
                           **layer) == 'cudnn'
  assert attention.resolve('auto', 64, opts, on='cpu', **layer) == 'dense'
  assert attention.resolve('auto', 65, opts, on='cpu', **layer) == 'chunked'
  assert attention.resolve('auto', 8192, opts._replace(softcap=50.0), on='gpu',
                           gpu_compute_capability=(9, 0), **layer) == 'chunked'
  assert attention.resolve('auto', 8192, opts, on='gpu', dtype='float32', head_dim=128,
                           gpu_compute_capability=(9, 0)) == 'chunked'
  with pytest.raises(ValueError, match='needs the layer'):
    attention.resolve('auto', 8, opts, on='gpu')
  with platform.target('tpu'):
    assert platform.current() == 'tpu' and attention.resolve('auto', 8, opts, **layer) == 'splash'
    assert not platform.cpu_tunings('none')
  assert platform.current() == 'cpu' and platform.cpu_tunings('none')
  assert platform.cpu_tunings('full') and not platform.cpu_tunings('dots')


# cuDNN flash attention's limits as jax.nn.dot_product_attention checks them
# (jax/_src/cudnn/fused_attention_stablehlo.py: check_layout takes fp16/bf16 only;
# check_is_flash_attention: head dim a multiple of 8, <= 256 from compute capability 9.0, <= 128
# before) and cuDNN's own (fused flash attention from Ampere, 8.0). Rows: backend, dtype, head
# dim, compute capability -> kernel.
CHOICE_TABLE = [
    ('tpu', 'float32', 256, None, 'splash'),
    ('tpu', 'bfloat16', 64, None, 'splash'),
    ('cpu', 'bfloat16', 128, None, 'dense'),
    ('gpu', 'float32', 128, (9, 0), 'dense'),     # cuDNN: fp16/bf16 only
    ('gpu', 'float32', 64, (8, 0), 'dense'),
    ('gpu', 'bfloat16', 128, (8, 0), 'cudnn'),
    ('gpu', 'float16', 64, (8, 6), 'cudnn'),
    ('gpu', 'bfloat16', 256, (8, 0), 'dense'),    # > 128 before Hopper (Gemma's head dim)
    ('gpu', 'bfloat16', 256, (8, 9), 'dense'),
    ('gpu', 'bfloat16', 256, (9, 0), 'cudnn'),
    ('gpu', 'bfloat16', 256, (10, 0), 'cudnn'),
    ('gpu', 'bfloat16', 288, (9, 0), 'dense'),    # > 256 anywhere
    ('gpu', 'bfloat16', 36, (9, 0), 'dense'),     # not a multiple of 8
    ('gpu', 'bfloat16', 64, (7, 5), 'dense'),     # pre-Ampere: no fused flash attention
    ('gpu', 'bfloat16', 128, None, 'cudnn'),      # unknown generation counts as Ampere
    ('gpu', 'bfloat16', 256, None, 'dense'),
]


@pytest.mark.parametrize('backend, dtype, head_dim, capability, want', CHOICE_TABLE)
def test_auto_choice_table(backend, dtype, head_dim, capability, want):
  assert attention.choose_attention(backend, dtype, head_dim, capability) == want


def test_every_default_config_gets_a_kernel_that_takes_it_on_a_gpu():
  """The float32 default presets never reach cuDNN (which rejects float32)."""
  from ropex.model.config import ModelConfig, model_block  # pylint: disable=g-import-not-at-top
  cfg = ModelConfig.from_config(model_block('tiny'))
  assert cfg.dtype == 'float32'
  for capability in [(8, 0), (9, 0)]:
    assert attention.choose_attention('gpu', cfg.dtype, cfg.head_dim, capability) == 'dense'


def test_attention_impl_is_validated():
  from ropex.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from ropex.model.config import ModelConfig, model_block  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="model.attention_impl='flash' is not allowed"):
    ModelConfig.from_config(model_block('tiny', attention_impl='flash'))
  assert ModelConfig.from_config(model_block('tiny')).attention_impl == 'auto'


def _bf16_memory_and_values(logits_dtype):
  """Compiled temporaries of the dense forward+backward in bfloat16, and its output."""
  q, k, v, seg = (x.astype(jnp.bfloat16) if x.dtype == jnp.float32 else x for x in inputs(2))
  opts = attention.Options(chunk=64, logits_dtype=logits_dtype)

  def loss(q, k, v):
    return jnp.sum(attention.dense(q, k, v, seg, opts)[0].astype(jnp.float32) ** 2)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  temp = grad.lower(q, k, v).compile().memory_analysis().temp_size_in_bytes
  return temp, attention.dense(q, k, v, seg, opts)[0], (q, k, v, seg)


def test_bfloat16_scores_halve_the_dense_paths_score_memory_and_stay_close():
  # model.attention_logits_dtype='compute' rounds q.k to bfloat16 (Gemma's reference), softmax
  # in float32. Independent check: float64 numpy attention; and XLA's own buffer count of the
  # backward pass must shrink (the [B, K, G, T, S] scores/gradient are the largest temporaries).
  temp_bf16, out_bf16, (q, k, v, seg) = _bf16_memory_and_values('bfloat16')
  temp_f32, out_f32, _ = _bf16_memory_and_values('float32')
  assert temp_bf16 < temp_f32
  expected = numpy_attention(q.astype(jnp.float32), k.astype(jnp.float32),
                             v.astype(jnp.float32), np.asarray(seg))
  for out in (out_bf16, out_f32):
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, atol=0.05)


def test_attention_logits_dtype_field():
  from ropex.model.config import ModelConfig, model_block
  from ropex.model.layers import logits_dtype
  from ropex.errors import ConfigError
  block = model_block('tiny', dtype='bfloat16')
  assert logits_dtype(ModelConfig.from_config(block)) == 'bfloat16'
  block.attention_logits_dtype = 'float32'
  assert logits_dtype(ModelConfig.from_config(block)) == 'float32'
  block.attention_logits_dtype = 'float16'
  with pytest.raises(ConfigError, match='model.attention_logits_dtype'):
    ModelConfig.from_config(block)
  old = dict(model_block('tiny', dtype='bfloat16'))   # a config.json from before the field
  del old['attention_logits_dtype']
  assert ModelConfig.from_config(old).attention_logits_dtype == 'float32'
