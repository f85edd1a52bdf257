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

from ropex.model import attention, ops, pe_interface, platform
from ropex.model.config import LayerSpec, ModelConfig

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
  tuned: bool = False   # CPU-tuned backward pass (ropex.model.platform.cpu_tunings)

  @nn.compact
  def __call__(self, eqn: str, x):
    init = _fan_in(self.in_axis, self.out_axis, self.batch_axis)
    w = _param(self, 'w', init, self.axes, self.shape, self.param_dtype)
    return ops.einsum(eqn, x.astype(self.dtype), w.astype(self.dtype), tuned=self.tuned)


class PEParams(nn.Module):
  """The learned parameters an encoding declares (``ParamSpec``s), with their logical axes;
  returns them as a dict for the encoding's hooks."""
  specs: tuple      # ((name, ParamSpec), ...)
  param_dtype: str = 'float32'

  @nn.compact
  def __call__(self):
    return {name: _param(self, name, spec.init, spec.axes, spec.shape, self.param_dtype)
            for name, spec in self.specs}


def logits_dtype(cfg: ModelConfig) -> str:
  """The dtype of the attention scores ``q.k`` (``model.attention_logits_dtype``)."""
  return cfg.dtype if cfg.attention_logits_dtype == 'compute' else 'float32'


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

  def decode(self, x_BTD, tuned: bool = False):
    """Logits [B, T, V] in float32 whatever the compute dtype (float32 accumulation)."""
    return ops.einsum('BTD,VD->BTV', x_BTD, self.input_embedding.astype(self.dtype),
                      jnp.float32, tuned=tuned)


class FeedForward(nn.Module):
  """GeGLU: ``linear(gelu(x W0) * (x W1))`` with ``gating_einsum`` of shape [2, D, F]."""
  embed_dim: int
  hidden_dim: int
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  tuned: bool = False   # CPU-tuned backward passes (ropex.model.platform.cpu_tunings)

  @nn.compact
  def __call__(self, x_BTD):
    gating = _param(self, 'gating_einsum', _fan_in(1, 2, (0,)), (None, 'embed', 'mlp'),
                    (2, self.embed_dim, self.hidden_dim), self.param_dtype).astype(self.dtype)
    linear = _param(self, 'linear', _fan_in(0, 1), ('mlp', 'embed'),
                    (self.hidden_dim, self.embed_dim), self.param_dtype).astype(self.dtype)
    gate_BTF = ops.dense(x_BTD, gating[0], tuned=self.tuned)
    up_BTF = ops.dense(x_BTD, gating[1], tuned=self.tuned)
    h_BTF = nn.gelu(gate_BTF) * up_BTF
    h_BTF = nn.with_logical_constraint(h_BTF, ('batch', 'length', 'act_mlp'))
    return ops.dense(h_BTF, linear, tuned=self.tuned)


def _positions_at(positions_BT, rows_R):
  """Positions of the given row indices (rows past the end, chunked padding, clamp to it)."""
  return jnp.take(positions_BT, jnp.minimum(rows_R, positions_BT.shape[1] - 1), axis=1)


def _bias_fn(pe, pe_params, positions_BT, N: int, K: int):
  """The encoding's logit bias as :data:`ropex.model.attention.BiasFn`: computed from the
  positions of the rows asked for (so chunked attention builds it one block at a time)."""
  def bias(t_T, s_S):
    bias_bNTS = pe.logit_bias(_positions_at(positions_BT, t_T), _positions_at(positions_BT, s_S),
                              pe_params, N)
    b, _, T, S = bias_bNTS.shape
    return bias_bNTS.astype(jnp.float32).reshape(b, K, N // K, T, S)
  return bias


def _local_chunk_fn(chunk: int, positions_BT):
  """Chunked-local attention (Llama 4's ``attention_chunk_size``): a query sees only keys in
  its block of ``chunk`` positions, ``pos_q // chunk == pos_k // chunk``; positions are the
  given ones, so packed documents are chunked from their own start. None when ``chunk`` is 0."""
  if not chunk:
    return None

  def mask(t_T, s_S):
    q_BT = _positions_at(positions_BT, t_T) // chunk
    k_BS = _positions_at(positions_BT, s_S) // chunk
    return (q_BT[:, :, None] == k_BS[:, None, :])[:, None, None]
  return mask


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
                  tuned=platform.cpu_tunings(cfg.remat), name=name)

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
    opts = attention.Options(
        window=self.spec.window, softcap=cfg.attn_logit_softcap, chunk=cfg.attention_chunk,
        tuned=platform.cpu_tunings(cfg.remat),
        bias_fn=_bias_fn(pe, pe_params, positions_BT, N, K) if pe.bias_kind else None,
        mask_fn=_local_chunk_fn(self.spec.chunk_attention, positions_BT),
        logits_dtype=logits_dtype(cfg))
    out_BTKGH, probs_BKGTS = attention.attend(cfg.attention_impl, q_BTKGH, k_BSKH, v_BSKH,
                                              segment_ids_BT, opts)
    if probs_BKGTS is not None:
      self.sow('intermediates', 'probs_BNTS', probs_BKGTS.reshape(B, N, T, -1))
    out_BTNH = out_BTKGH.reshape(B, T, N, H)
    return self._einsum('attn_vec_einsum', (N, H, D), ('heads', 'head_dim', 'embed'), (0, 1), 2)(
        'BTNH,NHD->BTD', out_BTNH)
