"""The positional interface and the kinds beyond a q/k rotation: golden values against
independent numpy formulas, the bias through both attention paths, learned parameters that
exist with logical axes, train and are checkpointed, chunked-local attention."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropex.config import defaults as config_base
from ropex import model
from ropex.model import pe_zoo, positional
from ropex.model.config import ModelConfig, pe_block
from ropex.model.pe_interface import Dims
from ropex.errors import ConfigError
from model_testlib import apply, make_cfg
from model_testlib import init_params as init
import reference


def tokens_of(seed, shape=(2, 16), vocab=64):
  return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


@pytest.mark.parametrize('d, p', [(256, 0.25), (256, 0.75), (64, 0.5), (64, 1.0), (64, 0.0)])
def test_proportional_is_bit_identical_to_prope(d, p):
  prop = positional.from_config({'kind': 'proportional', 'fraction': p,
                                 'max_wavelength': 1e6}, d)
  prope = positional.from_config({'kind': 'prope', 'fraction': p, 'max_wavelength': 1e6}, d)
  x = np.random.default_rng(0).standard_normal((2, 9, 3, d)).astype(np.float32)
  pos = np.random.default_rng(1).integers(0, 5000, (2, 9))
  np.testing.assert_array_equal(prop(x, pos), prope(x, pos))
  np.testing.assert_array_equal(prop.inv_freq(), prope.inv_freq())
  # HF's proportional: int(p * d // 2) frequencies theta^(-2k/d) over the FULL head dim, 0 after.
  kept = int(p * d // 2)
  want = np.concatenate([1e6 ** (-np.arange(0, 2 * kept, 2) / d), np.zeros(d // 2 - kept)])
  np.testing.assert_allclose(prop.inv_freq(), want, rtol=1e-12)


def test_alibi_slopes_golden():
  np.testing.assert_allclose(pe_zoo.alibi_slopes(8), [2.0 ** -i for i in range(1, 9)])
  np.testing.assert_allclose(pe_zoo.alibi_slopes(4), [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8])
  # Not a power of 2: the 4-head slopes, then every other slope of 8 heads (paper's code).
  np.testing.assert_allclose(pe_zoo.alibi_slopes(6),
                             [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3])
  np.testing.assert_allclose(pe_zoo.alibi_slopes(12)[8:], [2.0 ** -0.5, 2.0 ** -1.5,
                                                           2.0 ** -2.5, 2.0 ** -3.5])


def test_alibi_bias_golden_uses_the_given_positions():
  pe = positional.from_config({'kind': 'alibi'}, 8)
  pos = np.array([[0, 1, 2, 0, 1]])  # two packed documents
  bias = np.asarray(pe.logit_bias(jnp.asarray(pos), jnp.asarray(pos), {}, 2))
  slopes = [2.0 ** -4, 2.0 ** -8]
  for h, m in enumerate(slopes):
    np.testing.assert_allclose(bias[0, h], -m * (pos[0][:, None] - pos[0][None, :]))
  assert pe.inv_freq() is None and pe.bias_kind == 'alibi'


def _fire_numpy(params, q_pos, k_pos, init_L=512.0, eps=1e-6):
  """FIRE (2310.04418, Eq. in Sec. 3.2) from the paper, in float64."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  psi = lambda x: np.log(np.abs(p['c'] * x) + 1)
  dist = q_pos[:, None] - k_pos[None, :]
  norm = psi(np.maximum(q_pos, abs(p['L_multiplier'] * init_L)))[:, None] + eps
  x = psi(dist) / norm
  h = np.maximum(x[..., None] * p['mlp_w1'] + p['mlp_b1'], 0)
  return np.einsum('tsw,wn->nts', h, p['mlp_w2']) + p['mlp_b2'][:, None, None]


