"""Cached decoding (ropex.model.decode) and generation (ropex.model.generation) against the
full-sequence forward pass: the cache must change nothing but the cost."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropex import model as model_lib
from ropex.errors import ConfigError
from ropex.model import decode, generation
from ropex.model.config import pe_block
from model_testlib import apply, init_params, make_cfg

LOCAL_GLOBAL = dict(
    layer_pattern=('local', 'global'),
    layer_types={'local': {'pe': {'kind': 'rope', 'max_wavelength': 10_000}, 'window': 3},
                 'global': {'pe': {'kind': 'prope', 'fraction': 0.25,
                                   'max_wavelength': 1_000_000}}})

CONFIGS = {   # together: GQA and MHA, every window mode, scanned and not, every PE family
    'mha_softcaps': dict(num_kv_heads=4, attn_logit_softcap=5.0, final_logit_softcap=3.0),
    'sliding_window': dict(sliding_window=3),
    'prope_unscanned': dict(pe=pe_block('prope', fraction=0.25, max_wavelength=10_000),
                            scan_layers=False),
    'local_global_scanned': dict(num_layers=4, **LOCAL_GLOBAL),
    'alibi_bias': dict(pe=pe_block('alibi')),
    'chunked_local': dict(layer_pattern=('c',), layer_types={'c': {'chunk_attention': 4}}),
    'learned_absolute': dict(pe=pe_block('learned_absolute', max_positions=32)),
}


def _lively(params):
  """Random weights scaled up so that the next token depends on the context (a tiny random
  model with tied embeddings otherwise just repeats its input token)."""
  return jax.tree.map(lambda x: x * 3.0 if x.ndim > 1 else x, params)


def _init(cfg, seed=0):
  return _lively(init_params(cfg, seed, 8))


def _cached_logits(cfg, params, tokens_BT, positions_BT, segments_BT, prefill: int):
  """Logits of every position, the first ``prefill`` in one cached call, then one by one."""
  dcfg = generation.decoding_config(cfg)
  dparams = generation.decoding_params(params, cfg)
  model = model_lib.Transformer(dcfg)
  cache = decode.empty_cache(model, dparams, tokens_BT.shape[0], tokens_BT.shape[1])
  apply = jax.jit(lambda c, *a: model.apply({'params': dparams, 'cache': c}, *a,
                                            mutable=['cache']))
  out = []
  for start, stop in [(0, prefill)] + [(t, t + 1) for t in range(prefill, tokens_BT.shape[1])]:
    logits, variables = apply(cache, tokens_BT[:, start:stop], positions_BT[:, start:stop],
                              segments_BT[:, start:stop])
    cache = variables['cache']
    out.append(np.asarray(logits))
  return np.concatenate(out, axis=1)


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_cached_logits_equal_the_full_forward(name):
  """Row 0: 10 tokens; row 1: 3 pads (segment 0) then 7 tokens whose positions start at 0.
  Prompt of 5 rows in one call, then 5 cached steps: every row's logits are those of its own
  tokens through the full (uncached) forward pass alone."""
  cfg = make_cfg(**CONFIGS[name])
  params = _init(cfg)
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, cfg.vocab_size, (2, 10)).astype(np.int32)
  tokens[1, :3] = 0
  positions = np.stack([np.arange(10), np.maximum(np.arange(10) - 3, 0)]).astype(np.int32)
  segments = np.stack([np.ones(10), np.arange(10) >= 3]).astype(np.int32)
  cached = _cached_logits(cfg, params, tokens, positions, segments, prefill=5)
  # each row alone through the plain forward pass (one call): row 1's own 7 tokens from
  # position 0, followed by 3 tokens whose logits are not compared (causal: they change nothing)
  alone = np.stack([tokens[0], np.concatenate([tokens[1, 3:], tokens[1, :3]])])
  forward = np.asarray(jax.jit(model_lib.Transformer(cfg).apply)({'params': params}, alone))
  np.testing.assert_allclose(cached[0], forward[0], atol=2e-5, rtol=2e-5)
  np.testing.assert_allclose(cached[1, 3:], forward[1, :7], atol=2e-5, rtol=2e-5)


# local_global_scanned: slow only (16 s); its cached logits equal the full forward in the fast
# test_cached_logits_equal_the_full_forward, and prope_unscanned runs this greedy check fast.
@pytest.mark.parametrize('name', [pytest.param('local_global_scanned', marks=pytest.mark.slow),
                                  'prope_unscanned'])
def test_greedy_generation_equals_full_forward_argmax(name):
  """Each generated token is the argmax of the full forward pass over the prompt and the tokens
  generated before it (one uncached pass over the whole sequence checks all of them); a batch
  of prompts of different lengths gives each prompt's own continuation."""
  cfg = make_cfg(**CONFIGS[name])
  params = _init(cfg, seed=2)
  prompts = [[5, 9, 13, 7, 21, 4, 30], [11, 2], [40] * 4]
  out = generation.generate(cfg, params, prompts, max_new_tokens=8)
  for prompt, new in zip(prompts, out):
    logits = apply(cfg, params, np.asarray([prompt + new], np.int32))
    assert np.argmax(np.asarray(logits[0]), -1)[len(prompt) - 1:-1].tolist() == new
  assert len({tuple(o) for o in out}) > 1 and any(len(set(o)) > 1 for o in out)  # not trivial
  assert generation.generate(cfg, params, prompts[1:2], max_new_tokens=8) == out[1:2]


