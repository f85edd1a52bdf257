"""RoPE scalings (model.pe.scaling) against an independent numpy implementation written here
from the published formulas / Hugging Face's documented equations, for head dims 64 and 256."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from ropex.model import positional
from ropex.errors import ConfigError

DIMS = [64, 256]
FACTORS = [2.0, 4.0, 8.0, 32.0]


# ---- the reference: one small function per published formula (float64) ----

def ref_default(theta, d):
  """RoPE (Su et al.): g_k = theta^(-2k/d), k = 0..d/2-1."""
  return np.array([theta ** (-2.0 * k / d) for k in range(d // 2)])


def ref_linear(theta, d, s):
  """Position interpolation (Chen et al. 2306.15595): positions / s, i.e. g_k / s."""
  return ref_default(theta, d) / s


def ref_ntk(theta, d, s):
  """NTK-aware (bloc97): base theta * s^(d/(d-2))."""
  return ref_default(theta * s ** (d / (d - 2.0)), d)


def ref_dynamic(theta, d, s, L0, L):
  """Dynamic NTK (HF 'dynamic'): base theta * (s L / L0 - (s - 1))^(d/(d-2)) once L > L0."""
  if L <= L0:
    return ref_default(theta, d)
  return ref_default(theta * (s * L / L0 - (s - 1)) ** (d / (d - 2.0)), d)


def ref_yarn(theta, d, s, L0, beta_fast=32.0, beta_slow=1.0, truncate=True):
  """YaRN (Peng et al. 2309.00071) as HF computes it: the chunk index where the wavelength
  fits r rotations in L0 is d ln(L0 / (2 pi r)) / (2 ln theta); between the indices of
  beta_fast and beta_slow rotations the frequencies ramp linearly (in the chunk index) from the
  original to the interpolated g_k / s."""
  def index_of(r):
    return d * math.log(L0 / (2 * math.pi * r)) / (2 * math.log(theta))
  lo, hi = index_of(beta_fast), index_of(beta_slow)
  if truncate:
    lo, hi = math.floor(lo), math.ceil(hi)
  lo, hi = max(lo, 0), min(hi, d - 1)
  if hi == lo:
    hi += 0.001
  out = []
  for k, g in enumerate(ref_default(theta, d)):
    interpolated_share = min(max((k - lo) / (hi - lo), 0.0), 1.0)
    out.append(interpolated_share * g / s + (1 - interpolated_share) * g)
  return np.array(out), (0.1 * math.log(s) + 1.0 if s > 1 else 1.0)


def ref_llama3(theta, d, s=8.0, low=1.0, high=4.0, L0=8192):
  """Llama 3.1's apply_scaling: wavelength < L0/high kept, > L0/low divided by s, in between
  (1 - a) g / s + a g with a = (L0 / wavelength - low) / (high - low)."""
  out = []
  for g in ref_default(theta, d):
    wavelength = 2 * math.pi / g
    if wavelength < L0 / high:
      out.append(g)
    elif wavelength > L0 / low:
      out.append(g / s)
    else:
      a = (L0 / wavelength - low) / (high - low)
      out.append((1 - a) * g / s + a * g)
  return np.array(out)


def ref_longrope(theta, d, ext, s, L0):
  """LongRoPE (Ding et al. 2402.13753; Phi-3): g_k / ext_k; attention factor
  sqrt(1 + ln s / ln L0)."""
  return ref_default(theta, d) / np.asarray(ext), math.sqrt(1 + math.log(s) / math.log(L0))


def build(d, scaling, kind='rope', theta=10_000.0, **fields):
  return positional.from_config({'kind': kind, 'max_wavelength': theta, 'scaling': scaling,
                                 **fields}, d)


# ---- inv_freq and attention_factor ----

@pytest.mark.parametrize('d', DIMS)
@pytest.mark.parametrize('s', FACTORS)
def test_linear_ntk_and_yarn(d, s):
  np.testing.assert_allclose(build(d, {'type': 'linear', 'factor': s}).inv_freq(),
                             ref_linear(1e4, d, s), rtol=1e-12)
  np.testing.assert_allclose(build(d, {'type': 'ntk', 'factor': s}).inv_freq(),
                             ref_ntk(1e4, d, s), rtol=1e-12)
  for L0, theta in [(2048, 1e4), (8192, 5e5), (4096, 1e6)]:
    pe = build(d, {'type': 'yarn', 'factor': s, 'original_max_position': L0}, theta=theta)
    inv, factor = ref_yarn(theta, d, s, L0)
    np.testing.assert_allclose(pe.inv_freq(), inv, rtol=1e-12)
    assert pe.attention_factor() == pytest.approx(factor, rel=1e-12)
  pe = build(d, {'type': 'yarn', 'factor': s, 'original_max_position': 4096, 'beta_fast': 16.0,
                 'beta_slow': 2.0, 'truncate': False, 'attention_factor': 1.25})
  np.testing.assert_allclose(pe.inv_freq(), ref_yarn(1e4, d, s, 4096, 16.0, 2.0, False)[0],
                             rtol=1e-12)
  assert pe.attention_factor() == 1.25


@pytest.mark.parametrize('d', DIMS)
def test_yarn_keeps_fast_chunks_and_interpolates_slow_ones(d):
  """The paper's promise: chunks with more than beta_fast rotations over L0 keep their
  frequency; chunks with fewer than beta_slow are interpolated by the full factor."""
  s, L0 = 8.0, 4096
  pe = build(d, {'type': 'yarn', 'factor': s, 'original_max_position': L0})
  g = ref_default(1e4, d)
  rotations = L0 * g / (2 * math.pi)
  np.testing.assert_allclose(pe.inv_freq()[rotations > 32], g[rotations > 32], rtol=1e-14)
  np.testing.assert_allclose(pe.inv_freq()[rotations < 1], g[rotations < 1] / s, rtol=1e-14)
  assert (rotations > 32).any() and (rotations < 1).any()


@pytest.mark.parametrize('d', DIMS)
@pytest.mark.parametrize('fields', [{}, {'factor': 16.0, 'low_freq_factor': 2.0,
                                         'high_freq_factor': 8.0, 'original_max_position': 4096}])
def test_llama3(d, fields):
  pe = build(d, {'type': 'llama3', **fields}, theta=500_000.0)
  args = {'s': fields.get('factor', 8.0), 'low': fields.get('low_freq_factor', 1.0),
          'high': fields.get('high_freq_factor', 4.0),
          'L0': fields.get('original_max_position', 8192)}
  np.testing.assert_allclose(pe.inv_freq(), ref_llama3(5e5, d, **args), rtol=1e-12)
  assert pe.attention_factor() == 1.0


@pytest.mark.parametrize('d', DIMS)
@pytest.mark.parametrize('s, L0', [(4.0, 4096), (32.0, 4096), (16.0, 8192)])
def test_dynamic_ntk_at_several_lengths(d, s, L0):
  scaling = {'type': 'dynamic_ntk', 'factor': s, 'original_max_position': L0}
  pe = build(d, scaling)
  for L in [16, L0, L0 + 1, 2 * L0, 10 * L0]:
    np.testing.assert_allclose(pe.inv_freq(L), ref_dynamic(1e4, d, s, L0, L), rtol=1e-12)
  np.testing.assert_allclose(pe.inv_freq(L0), ref_default(1e4, d), rtol=1e-14)


def test_dynamic_ntk_uses_the_batch_max_position_at_run_time():
  """The model computes L = max(positions in the batch) + 1 at run time (like HF's
  dynamic_rope_update); describe's inv_freq(L) gives the same frequencies."""
  d, L0 = 64, 128
  pe = build(d, {'type': 'dynamic_ntk', 'factor': 4.0, 'original_max_position': L0})
  x = np.random.default_rng(0).standard_normal((1, 3, 1, d)).astype(np.float32)
  for top in [50, 127, 300, 1000]:
    pos = np.array([[0, 7, top]])
    inv = ref_dynamic(1e4, d, 4.0, L0, top + 1)
    np.testing.assert_allclose(pe.inv_freq(top + 1), inv, rtol=1e-12)
    a = pos[..., None, None] * inv
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    want = np.concatenate([x1 * np.cos(a) - x2 * np.sin(a), x2 * np.cos(a) + x1 * np.sin(a)], -1)
    np.testing.assert_allclose(pe(jnp.asarray(x), jnp.asarray(pos)), want, atol=2e-4)