def test_fire_bias_matches_the_paper_formula_and_has_sharded_params():
  cfg = make_cfg(pe=pe_block('fire'), scan_layers=False)
  boxed = model.abstract_params(cfg)
  pe_tree = boxed['layer_0']['attn']['pe']
  axes = {k: v.names for k, v in pe_tree.items()}
  assert axes == {'mlp_w1': (None,), 'mlp_b1': (None,), 'mlp_w2': (None, 'heads'),
                  'mlp_b2': ('heads',), 'c': (), 'L_multiplier': ()}
  params = init(cfg)
  fire = params['layer_0']['attn']['pe']
  assert float(fire['c']) == pytest.approx(0.1) and float(fire['L_multiplier']) == 1.0
  # Larger c and smaller L than the defaults, so that the threshold is crossed in the test.
  fire = dict(fire, c=jnp.asarray(0.7), L_multiplier=jnp.asarray(0.01))
  pos = np.array([0, 1, 2, 3, 7, 8, 20, 40], np.int32)
  got = cfg.layers[0].pe.logit_bias(jnp.asarray(pos[None]), jnp.asarray(pos[None]), fire, 4)
  np.testing.assert_allclose(got[0], _fire_numpy(fire, pos.astype(float), pos.astype(float)),
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('pe', [pe_block('alibi'), pe_block('fire'), pe_block('fope'),
                                pe_block('none', attn_temperature_tuning=True, floor_scale=4.0)],
                         ids=['alibi', 'fire', 'fope', 'temperature'])
def test_dense_and_chunked_attention_give_the_same_model(pe):
  dense = make_cfg(pe=pe)
  chunked = make_cfg(pe=pe, attention_impl='chunked', attention_chunk=4)
  params = init(dense)
  tokens = tokens_of(8)
  segments = jnp.asarray([[1] * 9 + [2] * 7, [1] * 16])
  positions = jnp.asarray([list(range(9)) + list(range(7)), list(range(16))])
  np.testing.assert_allclose(apply(chunked, params, tokens, positions, segments),
                             apply(dense, params, tokens, positions, segments), atol=2e-5)
  # ... and the encoding changes the model (the bias / transform is really applied).
  nope = apply(make_cfg(pe=pe_block('none')), params, tokens, positions, segments)
  assert np.abs(apply(dense, params, tokens, positions, segments) - nope).max() > 1e-3


def test_alibi_attention_equals_an_independent_softmax():
  cfg = make_cfg(pe=pe_block('alibi'), scan_layers=False, num_layers=1)
  params = init(cfg)
  _, state = apply(cfg, params, tokens_of(3), mutable=['intermediates'])
  attn = state['intermediates']['layer_0']['attn']
  q, k = np.asarray(attn['q_BTNH'][0], np.float64), np.asarray(attn['k_BSKH'][0], np.float64)
  k = np.repeat(k, 2, axis=2)
  T = q.shape[1]
  logits = np.einsum('btnh,bsnh->bnts', q, k) / math.sqrt(8)
  t, s = np.meshgrid(np.arange(T), np.arange(T), indexing='ij')
  logits += -pe_zoo.alibi_slopes(4)[None, :, None, None] * (t - s)
  logits = np.where(s <= t, logits, -np.inf)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  np.testing.assert_allclose(attn['probs_BNTS'][0], probs, atol=1e-5)


def test_fope_with_identity_coefficients_is_rope_on_its_mixed_chunks():
  d, L = 32, 128
  pe = positional.from_config({'kind': 'fope', 'train_length': L}, d)
  inv = 10_000.0 ** (-np.arange(0, d, 2) / d)
  kept = inv[inv >= 2 * np.pi / L]
  assert len(kept) == 6 and pe.mixed_chunks() == 6  # D = 6 kept of 16; M = min(6, 32/4)
  np.testing.assert_allclose(pe.basis(), kept)
  eye = jnp.broadcast_to(jnp.eye(6), (2, 6, 6))
  params = {'fixed_cos_coef': eye, 'fixed_sin_coef': eye}
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, 5, 2, d)).astype(np.float32)
  pos = rng.integers(0, 200, (1, 5))
  got = np.asarray(pe.keys(x, pos, params))
  # chunks 0-5: RoPE with the kept frequencies; chunks 6-15: cos = sin = 1 (the reference's pad)
  pairs = [(k, k + d // 2) for k in range(6)]
  want = reference.rotate_pairs(x, pos, pairs, kept)
  x1, x2 = x[..., 6:16], x[..., 22:32]
  want[..., 6:16], want[..., 22:32] = x1 - x2, x2 + x1
  np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize('d, L, theta', [(32, 128, 10_000.0), (16, 4096, 10_000.0),
                                         (32, 64, 500.0)])
def test_fope_golden_against_the_papers_formula_with_random_coefficients(d, L, theta):
  """Random (non-identity) Fourier coefficients, GQA (4 query heads on 2 KV heads): queries and
  keys equal the numpy formula of tests/reference.py."""
  pe = positional.from_config({'kind': 'fope', 'train_length': L, 'max_wavelength': theta}, d)
  D, M = len(pe.basis()), pe.mixed_chunks()
  rng = np.random.default_rng(1)
  A = rng.standard_normal((2, D, M)).astype(np.float32)
  B = rng.standard_normal((2, D, M)).astype(np.float32)
  params = {'fixed_cos_coef': A, 'fixed_sin_coef': B}
  q = rng.standard_normal((2, 7, 4, d)).astype(np.float32)
  k = rng.standard_normal((2, 7, 2, d)).astype(np.float32)
  pos = rng.integers(0, min(3 * L, 1500), (2, 7))  # float32 angles: keep n·ω_0 moderate
  got_q, got_k = np.asarray(pe.queries(q, pos, params)), np.asarray(pe.keys(k, pos, params))
  for n in range(4):
    np.testing.assert_allclose(got_q[:, :, n], reference.fope(q[:, :, n], pos, n // 2, A, B,
                                                              theta, L), atol=2e-4, rtol=1e-4)
  for h in range(2):
    np.testing.assert_allclose(got_k[:, :, h], reference.fope(k[:, :, h], pos, h, A, B,
                                                              theta, L), atol=2e-4, rtol=1e-4)


def test_fope_coefficients_are_the_authors_init_and_fixed():
  """eye / strided eye + Xavier-normal (gain 0.3, torch's fans of a [K, D, M] tensor); the
  gradient never reaches them and weight decay skips them."""
  from ropex.training import optim  # pylint: disable=g-import-not-at-top
  pe = positional.from_config({'kind': 'fope', 'train_length': 4096}, 16)
  D, M = len(pe.basis()), pe.mixed_chunks()
  assert (D, M) == (6, 4)  # 6 frequencies kept, M = 16/4: the strided identity
  specs = pe.param_specs(Dims(4, 2, 16, 32))
  assert {k: (s.shape, s.axes) for k, s in specs.items()} == {
      'fixed_cos_coef': ((2, 6, 4), ('kv_heads', None, None)),
      'fixed_sin_coef': ((2, 6, 4), ('kv_heads', None, None))}
  draws = np.stack([np.asarray(specs['fixed_cos_coef'].init(jax.random.key(i), (2, 6, 4)))
                    for i in range(400)])
  strided_eye = np.zeros((6, 4))
  strided_eye[[0, 2, 4], [0, 1, 2]] = 1.0  # [j * ceil(6/4), j] for j * 2 < 6
  np.testing.assert_allclose(draws.mean(0), np.broadcast_to(strided_eye, (2, 6, 4)), atol=0.02)
  assert abs((draws - strided_eye).std() - 0.3 * math.sqrt(2 / ((6 + 2) * 4))) < 0.005
  params = {k: s.init(jax.random.key(0), s.shape) for k, s in specs.items()}
  x = jnp.ones((1, 3, 2, 16))
  grads = jax.grad(lambda p: jnp.sum(pe.keys(x, jnp.arange(3)[None], p) ** 2))(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
  mask = optim.decay_mask({'pe': params, 'w': jnp.ones(2)}, decay_norms_and_embeddings=True)
  assert mask == {'pe': {'fixed_cos_coef': False, 'fixed_sin_coef': False}, 'w': True}


def test_sinusoidal_absolute_golden_and_learned_absolute_table():
  D = 32
  cfg = make_cfg(pe=pe_block('sinusoidal_absolute'), embed_dim=D)
  pos = np.array([[0, 1, 5, 0, 3]])
  got = np.asarray(pe_zoo.sinusoid_table(jnp.asarray(pos), D, 10_000.0))[0]
  i = np.arange(D // 2)
  angle = pos[0][:, None] / 10_000.0 ** (2 * i / D)
  want = np.zeros((5, D))
  want[:, 0::2], want[:, 1::2] = np.sin(angle), np.cos(angle)
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert cfg.input_pe is cfg.layers[0].pe and 'pe_embedding' not in init(cfg)

  learned = make_cfg(pe=pe_block('learned_absolute', max_positions=40), embed_dim=D)
  boxed = model.abstract_params(learned)
  assert boxed['pe_embedding']['position_embedding'].names == (None, 'embed')
  assert boxed['pe_embedding']['position_embedding'].value.shape == (40, D)
  params = init(learned)
  table = params['pe_embedding']['position_embedding']
  tokens = tokens_of(2, (1, 5))
  encoded = model.Transformer(learned).apply({'params': params}, tokens,
                                             method=lambda m, t: m.embedder.encode(t))
  embedded = model.Transformer(learned).apply(
      {'params': params}, tokens, jnp.asarray(pos),
      method=lambda m, t, p: m.cfg.input_pe.embed(m.embedder.encode(t), p, m.pe_embedding()))
  np.testing.assert_allclose(embedded - encoded, np.asarray(table)[pos[0]][None], atol=1e-6)


def test_llama4_query_temperature_golden():
  pe = positional.from_config({'kind': 'none', 'attn_temperature_tuning': True}, 8)
  pos = np.array([[0, 8190, 8191, 16383, 100_000]])
  want = np.log(np.floor((pos + 1) / 8192) + 1) * 0.1 + 1
  np.testing.assert_allclose(pe.temperature(jnp.asarray(pos)), want, rtol=1e-6)
  assert want[0, 1] == 1.0 and want[0, 2] > 1.0
  q = np.ones((1, 5, 2, 8), np.float32)
  np.testing.assert_allclose(pe.queries(q, pos, {}), want[..., None, None] * q, rtol=1e-6)
  np.testing.assert_array_equal(pe.keys(q, pos, {}), q)  # keys untouched: query-only
  assert positional.from_config({'kind': 'none'}, 8).queries(q, pos, {}) is q


def test_chunked_local_attention_mask():
  types = {'local': {'pe': pe_block('rope'), 'chunk_attention': 4}}
  cfg = make_cfg(layer_pattern=('local',), layer_types=types, scan_layers=False, num_layers=1)
  assert cfg.layers[0].chunk_attention == 4
  params = init(cfg)
  positions = jnp.asarray([list(range(6)) + list(range(10)), list(range(16))])
  segments = jnp.asarray([[1] * 6 + [2] * 10, [1] * 16])
  _, state = apply(cfg, params, tokens_of(1), positions, segments, mutable=['intermediates'])
  probs = np.asarray(state['intermediates']['layer_0']['attn']['probs_BNTS'][0])
  pos, seg = np.asarray(positions), np.asarray(segments)
  t, s = np.meshgrid(np.arange(16), np.arange(16), indexing='ij')
  for b in range(2):
    allowed = (s <= t) & (seg[b][:, None] == seg[b][None, :]) & (
        pos[b][:, None] // 4 == pos[b][None, :] // 4)
    assert np.all(probs[b][:, ~allowed] == 0) and np.all(probs[b][:, allowed] > 0)


@pytest.mark.parametrize('overrides, words', [
    (dict(pe=pe_block('alibi', scaling={'type': 'yarn', 'factor': 4.0})),
     "model.pe.scaling.type='yarn' is not used by kind 'alibi'"),
    (dict(layer_pattern=('a',), layer_types={'a': {'pe': pe_block('learned_absolute')}}),
     "acts on the input embedding"),
    (dict(layer_pattern=('a',), layer_types={'a': {'window': 4, 'chunk_attention': 8}}),
     'chunk_attention=8 and a sliding window'),
    (dict(pe=pe_block('none', floor_scale=4.0)), "model.pe.floor_scale=4.0 is not used"),
    (dict(pe=pe_block('rope', position_scale=2.0, scaling={'type': 'linear', 'factor': 2.0})),
     'position_scale is an alias of scaling.type=linear'),
    (dict(pe=pe_block('fire', fire_mlp_width=0)), 'model.pe.fire_mlp_width=0 is not allowed; it must be'),
])
def test_invalid_zoo_configs_name_the_field(overrides, words):
  with pytest.raises(ConfigError, match=words):
    make_cfg(**overrides)


def test_learned_encodings_train_and_are_checkpointed(tmp_path):
  """FIRE and FoPE layers plus a learned absolute table: one short run on the synthetic tasks;
  the loss falls, every learned PE parameter moves (FoPE's fixed coefficients stay bit for bit),
  and the checkpoint holds them."""
  from ropex.training import inference, loop, metrics  # pylint: disable=g-import-not-at-top
  c = config_base.base_config('tiny', pe=pe_block('learned_absolute', max_positions=64))
  c.model.layer_pattern = ('fire', 'fope')
  c.model.layer_types = {'fire': {'pe': pe_block('fire')},
                         'fope': {'pe': pe_block('fope', train_length=64)}}
  c.train.update(steps=12, batch_size=8, seq_len=64, warmup_steps=4, log_every_steps=1)
  c.checkpoint.update(every_steps=12, async_save=False)
  c.eval.steps, c.data.prefetch = 0, 0
  cfg = ModelConfig.from_config(c.model)
  initial = init(cfg, seed=c.train.seed, length=64)
  loop.train(c, str(tmp_path))
  losses = [r['train/loss'] for r in metrics.read_metrics(str(tmp_path)) if 'train/loss' in r]
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3
  _, params, step = inference.load_for_inference(str(tmp_path))
  assert step == 12
  pe_params = {'fire': params['layers']['layer_0']['attn']['pe'],
               'fope': params['layers']['layer_1']['attn']['pe'],
               'absolute': params['pe_embedding']}
  assert set(pe_params['fire']) == {'mlp_w1', 'mlp_b1', 'mlp_w2', 'mlp_b2', 'c', 'L_multiplier'}
  assert set(pe_params['fope']) == {'fixed_cos_coef', 'fixed_sin_coef'}
  for name, tree in pe_params.items():
    start = {'fire': initial['layers']['layer_0']['attn']['pe'],
             'fope': initial['layers']['layer_1']['attn']['pe'],
             'absolute': initial['pe_embedding']}[name]
    for key, value in tree.items():
      assert value.shape == start[key].shape
      moved = np.abs(np.asarray(value) - np.asarray(start[key])).max()
      if name == 'fope':  # the authors' fixed Fourier coefficients (fourier_learnable=False)
        assert moved == 0.0, key
      else:
        assert moved > 1e-5, (name, key)


def test_learned_pe_params_are_sharded_and_a_2x2x2_mesh_matches_one_device():
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  from ropex import data  # pylint: disable=g-import-not-at-top
  from ropex.training import sharding, step
  c = config_base.base_config('tiny', pe=pe_block('learned_absolute', max_positions=64))
  c.model.layer_pattern = ('fire', 'fope')
  c.model.layer_types = {'fire': {'pe': pe_block('fire')},
                         'fope': {'pe': pe_block('fope', train_length=64)}}
  c.model.num_kv_heads = 2
  c.train.update(batch_size=8, seq_len=32, warmup_steps=1, learning_rate=1e-2)
  c.data.prefetch = 0
  it = data.make_iterator(c, 'train')
  batches = [next(it) for _ in range(2)]

  def run(mesh):
    setup = step.make_setup(c, mesh)
    train_step, state = step.make_train_step(setup), step.init_state(setup)
    losses = []
    for b in batches:
      g = sharding.global_batch(b, setup.batch_sharding, 8, step.BATCH_DTYPES)
      state, m = train_step(state, g)
      losses.append(float(m['loss']))
    return setup, losses

  c.mesh.update(data=2, fsdp=2, tensor=2)
  setup, losses_8 = run(sharding.make_mesh(c))
  specs = setup.state_shardings.params
  assert specs['layers']['layer_0']['attn']['pe']['mlp_w2'].spec == P(None, None, 'tensor')
  assert specs['layers']['layer_1']['attn']['pe']['fixed_cos_coef'].spec == P(None, None, None, None)
  assert specs['pe_embedding']['position_embedding'].spec == P(None, 'fsdp')
  c.mesh.update(data=1, fsdp=1, tensor=1)
  _, losses_1 = run(sharding.make_mesh(c, jax.devices()[:1]))
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
