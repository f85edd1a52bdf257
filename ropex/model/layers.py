"""Gemma (v1) building blocks in Flax linen.

Parameter names and shapes follow the official Gemma Flax checkpoints
(``embedder/input_embedding``, ``attn/q_einsum/w``, ``attn/kv_einsum/w`` or
``attn/qkv_einsum/w``, ``attn/attn_vec_einsum/w``, ``mlp/gating_einsum``, ``mlp/linear``,
``*_norm/scale``). Every parameter carries logical axis names for sharding.

Shape suffixes: B batch, T query length, S key length, D embed, N query heads, K kv heads,
G query heads per kv head, H head dim, F mlp hidden, V vocab, C rotary chunks.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ropex.model import ops, pe_interface
from ropex.model.config import LayerSpec, ModelConfig

NEG_INF = -2.3819763e38  # finite, so fully masked rows give a uniform softmax, not NaN


def _fan_in(in_axis, out_axis, batch_axis=()):
  return nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal',
                                          in_axis=in_axis, out_axis=out_axis,
                                          batch_axis=batch_axis)


def _param(module, name, init, axes, shape, param_dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, param_dtype)


class RMSNorm(nn.Module):
  """RMSNorm with Gemma's (1 + scale); statistics in float32."""
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BTD):
    scale = _param(self, 'scale', nn.initializers.zeros_init(), ('norm',),
                   (x_BTD.shape[-1],), self.param_dtype)
    x = x_BTD.astype(jnp.float32)
    normed = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-6)
    return (normed * (1.0 + scale.astype(jnp.float32))).astype(x_BTD.dtype)


class Einsum(nn.Module):
  """A parameter ``w`` of a fixed shape applied with an einsum equation."""
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  in_axis: int | Sequence[int]
  out_axis: int | Sequence[int]
  batch_axis: Sequence[int] = ()
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, eqn: str, x):
    init = _fan_in(self.in_axis, self.out_axis, self.batch_axis)
    w = _param(self, 'w', init, self.axes, self.shape, self.param_dtype)
    return ops.einsum(eqn, x.astype(self.dtype), w.astype(self.dtype))


class PEParams(nn.Module):
  """The learned parameters an encoding declares (``ParamSpec``s), with their logical axes;
  returns them as a dict for the encoding's hooks."""
  specs: tuple      # ((name, ParamSpec), ...)
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self):
    return {name: _param(self, name, spec.init, spec.axes, spec.shape, self.param_dtype)
            for name, spec in self.specs}


def pe_dims(cfg: ModelConfig) -> pe_interface.Dims:
  return pe_interface.Dims(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.embed_dim)


class Embedder(nn.Module):
  """Tied embedding: ``encode`` scales by sqrt(embed_dim), ``decode`` gives logits."""
  vocab_size: int
  embed_dim: int
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  def setup(self):
    init = nn.initializers.normal(stddev=self.embed_dim ** -0.5)
    self.input_embedding = self.param(
        'input_embedding', nn.with_logical_partitioning(init, ('vocab', 'embed')),
        (self.vocab_size, self.embed_dim), self.param_dtype)

  def encode(self, tokens_BT):
    x_BTD = jnp.take(self.input_embedding, tokens_BT, axis=0).astype(self.dtype)
    return x_BTD * jnp.sqrt(jnp.asarray(self.embed_dim, jnp.float32)).astype(self.dtype)

  def decode(self, x_BTD):
    return ops.einsum('BTD,VD->BTV', x_BTD, self.input_embedding.astype(self.dtype))


class FeedForward(nn.Module):
  """GeGLU: ``linear(gelu(x W0) * (x W1))`` with ``gating_einsum`` of shape [2, D, F]."""
  embed_dim: int
  hidden_dim: int
  dtype: str = 'float32'
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self, x_BTD):
    gating = _param(self, 'gating_einsum', _fan_in(1, 2, (0,)), (None, 'embed', 'mlp'),
                    (2, self.embed_dim, self.hidden_dim), self.param_dtype).astype(self.dtype)
    linear = _param(self, 'linear', _fan_in(0, 1), ('mlp', 'embed'),
                    (self.hidden_dim, self.embed_dim), self.param_dtype).astype(self.dtype)
    gate_BTF = ops.dense(x_BTD, gating[0])
    up_BTF = ops.dense(x_BTD, gating[1])
    h_BTF = nn.gelu(gate_BTF) * up_BTF
    h_BTF = nn.with_logical_constraint(h_BTF, ('batch', 'length', 'act_mlp'))
    return ops.dense(h_BTF, linear)


