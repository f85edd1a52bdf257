"""Positional-encoding registry: exact rotations against an independent numpy reference."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropex.model import positional
from ropex.errors import ConfigError
import reference

ROTATING = [
    {'kind': 'rope'},
    {'kind': 'rope', 'layout': 'interleaved'},
    {'kind': 'rope', 'max_wavelength': 500_000},
    {'kind': 'prope', 'fraction': 0.75},
    {'kind': 'prope', 'fraction': 0.25, 'layout': 'interleaved'},
    {'kind': 'prope_reversed', 'fraction': 0.75},
    {'kind': 'partial', 'rotary_fraction': 0.5},
]


def _x(shape=(2, 7, 3, 16), seed=0):
  rng = np.random.default_rng(seed)
  # Positions up to 4000: float32 angles (as in Gemma) carry ~4000 * 2^-24 rad of error.
  return rng.standard_normal(shape).astype(np.float32), rng.integers(0, 4000, shape[:2])


@pytest.mark.parametrize('d', [16, 256])
def test_rope_golden_half_and_interleaved(d):
  x, pos = _x((2, 5, 2, d))
  freqs = [10_000.0 ** (-2 * k / d) for k in range(d // 2)]
  half = positional.from_config({'kind': 'rope'}, d)
  inter = positional.from_config({'kind': 'rope', 'layout': 'interleaved'}, d)
  np.testing.assert_allclose(
      half(x, pos), reference.rotate_pairs(x, pos, [(k, k + d // 2) for k in range(d // 2)], freqs),
      atol=1e-3)
  np.testing.assert_allclose(
      inter(x, pos), reference.rotate_pairs(x, pos, [(2 * k, 2 * k + 1) for k in range(d // 2)], freqs),
      atol=1e-3)


def test_prope_golden_keeps_highest_frequencies():
  d, p = 16, 0.5
  x, pos = _x((2, 5, 2, d))
  kept = int(p * d / 2)  # 4 highest: chunks 0..3, exponent over the full head dim
  freqs = [10_000.0 ** (-2 * k / d) for k in range(kept)]
  pe = positional.from_config({'kind': 'prope', 'fraction': p}, d)
  np.testing.assert_allclose(pe(x, pos),
                             reference.rotate_pairs(x, pos, [(k, k + d // 2) for k in range(kept)], freqs),
                             atol=1e-3)


def test_prope_reversed_golden_keeps_lowest_frequencies():
  d = 16
  x, pos = _x((1, 6, 2, d))
  chunks = range(2, 8)  # p=0.75 keeps the 6 lowest of 8
  freqs = [10_000.0 ** (-2 * k / d) for k in chunks]
  pe = positional.from_config({'kind': 'prope_reversed', 'fraction': 0.75}, d)
  np.testing.assert_allclose(pe(x, pos),
                             reference.rotate_pairs(x, pos, [(k, k + d // 2) for k in chunks], freqs),
                             atol=1e-3)


def test_partial_recomputes_frequencies_over_rotated_slice():
  d, rot = 16, 8  # rotary_fraction 0.5: NeoX rotates dims 0..7, pairs (k, k+4)
  x, pos = _x((1, 6, 2, d))
  freqs = [10_000.0 ** (-2 * k / rot) for k in range(rot // 2)]
  pe = positional.from_config({'kind': 'partial', 'rotary_fraction': 0.5}, d)
  np.testing.assert_allclose(pe(x, pos),
                             reference.rotate_pairs(x, pos, [(k, k + rot // 2) for k in range(rot // 2)],
                                       freqs), atol=1e-3)
  # It keeps the lowest frequency theta^-(rot-2)/rot, so it is not p-RoPE.
  assert pe.timescales[-1] == pytest.approx(10_000.0 ** ((rot - 2) / rot))


def test_gemma_2b_prope_075_rotates_exactly_chunks_0_to_95():
  d = 256
  pe = positional.from_config({'kind': 'prope', 'fraction': 0.75}, d)
  assert pe.rotated_chunks() == tuple(range(96))
  x = np.ones((1, 3, 1, d), np.float32)
  out = np.asarray(pe(x, np.array([[0, 1, 2]])))
  changed = np.nonzero(np.any(np.abs(out - x) > 1e-7, axis=(0, 1, 2)))[0]
  np.testing.assert_array_equal(changed, np.r_[0:96, 128:224])
  # Kept frequencies are exactly RoPE's top 96 (denominator = head dim, not rotated dims).
  rope = positional.from_config({'kind': 'rope'}, d)
  assert pe.timescales == rope.timescales[:96]


def test_reversed_control_rotates_chunks_32_to_127():
  d = 256
  pe = positional.from_config({'kind': 'prope_reversed', 'fraction': 0.75}, d)
  assert pe.rotated_chunks() == tuple(range(32, 128))
  x = np.ones((1, 3, 1, d), np.float32)
  out = np.asarray(pe(x, np.array([[0, 1, 2]])))
  changed = np.nonzero(np.any(np.abs(out - x) > 1e-7, axis=(0, 1, 2)))[0]
  np.testing.assert_array_equal(changed, np.r_[32:128, 160:256])


@pytest.mark.parametrize('layout', ['half', 'interleaved'])
def test_prope_endpoints_equal_rope_and_nope_exactly(layout):
  x, pos = _x((2, 9, 2, 32))
  prope1 = positional.from_config({'kind': 'prope', 'fraction': 1.0, 'layout': layout}, 32)
  rope = positional.from_config({'kind': 'rope', 'layout': layout}, 32)
  np.testing.assert_array_equal(prope1(x, pos), rope(x, pos))
  prope0 = positional.from_config({'kind': 'prope', 'fraction': 0.0, 'layout': layout}, 32)
  np.testing.assert_array_equal(prope0(x, pos), x)


@pytest.mark.parametrize('cfg', ROTATING, ids=lambda c: str(c))
def test_relative_position_invariance_and_norms(cfg):
  d = 32
  pe = positional.from_config(cfg, d)
  rng = np.random.default_rng(1)
  q, k = rng.standard_normal((2, 1, 1, 1, d)).astype(np.float32)

  def score(m, n):
    return float(jnp.sum(pe(q, np.array([[m]])) * pe(k, np.array([[n]]))))

  for m, n, shift in [(5, 2, 100), (40, 0, 1234), (7, 7, 999)]:
    assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=2e-4)
  x, pos = _x((2, 5, 3, d))
  np.testing.assert_allclose(np.linalg.norm(pe(x, pos), axis=-1),
                             np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_nope_is_identity():
  x, pos = _x()
  np.testing.assert_array_equal(positional.from_config({'kind': 'none'}, 16)(x, pos), x)


def test_jit_and_bfloat16_keep_dtype():
  pe = positional.from_config({'kind': 'prope', 'fraction': 0.5}, 16)
  x, pos = _x()
  out = jax.jit(pe)(jnp.asarray(x, jnp.bfloat16), pos)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), pe(x, pos), atol=0.05)


def test_position_scale_interpolates_positions():
  x, pos = _x()
  scaled = positional.from_config({'kind': 'rope', 'position_scale': 4.0}, 16)
  plain = positional.from_config({'kind': 'rope'}, 16)
  np.testing.assert_allclose(scaled(x, pos * 4), plain(x, pos), atol=1e-3)


@pytest.mark.parametrize('cfg, head_dim, words', [
    ({'kind': 'prope', 'fraction': 1.5}, 16, 'model.pe.fraction=1.5 is not allowed; it must be a number in [0, 1]'),
    ({'kind': 'prope', 'fraction': -0.1}, 16, 'model.pe.fraction'),
    ({'kind': 'rope'}, 15, 'model.head_dim=15 must be a positive even integer'),
    ({'kind': 'rotary9'}, 16, "model.pe.kind='rotary9' is not a registered"),
    ({'kind': 'rope', 'max_wavelength': 0}, 16, 'model.pe.max_wavelength=0 is not allowed; it must be a number > 0'),
    ({'kind': 'rope', 'max_wavelength': -5.0}, 16, 'max_wavelength'),
    ({'kind': 'rope', 'layout': 'zigzag'}, 16, "model.pe.layout='zigzag' is not allowed"),
    ({'kind': 'rope', 'fraction': 0.5}, 16, "model.pe.fraction=0.5 is not used by kind 'rope'"),
])
def test_invalid_values_give_clear_errors(cfg, head_dim, words):
  with pytest.raises(ConfigError, match=words.replace('[', r'\[').replace(']', r'\]')):
    positional.from_config(cfg, head_dim)


def test_unknown_kind_lists_registered_kinds():
  with pytest.raises(ConfigError) as err:
    positional.from_config({'kind': 'kerple'}, 16)  # (was 'alibi', which is now registered)
  for kind in ('none', 'rope', 'prope', 'prope_reversed', 'partial', 'proportional', 'alibi',
               'fire', 'fope', 'learned_absolute', 'sinusoidal_absolute'):
    assert kind in str(err.value)


def test_register_a_new_encoding_in_one_place():
  @dataclasses.dataclass(frozen=True)
  class Flip:
    def __call__(self, x_BTNH, positions_BT):
      return -x_BTNH

  positional.register('test_flip')(lambda f, head_dim: Flip())
  try:
    x, pos = _x()
    np.testing.assert_array_equal(positional.from_config({'kind': 'test_flip'}, 16)(x, pos), -x)
    with pytest.raises(ValueError, match='already registered'):
      positional.register('test_flip')(lambda f, d: Flip())
  finally:
    positional._REGISTRY.pop('test_flip')


def test_readme_example_registration():
  """The README's 'Adding an encoding' example, verbatim apart from the module prefix."""
  from ropex.model.positional import Rotary, _Fields, _LAYOUTS, register

  @register('rope_linear')
  def _rope_linear(f: _Fields, head_dim: int):
    """RoPE with frequencies spaced linearly from 1 down to 1/θ (not geometrically)."""
    theta = f.positive('max_wavelength', 10_000.0)
    freqs = np.linspace(1.0, 1.0 / theta, head_dim // 2)
    return Rotary(kind='rope_linear', head_dim=head_dim, rotary_dim=head_dim, start=0,
                  stop=head_dim // 2, timescales=tuple(1.0 / freqs), max_wavelength=theta,
                  layout=f.choice('layout', 'half', _LAYOUTS))

  try:
    d = 16
    x, pos = _x((1, 4, 2, d))
    pe = positional.from_config({'kind': 'rope_linear', 'max_wavelength': 100.0}, d)
    freqs = np.linspace(1.0, 0.01, d // 2)
    np.testing.assert_allclose(
        pe(x, pos), reference.rotate_pairs(x, pos, [(k, k + d // 2) for k in range(d // 2)], freqs),
        atol=1e-3)
  finally:
    positional._REGISTRY.pop('rope_linear')


def _readme_block(index: int) -> str:
  """The ``index``-th python block of the docs' 'Adding an encoding' section, verbatim."""
  import os  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with open(os.path.join(root, 'docs', 'encodings.md')) as f:
    text = f.read()
  section = text[text.index('## Adding an encoding'):text.index('## Per-layer schedules')]
  return re.findall(r'```python\n(.*?)```', section, re.S)[index]


def test_readme_non_rotary_example_through_describe_evaluate_analyze_and_report(tmp_path):
  """The README's learned-slope ALiBi, registered by executing its README block in
  ropex.model.positional's namespace, then trained, described, evaluated, analysed and reported."""
  from ropex.training import inference, loop  # pylint: disable=g-import-not-at-top
  from ropex.config import defaults as config_base
  from ropex.tools import describe
  from ropex.experiments import report
  from ropex.analysis import pipeline, prompts  # pylint: disable=g-import-not-at-top
  from ropex.evaluation import suite  # pylint: disable=g-import-not-at-top
  from ropex.model.config import ModelConfig, pe_block  # pylint: disable=g-import-not-at-top
  exec(_readme_block(1), vars(positional))  # pylint: disable=exec-used
  try:
    c = config_base.base_config('tiny', pe=pe_block('alibi_learned'))
    c.train.update(steps=6, batch_size=8, seq_len=32, warmup_steps=1, log_every_steps=1)
    c.checkpoint.update(every_steps=6, async_save=False)
    c.eval.steps, c.data.prefetch, c.name = 0, 0, 'readme_alibi_learned'
    cfg = ModelConfig.from_config(c.model)
    d = describe.describe(cfg, 'readme', seq_len=32)
    layer = d['layers'][0]
    assert (layer['pe_kind'], layer['bias'], layer['inv_freq'], layer['pe_params']) == (
        'alibi_learned', 'linear distance', None, cfg.num_heads)
    assert 'bias linear distance' in describe.format_table(d)

    workdir = str(tmp_path / 'run')
    loop.train(c, workdir)
    config, params, step = inference.load_for_inference(workdir)
    slopes = np.asarray(params['layers']['layer_0']['attn']['pe']['slope'])
    assert step == 6 and slopes.shape == (cfg.num_layers, cfg.num_heads)  # scanned: per layer
    init_slopes = np.asarray([2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8])
    assert np.all(np.abs(slopes - init_slopes).max(axis=1) > 1e-6)   # they train

    options = suite.Options(lengths=[16, 32], examples=2, tasks=(), retrieval='none',
                            depths=[0.5])
    suite.resolve(config, options)
    results = suite.evaluate(config, params, options, step=step, workdir=workdir)
    assert results['run']['layers'][0]['pe_kind'] == 'alibi_learned'
    assert all(np.isfinite(p) for p in results['perplexity']['perplexity'])

    batch = prompts.task_prompts(config.data, 1, per_task=1)
    out = pipeline.analyze(cfg, params, batch, str(tmp_path / 'analysis'), top_heads=1,
                           batch_size=4, html=False)
    with open(out.files['report']) as f:
      text = f.read()
    assert 'frequency analysis not applicable' in text and 'logit bias linear distance' in text
    assert np.all(np.isnan(out.usage.band_shares()['q_high']))

    rep = report.report([workdir], str(tmp_path / 'report'))
    assert rep['runs'][0].row == 'alibi_learned' and rep['runs'][0].status == 'finished'
  finally:
    positional._REGISTRY.pop('alibi_learned')
