"""Shared helpers of the model tests: a small model config, its parameters and its forward.

Both are compiled once per model config (``jax.jit``, the config static) instead of op by op:
on 2 CPU cores an eager init or forward of these tiny models costs seconds of XLA compiles, a
jitted one a fraction of that, and the parameters of one (config, seed) are made once per test
process (arrays are immutable; each caller gets its own copy of the dict tree)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from ropex import model
from ropex.model.config import ModelConfig, model_block


def make_cfg(**overrides) -> ModelConfig:
  """A small GQA model (4 query / 2 kv heads, head dim 8), with ``overrides``."""
  base = dict(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2,
              head_dim=8, hidden_dim=48)
  base.update(overrides)
  return ModelConfig.from_config(model_block('tiny', **base))


@functools.cache
def _init(cfg: ModelConfig, seed: int, length: int):
  tokens = jnp.zeros((2, length), jnp.int32)
  return nn.unbox(jax.jit(model.Transformer(cfg).init)(jax.random.key(seed), tokens)['params'])


def init_params(cfg: ModelConfig, seed: int = 0, length: int = 16):
  """``Transformer(cfg).init(key(seed), zeros((2, length)))['params']``, unboxed."""
  return jax.tree.map(lambda x: x, _init(cfg, seed, length))


@functools.partial(jax.jit, static_argnums=(0, 5))
def _apply(cfg, params, tokens, positions, segments, mutable):
  return model.Transformer(cfg).apply({'params': params}, tokens, positions, segments,
                                      mutable=list(mutable) if mutable else False)


def apply(cfg: ModelConfig, params, tokens, positions=None, segments=None, mutable=()):
  """``Transformer(cfg).apply`` of ``params`` (``mutable``: collections to return, e.g.
  ``['intermediates']``), compiled once per config and shapes."""
  return _apply(cfg, params, tokens, positions, segments, tuple(mutable))