@pytest.mark.parametrize('d', DIMS)
def test_longrope_short_and_long_factors(d):
  rng = np.random.default_rng(d)
  short = tuple(1.0 + rng.random(d // 2))
  long = tuple(1.0 + 10 * rng.random(d // 2))
  for s, L0 in [(8.0, 4096), (32.0, 4096), (1.0, 2048)]:
    pe = build(d, {'type': 'longrope', 'factor': s, 'original_max_position': L0,
                   'long_factor': long, 'short_factor': short})
    inv_short, factor = ref_longrope(1e4, d, short, s, L0)
    inv_long, _ = ref_longrope(1e4, d, long, s, L0)
    np.testing.assert_allclose(pe.inv_freq(), inv_short, rtol=1e-12)
    np.testing.assert_allclose(pe.inv_freq(L0), inv_short, rtol=1e-12)
    np.testing.assert_allclose(pe.inv_freq(L0 + 1), inv_long, rtol=1e-12)
    assert pe.attention_factor() == pytest.approx(factor if s > 1 else 1.0, rel=1e-12)


@pytest.mark.parametrize('d', DIMS)
@pytest.mark.parametrize('kind, fields', [('prope', {'fraction': 0.25}),
                                          ('proportional', {'fraction': 0.25}),
                                          ('prope_reversed', {'fraction': 0.75})])
def test_prope_kinds_keep_their_chunks_of_the_scaled_full_dim_frequencies(d, kind, fields):
  scaling = {'type': 'yarn', 'factor': 8.0, 'original_max_position': 4096}
  pe = build(d, scaling, kind=kind, theta=1e6, **fields)
  full, factor = ref_yarn(1e6, d, 8.0, 4096)
  kept = int(fields['fraction'] * d // 2)
  chunks = range(kept) if kind != 'prope_reversed' else range(d // 2 - kept, d // 2)
  want = np.zeros(d // 2)
  want[list(chunks)] = full[list(chunks)]
  np.testing.assert_allclose(pe.inv_freq(), want, rtol=1e-12)   # dropped chunks stay 0
  assert pe.attention_factor() == pytest.approx(factor)


def test_partial_scales_over_its_rotary_slice():
  d = 64  # rotary_fraction 0.5: HF's dim = head_dim * partial_rotary_factor = 32
  pe = build(d, {'type': 'ntk', 'factor': 4.0}, kind='partial', rotary_fraction=0.5)
  np.testing.assert_allclose(pe.inv_freq()[:16], ref_ntk(1e4, 32, 4.0), rtol=1e-12)
  np.testing.assert_array_equal(pe.inv_freq()[16:], 0)


# ---- what the rotation promises ----

STATIC = [{'type': 'linear', 'factor': 4.0}, {'type': 'ntk', 'factor': 4.0},
          {'type': 'yarn', 'factor': 8.0, 'original_max_position': 512},
          {'type': 'llama3', 'original_max_position': 512}]


@pytest.mark.parametrize('scaling', STATIC, ids=lambda s: s['type'])
@pytest.mark.parametrize('kind, fields', [('rope', {}), ('prope', {'fraction': 0.5})])
def test_scaled_scores_depend_only_on_relative_position(scaling, kind, fields):
  d = 32
  pe = build(d, scaling, kind=kind, **fields)
  rng = np.random.default_rng(1)
  q, k = rng.standard_normal((2, 1, 1, 1, d)).astype(np.float32)

  def score(m, n):
    return float(jnp.sum(pe(q, np.array([[m]])) * pe(k, np.array([[n]]))))

  for m, n, shift in [(5, 2, 100), (40, 0, 1234), (7, 7, 999)]:
    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=5e-4)


@pytest.mark.parametrize('scaling', [
    {'type': 'dynamic_ntk', 'factor': 4.0, 'original_max_position': 64},
    {'type': 'longrope', 'factor': 4.0, 'original_max_position': 64,
     'long_factor': tuple(np.linspace(1, 4, 16)), 'short_factor': (1.0,) * 16}],
    ids=lambda s: s['type'])
def test_length_dependent_scores_are_relative_within_one_batch(scaling):
  """dynamic_ntk and longrope pick their frequencies from the batch's length, so q.k is
  relative among batches of the same length (here: position 999 is in every batch)."""
  d = 32
  pe = build(d, scaling)
  rng = np.random.default_rng(2)
  q, k = rng.standard_normal((2, 1, 1, 1, d)).astype(np.float32)

  def score(m, n):
    pq, pk = pe(np.broadcast_to(q, (1, 2, 1, d)), np.array([[m, 999]])), pe(
        np.broadcast_to(k, (1, 2, 1, d)), np.array([[n, 999]]))
    return float(jnp.sum(pq[:, 0] * pk[:, 0]))

  for m, n, shift in [(5, 2, 100), (40, 0, 500)]:
    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=5e-4)


@pytest.mark.parametrize('kind, fields, scaled_dims', [('rope', {}, 32), ('prope', {'fraction': 0.25}, 32),
                                                       ('partial', {'rotary_fraction': 0.5}, 16)])
def test_attention_factor_multiplies_cos_and_sin_of_the_rotary_block(kind, fields, scaled_dims):
  d = 32
  scaling = {'type': 'yarn', 'factor': 16.0, 'original_max_position': 256}
  pe = build(d, scaling, kind=kind, **fields)
  plain = build(d, {'type': 'yarn', 'factor': 16.0, 'original_max_position': 256,
                    'attention_factor': 1.0}, kind=kind, **fields)
  x = np.random.default_rng(3).standard_normal((2, 5, 2, d)).astype(np.float32)
  pos = np.random.default_rng(4).integers(0, 1000, (2, 5))
  factor = 0.1 * math.log(16.0) + 1
  got, ref = np.asarray(pe(x, pos)), np.asarray(plain(x, pos))
  np.testing.assert_allclose(got[..., :scaled_dims], factor * ref[..., :scaled_dims], rtol=1e-5)
  np.testing.assert_array_equal(got[..., scaled_dims:], ref[..., scaled_dims:])


def test_position_scale_is_an_alias_of_linear():
  x = np.random.default_rng(5).standard_normal((2, 7, 3, 16)).astype(np.float32)
  pos = np.random.default_rng(6).integers(0, 4000, (2, 7))
  alias = positional.from_config({'kind': 'rope', 'position_scale': 4.0}, 16)
  linear = build(16, {'type': 'linear', 'factor': 4.0})
  np.testing.assert_allclose(alias.inv_freq(), linear.inv_freq(), rtol=1e-15)
  np.testing.assert_allclose(alias(x, pos), linear(x, pos), atol=1e-6)


@pytest.mark.parametrize('scaling, words', [
    ({'type': 'yarnn'}, "model.pe.scaling.type='yarnn' is not allowed; allowed: none, linear"),
    ({'type': 'linear'}, 'model.pe.scaling.factor is required for scaling type'),
    ({'type': 'yarn', 'factor': 4.0}, 'original_max_position is required'),
    ({'type': 'linear', 'factor': 4.0, 'beta_fast': 8.0}, 'beta_fast=8.0 is not used by scaling'),
    ({'type': 'none', 'factor': 2.0}, "factor=2.0 is not used by scaling type 'none'"),
    ({'type': 'ntk', 'factor': -1.0}, 'factor=-1.0 is not allowed; it must be a number > 0'),
    ({'type': 'llama3', 'low_freq_factor': 4.0, 'high_freq_factor': 2.0}, 'high_freq_factor'),
    ({'type': 'longrope', 'factor': 4.0, 'original_max_position': 64, 'long_factor': (1.0,),
      'short_factor': (1.0,) * 8}, 'long_factor must be 8 numbers > 0'),
    ({'type': 'yarn', 'factor': 4.0, 'original_max_position': 64, 'beta_fast': 1.0,
      'beta_slow': 2.0}, 'beta_fast must be greater'),
])
def test_invalid_scalings_name_the_field(scaling, words):
  with pytest.raises(ConfigError, match=words):
    build(16, scaling)


def test_scaling_as_an_evaluation_override_globally_and_per_layer_type():
  import os  # pylint: disable=g-import-not-at-top
  from ropex.config import loading  # pylint: disable=g-import-not-at-top
  from ropex.evaluation import overrides  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  config = loading.load(os.path.join(root, 'configs', 'tiny.py'))
  texts = ['model.pe.scaling.type=yarn', 'model.pe.scaling.factor=8',
           'model.pe.scaling.original_max_position=128']
  cfg = overrides.model_config(config, overrides.parse(texts))
  inv, factor = ref_yarn(1e4, 32, 8.0, 128)
  np.testing.assert_allclose(cfg.layers[0].pe.inv_freq(), inv, rtol=1e-12)
  assert cfg.layers[0].pe.attention_factor() == pytest.approx(factor)
  gemma3 = loading.load(os.path.join(root, 'configs', 'gemma3_schedule.py:arch=tiny'))
  cfg = overrides.model_config(gemma3, overrides.parse(
      ['model.layer_types.global.pe.scaling.factor=16']))
  assert [s.pe.scaling.factor for s in cfg.layers] == [None] * 5 + [16.0]  # global only
  with pytest.raises(ConfigError, match='scaling.factor is required'):
    overrides.model_config(config, overrides.parse(['model.pe.scaling.type=linear']))