def test_generation_stops_before_eos():
  cfg = make_cfg()
  params = _init(cfg, seed=2)
  full = generation.generate(cfg, params, [[5, 9, 13]], max_new_tokens=8)[0]
  eos = full[3]
  cut = generation.generate(cfg, params, [[5, 9, 13]], max_new_tokens=8, eos_id=eos)[0]
  assert cut == full[:full.index(eos)]


def test_sharded_generation_equals_unsharded():
  """Parameters, batch and cache on an 8-device mesh (batch over data x fsdp = 4 x 2): the same
  tokens as on one device, rows padded to the batch shards and dropped again."""
  from ropex.config import defaults  # pylint: disable=g-import-not-at-top
  from ropex.training.placement import Placement  # pylint: disable=g-import-not-at-top
  config = defaults.base_config()
  config.mesh.update(data=4, fsdp=2, tensor=1)
  placement = Placement.from_config(config, jax.devices()[:8])
  cfg = make_cfg(**CONFIGS['local_global_scanned'])
  params = _init(cfg, seed=3)
  prompts = [[5, 9, 13, 7], [11, 2], [40, 3, 3]]
  sharded = generation.generate(cfg, params, prompts, 6, placement=placement)
  assert sharded == generation.generate(cfg, params, prompts, 6)


def test_top_p_below_the_top_token_mass_is_greedy_and_seeds_reproduce():
  cfg = make_cfg()
  params = _init(cfg, seed=4)
  prompts = [[5, 9, 13], [7, 7]] * 4
  greedy = generation.generate(cfg, params, prompts, 6)
  sample = lambda **kw: generation.generate(cfg, params, prompts, 6,
                                            sampling=generation.Sampling(**kw))
  assert sample(temperature=1.0, top_p=1e-6) == greedy
  assert sample(temperature=1.0, top_p=1e-6, seed=5) == greedy
  hot = sample(temperature=5.0, top_p=0.999, seed=7)
  assert hot == sample(temperature=5.0, top_p=0.999, seed=7)
  assert hot != sample(temperature=5.0, top_p=0.999, seed=8)  # 48 sampled tokens: two seeds agreeing ~impossible


@pytest.mark.parametrize('kwargs,field', [
    (dict(prompts=[[]]), 'empty prompt'), (dict(max_new_tokens=0), '--max_new_tokens'),
    (dict(sampling=generation.Sampling(temperature=-1.0)), '--temperature'),
    (dict(sampling=generation.Sampling(temperature=1.0, top_p=0.0)), '--top_p')])
def test_bad_generation_arguments_are_one_line(kwargs, field):
  cfg = make_cfg()
  args = dict(prompts=[[3, 4]], max_new_tokens=2)
  args.update(kwargs)
  with pytest.raises(ConfigError, match=field):
    generation.generate(cfg, {}, **args)   # checked before the parameters are touched


def test_training_and_init_never_create_a_cache():
  cfg = make_cfg()
  variables = model_lib.Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  assert set(variables) == {'params'}