def attention_mask(segment_q_BT, segment_k_BS, offset: int, window: int,
                   chunk: int = 0, positions_q_BT=None, positions_k_BS=None):
  """Causal, same-document, (if ``window`` > 0) sliding-window and (if ``chunk`` > 0)
  chunked-local mask [B, 1, 1, T, S].

  Query ``t`` sits at row index ``offset + t``; key ``s`` at index ``s``. Chunked-local attention
  (Llama 4's ``attention_chunk_size``) lets a query see only keys in the same block of ``chunk``
  positions, ``pos_q // chunk == pos_k // chunk``; it uses the given positions, so packed
  documents (positions restarting at 0) are chunked from their own start."""
  t_T = offset + jnp.arange(segment_q_BT.shape[1])
  s_S = jnp.arange(segment_k_BS.shape[1])
  allowed_TS = s_S[None, :] <= t_T[:, None]
  if window:
    allowed_TS &= t_T[:, None] - s_S[None, :] < window
  allowed_BTS = allowed_TS[None] & (segment_q_BT[:, :, None] == segment_k_BS[:, None, :])
  if chunk:
    allowed_BTS &= (positions_q_BT // chunk)[:, :, None] == (positions_k_BS // chunk)[:, None, :]
  return allowed_BTS[:, None, None]


def _attend(q_BTKGH, k_BSKH, v_BSKH, segment_q_BT, segment_k_BS, offset, window, softcap,
            bias_BNTS=None, chunk=0, positions_q_BT=None, positions_k_BS=None):
  logits_BKGTS = ops.einsum('BTKGH,BSKH->BKGTS', q_BTKGH, k_BSKH, jnp.float32)
  if bias_BNTS is not None:  # the encoding's logit bias, before softcap and mask
    K, G = q_BTKGH.shape[2:4]
    b, _, T, S = bias_BNTS.shape
    logits_BKGTS = logits_BKGTS + bias_BNTS.astype(jnp.float32).reshape(b, K, G, T, S)
  if softcap:
    logits_BKGTS = jnp.tanh(logits_BKGTS / softcap) * softcap
  mask = attention_mask(segment_q_BT, segment_k_BS, offset, window, chunk, positions_q_BT,
                        positions_k_BS)
  return ops.softmax_attend(jnp.where(mask, logits_BKGTS, NEG_INF), v_BSKH)


class Attention(nn.Module):
  """Multi-head / grouped / multi-query attention. The layer's positional encoding
  (``spec.pe``, from the registry) transforms queries and keys, may add a logit bias and owns
  its learned parameters (under ``pe``), all through the hooks of
  :class:`ropex.model.pe_interface.Encoding`, never by name."""
  cfg: ModelConfig
  spec: LayerSpec

  def _einsum(self, name, shape, axes, in_axis, out_axis, batch_axis=()):
    cfg = self.cfg
    return Einsum(shape=shape, axes=axes, in_axis=in_axis, out_axis=out_axis,
                  batch_axis=batch_axis, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                  name=name)

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT):
    cfg = self.cfg
    N, K, D, H = cfg.num_heads, cfg.num_kv_heads, cfg.embed_dim, cfg.head_dim
    if N == K:
      qkv = self._einsum('qkv_einsum', (3, N, D, H), (None, 'heads', 'embed', 'head_dim'),
                         2, (1, 3), (0,))
      q_BTNH, k_BSKH, v_BSKH = qkv('BTD,CNDH->CBTNH', x_BTD)
    else:
      q_BTNH = self._einsum('q_einsum', (N, D, H), ('heads', 'embed', 'head_dim'), 1, (0, 2))(
          'BTD,NDH->BTNH', x_BTD)
      kv = self._einsum('kv_einsum', (2, K, D, H), (None, 'kv_heads', 'embed', 'head_dim'),
                        2, (1, 3), (0,))
      k_BSKH, v_BSKH = kv('BSD,CKDH->CBSKH', x_BTD)
    pe = pe_interface.as_encoding(self.spec.pe)
    specs = tuple(pe.param_specs(pe_dims(cfg)).items())
    pe_params = PEParams(specs, cfg.param_dtype, name='pe')() if specs else {}
    q_BTNH = pe.queries(q_BTNH, positions_BT, pe_params)
    k_BSKH = pe.keys(k_BSKH, positions_BT, pe_params)
    self.sow('intermediates', 'q_BTNH', q_BTNH)
    self.sow('intermediates', 'k_BSKH', k_BSKH)
    q_BTNH = nn.with_logical_constraint(q_BTNH, ('batch', 'length', 'act_heads', 'head_dim'))
    q_BTNH = q_BTNH * jnp.asarray(H ** -0.5, q_BTNH.dtype)
    B, T = x_BTD.shape[:2]
    q_BTKGH = q_BTNH.reshape(B, T, K, N // K, H)
    has_bias = pe.bias_kind is not None

    def attend(q, segment_q_BT, positions_q_BT, offset):
      bias = pe.logit_bias(positions_q_BT, positions_BT, pe_params, N) if has_bias else None
      return _attend(q, k_BSKH, v_BSKH, segment_q_BT, segment_ids_BT, offset, self.spec.window,
                     cfg.attn_logit_softcap, bias, self.spec.chunk_attention, positions_q_BT,
                     positions_BT)

    chunk = cfg.attention_chunk
    if cfg.attention_impl == 'chunked' and T > chunk and T % chunk == 0:
      # Bounded memory: one block of queries at a time, never the full T x S scores (the
      # encoding's bias is computed per block from the block's positions).
      def one_block(i):
        q = jax.lax.dynamic_slice_in_dim(q_BTKGH, i * chunk, chunk, axis=1)
        seg = jax.lax.dynamic_slice_in_dim(segment_ids_BT, i * chunk, chunk, axis=1)
        pos = jax.lax.dynamic_slice_in_dim(positions_BT, i * chunk, chunk, axis=1)
        return attend(q, seg, pos, i * chunk)[0]
      out_nBCKGH = jax.lax.map(one_block, jnp.arange(T // chunk))
      out_BTKGH = jnp.moveaxis(out_nBCKGH, 0, 1).reshape(B, T, K, N // K, H)
    else:
      out_BTKGH, probs_BKGTS = attend(q_BTKGH, segment_ids_BT, positions_BT, 0)
      self.sow('intermediates', 'probs_BNTS', probs_BKGTS.reshape(B, N, T, -1))
    out_BTNH = out_BTKGH.reshape(B, T, N, H)
    return self._einsum('attn_vec_einsum', (N, H, D), ('heads', 'head_dim', 'embed'), (0, 1), 2)(
        'BTNH,NHD->BTD', out_BTNH)
