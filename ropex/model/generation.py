"""Free generation from a model: greedy or nucleus sampling, batched, with a key/value cache
(:mod:`ropex.model.decode`).

:func:`generate` left-pads a batch of prompts into one ``[B, P]`` array (pad rows have segment
id 0 and are never attended to by a real token; every row's positions count its own tokens from
0, so each row is decoded exactly as it would be alone), runs the prompt through the model once
(filling the cache), then one token per step inside a single ``jax.jit`` (``lax.scan`` over
the steps). Parameters in the scanned layout are unstacked once for decoding; with a
:class:`ropex.training.placement.Placement` the parameters, the batch and the cache live on its
mesh, split like evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ropex import model as model_lib
from ropex.errors import ConfigError
from ropex.model import decode
from ropex.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Sampling:
  """``temperature`` 0: greedy (argmax); otherwise softmax(logits / temperature) restricted to
  the smallest set of most likely tokens whose probability reaches ``top_p``."""
  temperature: float = 0.0
  top_p: float = 1.0
  seed: int = 0

  def check(self) -> 'Sampling':
    if not self.temperature >= 0:
      raise ConfigError(f'--temperature={self.temperature} must be >= 0 (0: greedy)')
    if not 0 < self.top_p <= 1:
      raise ConfigError(f'--top_p={self.top_p} must be in (0, 1]')
    return self


def decoding_config(cfg: ModelConfig) -> ModelConfig:
  """The unscanned, un-rematerialised twin of ``cfg`` that decoding runs."""
  return dataclasses.replace(cfg, scan_layers=False, remat='none')


def decoding_params(params, cfg: ModelConfig, placement=None):
  """``params`` (``cfg``'s layout, host or device) in the unscanned layout of
  :func:`decoding_config`, on ``placement``'s mesh if given."""
  params = nn.unbox(params)
  dcfg = decoding_config(cfg)
  shardings = placement.param_shardings(dcfg) if placement is not None else None
  if not cfg.scan_layers:
    return jax.device_put(params, shardings) if shardings is not None else params
  unstack = functools.partial(model_lib.unstack_layers, cfg=cfg)
  return jax.jit(unstack, out_shardings=shardings)(params)


def left_pad(prompts: Sequence[Sequence[int]], rows: int, pad_id: int = 0):
  """``(tokens_BP, positions_BP, segment_ids_BP)`` of prompts left-padded to the longest;
  ``rows`` >= len(prompts) (extra rows are all padding)."""
  P = max(len(p) for p in prompts)
  tokens = np.full((rows, P), pad_id, np.int32)
  segments = np.zeros((rows, P), np.int32)
  positions = np.zeros((rows, P), np.int32)
  for b, p in enumerate(prompts):
    tokens[b, P - len(p):] = p
    segments[b, P - len(p):] = 1
    positions[b, P - len(p):] = np.arange(len(p))
  return tokens, positions, segments


def _choose(logits_BV, key, sampling: Sampling):
  if sampling.temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV.astype(jnp.float32) / sampling.temperature
  if sampling.top_p < 1:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV   # mass of strictly likelier tokens
    kept = jnp.sum(before_BV < sampling.top_p, axis=-1, keepdims=True)
    cutoff_B1 = jnp.take_along_axis(sorted_BV, kept - 1, axis=-1)
    logits_BV = jnp.where(logits_BV >= cutoff_B1, logits_BV, -jnp.inf)
  return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


def _last_logits(module, tokens_BT, positions_BT, segment_ids_BT):
  return module.logits(module.hidden(tokens_BT, positions_BT, segment_ids_BT)[:, -1:])[:, 0]


@functools.partial(jax.jit, static_argnames=('cfg', 'steps', 'sampling'))
def _run(params, cache, tokens_BP, positions_BP, segments_BP, seed, *, cfg, steps, sampling):
  model = model_lib.Transformer(cfg)
  key = jax.random.key(seed)

  def apply(cache, tokens, positions, segments):
    logits, variables = model.apply({'params': params, decode.COLLECTION: cache}, tokens,
                                    positions, segments, method=_last_logits,
                                    mutable=[decode.COLLECTION])
    return logits, variables[decode.COLLECTION]

  logits_BV, cache = apply(cache, tokens_BP, positions_BP, segments_BP)
  key, sub = jax.random.split(key)
  first_B = _choose(logits_BV, sub, sampling)
  next_pos_B = jnp.sum(segments_BP, axis=1).astype(jnp.int32)   # each row's length

  def step(carry, _):
    cache, token_B, pos_B, key = carry
    logits_BV, cache = apply(cache, token_B[:, None], pos_B[:, None],
                             jnp.ones_like(token_B)[:, None])
    key, sub = jax.random.split(key)
    new_B = _choose(logits_BV, sub, sampling)
    return (cache, new_B, pos_B + 1, key), new_B

  _, rest_NB = jax.lax.scan(step, (cache, first_B, next_pos_B, key), None, length=steps - 1)
  return jnp.concatenate([first_B[:, None], rest_NB.T], axis=1)


def generate(cfg: ModelConfig, params, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             *, eos_id: int | None = None, sampling: Sampling = Sampling(), placement=None,
             pad_id: int = 0, prepared: bool = False) -> list[list[int]]:
  """The tokens generated after each prompt (lists of ids; up to ``max_new_tokens`` each,
  ending before the first ``eos_id``). ``params`` are in ``cfg``'s layout (or already
  :func:`decoding_params` when ``prepared``); with ``placement`` the batch is split over its
  batch axes (rows padded up to a multiple of them) and the parameters placed on its mesh."""
  if max_new_tokens < 1:
    raise ConfigError(f'--max_new_tokens={max_new_tokens} must be >= 1')
  if not prompts or any(len(p) == 0 for p in prompts):
    raise ConfigError('every prompt needs at least one token; an empty prompt was given')
  sampling.check()
  dcfg = decoding_config(cfg)
  if not prepared:
    params = decoding_params(params, cfg, placement)
  rows = placement.rows(len(prompts)) if placement is not None else len(prompts)
  arrays = left_pad(prompts, rows, pad_id)
  run = functools.partial(_run, seed=np.int32(sampling.seed), cfg=dcfg, steps=max_new_tokens,
                          sampling=dataclasses.replace(sampling, seed=0))  # seed: traced
  if placement is not None:
    arrays = [placement.batch(a) for a in arrays]
    with placement.rules_context():
      cache = decode.empty_cache(model_lib.Transformer(dcfg), params, rows,
                                 arrays[0].shape[1] + max_new_tokens)
      cache = jax.tree.map(lambda x: _on_batch_axes(placement, x), cache)
      out_BN = placement.to_host(run(params, cache, *arrays))
  else:
    cache = decode.empty_cache(model_lib.Transformer(dcfg), params, rows,
                               arrays[0].shape[1] + max_new_tokens)
    out_BN = np.asarray(run(params, cache, *arrays))
  return [_until_eos(row.tolist(), eos_id) for row in out_BN[:len(prompts)]]


def _on_batch_axes(placement, x):
  """A cache array split over the batch axes like the batch (the scalar index replicated)."""
  from ropex.training import sharding  # pylint: disable=g-import-not-at-top
  batch_axes = sharding.batch_sharding(placement.mesh, placement.rules).spec[:1]
  spec = jax.sharding.PartitionSpec(*batch_axes, *([None] * (x.ndim - 1))) if x.ndim else (
      jax.sharding.PartitionSpec())
  return jax.device_put(x, jax.sharding.NamedSharding(placement.mesh, spec))


def _until_eos(ids: list[int], eos_id: int | None) -> list[int]:
  return ids[:ids.index(eos_id)] if eos_id is not None and eos_id in ids else ids
