"""The plain reference ``python -m ropex.bench`` times beside ropex's train step: the same
decoder (the Gemma v1 block of a ropex preset: scaled tied embedding, RMSNorm with the ``1 +
scale`` offset, multi-head attention with RoPE, GeGLU MLP) written the way a user would write
it in Flax — ``nn.Dense`` / ``nn.Embed``, a Python loop over layers, ``jax.nn.softmax`` over
float32 scores, optax's cross-entropy and AdamW with global-norm clipping, one ``jax.jit`` with
the state donated — with none of ropex's choices (scanned layers, hand-written CPU backward
passes, chunked loss, sharding rules).

Written from the Gemma paper and RoFormer, not from :mod:`ropex.model`, so the ratio of the two
step times says what ropex's choices are worth on the machine. Same parameters, same matmul
FLOPs (``tests/tools/test_tools_flax_reference.py`` checks both against ropex's model, and
XLA's cost analysis of the two steps within a few per cent).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class Shape:
  """The decoder's sizes (a ropex Gemma v1 preset's ``_ARCHS`` row)."""
  vocab: int
  layers: int
  embed: int
  heads: int
  kv_heads: int
  head_dim: int
  hidden: int
  theta: float = 10_000.0

  @classmethod
  def of(cls, model_block) -> 'Shape':
    theta = model_block.pe.get('max_wavelength') or 10_000.0
    return cls(model_block.vocab_size, model_block.num_layers, model_block.embed_dim,
               model_block.num_heads, model_block.num_kv_heads, model_block.head_dim,
               model_block.hidden_dim, float(theta))


class RMSNorm(nn.Module):
  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.zeros, (x.shape[-1],))
    var = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
    return (x * jax.lax.rsqrt(var + 1e-6) * (1.0 + scale)).astype(x.dtype)


def rope(x, theta: float):
  """RoFormer's rotation, Gemma's half-split pairing: dims (i, i + H/2) rotate by pos·θ^(-2i/H)."""
  T, H = x.shape[1], x.shape[-1]
  inv = theta ** (-jnp.arange(H // 2, dtype=jnp.float32) * 2.0 / H)
  angle = jnp.arange(T, dtype=jnp.float32)[:, None] * inv[None, :]
  sin, cos = jnp.sin(angle)[None, :, None, :], jnp.cos(angle)[None, :, None, :]
  a, b = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1).astype(x.dtype)


class Block(nn.Module):
  shape: Shape
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x):
    s, dense = self.shape, lambda n, name: nn.Dense(n, use_bias=False, dtype=self.dtype,
                                                    name=name)
    B, T, _ = x.shape
    h = RMSNorm(name='pre_attention_norm')(x)
    q = dense(s.heads * s.head_dim, 'q')(h).reshape(B, T, s.heads, s.head_dim)
    k = dense(s.kv_heads * s.head_dim, 'k')(h).reshape(B, T, s.kv_heads, s.head_dim)
    v = dense(s.kv_heads * s.head_dim, 'v')(h).reshape(B, T, s.kv_heads, s.head_dim)
    q, k = rope(q, s.theta) * s.head_dim ** -0.5, rope(k, s.theta)
    k, v = (jnp.repeat(t, s.heads // s.kv_heads, axis=2) for t in (k, v))
    scores = jnp.einsum('btnh,bsnh->bnts', q, k).astype(jnp.float32)
    causal = jnp.tril(jnp.ones((T, T), bool))
    probs = jax.nn.softmax(jnp.where(causal, scores, -1e30), axis=-1).astype(self.dtype)
    attn = jnp.einsum('bnts,bsnh->btnh', probs, v).reshape(B, T, s.heads * s.head_dim)
    x = x + dense(s.embed, 'o')(attn)
    h = RMSNorm(name='pre_ffw_norm')(x)
    h = nn.gelu(dense(s.hidden, 'gate')(h)) * dense(s.hidden, 'up')(h)
    return x + dense(s.embed, 'down')(h)


class Decoder(nn.Module):
  shape: Shape
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens_BT):
    s = self.shape
    embed = nn.Embed(s.vocab, s.embed, embedding_init=nn.initializers.normal(1.0),
                     name='embed')
    x = (embed(tokens_BT) * math.sqrt(s.embed)).astype(self.dtype)
    for i in range(s.layers):
      x = Block(s, self.dtype, name=f'layer_{i}')(x)
    x = RMSNorm(name='final_norm')(x)
    return embed.attend(x.astype(jnp.float32))   # tied output projection, float32 logits


def make(shape: Shape, dtype: str, batch: int, seq_len: int, lr: float = 1e-3):
  """``(step, state, batch)``: the jitted train step (state donated), its initial state
  ``(params, opt_state)`` and a batch of random tokens."""
  model = Decoder(shape, jnp.dtype(dtype))
  tokens = jax.random.randint(jax.random.key(1), (batch, seq_len + 1), 0, shape.vocab)
  params = model.init(jax.random.key(0), tokens[:, :-1])['params']
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=0.1))

  def loss_fn(p, tokens_BT):
    logits = model.apply({'params': p}, tokens_BT[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BT[:, 1:]).mean()

  def step(state, tokens_BT):
    p, opt = state
    loss, grads = jax.value_and_grad(loss_fn)(p, tokens_BT)
    updates, opt = tx.update(grads, opt, p)
    return (optax.apply_updates(p, updates), opt), loss

  return jax.jit(step, donate_argnums=0), (params, tx.init(params)), tokens


def param_count(params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(params))
