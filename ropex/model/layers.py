"""Decoder building blocks in Flax linen (Gemma v1 by default; the block fields of
:class:`ropex.model.config.ModelConfig` switch on the released families' features).

Parameter names and shapes follow the official Gemma Flax checkpoints
(``embedder/input_embedding``, ``attn/q_einsum/w``, ``attn/kv_einsum/w`` or
``attn/qkv_einsum/w``, ``attn/attn_vec_einsum/w``, ``mlp/gating_einsum``, ``mlp/linear``,
``*_norm/scale``; Gemma 2/3: ``post_attention_norm/scale``, ``post_ffw_norm/scale``,
``attn/_query_norm/scale``, ``attn/_key_norm/scale``). Parameters with no official Flax name:

* ``attn/{q,kv,qkv,k}_einsum/b`` (``qkv_bias``): the biases of the projections, shaped like the
  einsum's output heads (``[N, H]``, ``[2, K, H]``, ``[3, N, H]``); no output bias.
* ``attn/k_einsum/w`` ``[K, D, H]``: a ``k_eq_v`` layer's one projection (keys are the values).
* ``embedder/output_embedding`` ``[V, D]`` (``tie_word_embeddings=False``): the output head.
* ``layer_i/layer_scalar`` ``[1]`` (``layer_scalar``): multiplies the block's output.
* Per-layer input embeddings (``hidden_size_per_layer_input`` = P > 0, L layers;
  :mod:`ropex.model.per_layer_input`): ``per_layer_inputs/input_embedding`` ``[V_ple, L*P]``,
  ``per_layer_inputs/model_projection`` ``[D, L*P]``, ``per_layer_inputs/projection_norm/scale``
  ``[P]``; in each layer ``per_layer_input/gate`` ``[D, P]``, ``per_layer_input/projection``
  ``[P, D]``, ``per_layer_input/post_norm/scale`` ``[D]``.

Every parameter carries logical axis names for sharding.

Shape suffixes: B batch, T query length, S key length, D embed, N query heads, K kv heads,
G query heads per kv head, H head dim, F mlp hidden, V vocab, C rotary chunks.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ropex.model import attention, decode, ops, pe_interface, platform
from ropex.model.config import LayerSpec, ModelConfig

def _fan_in(in_axis, out_axis, batch_axis=()):
  return nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal',
                                          in_axis=in_axis, out_axis=out_axis,
                                          batch_axis=batch_axis)


def _param(module, name, init, axes, shape, param_dtype):
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, param_dtype)


class RMSNorm(nn.Module):
  """RMSNorm over the last axis, statistics in float32: Gemma's ``x * (1 + scale)`` (scale
  init 0, ``unit_offset``) or ``x * scale`` (init 1: Llama, Qwen, Gemma 4); ``with_scale=False``
  has no parameter (Gemma 4's value norm)."""
  param_dtype: str = 'float32'
  unit_offset: bool = True
  eps: float = 1e-6
  with_scale: bool = True

  @nn.compact
  def __call__(self, x_BTD):
    x = x_BTD.astype(jnp.float32)
    normed = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
    if not self.with_scale:
      return normed.astype(x_BTD.dtype)
    init = nn.initializers.zeros_init() if self.unit_offset else nn.initializers.ones_init()
    scale = _param(self, 'scale', init, ('norm',), (x_BTD.shape[-1],), self.param_dtype)
    if self.unit_offset:
      return (normed * (1.0 + scale.astype(jnp.float32))).astype(x_BTD.dtype)
    return (normed * scale.astype(jnp.float32)).astype(x_BTD.dtype)


def norm(cfg: ModelConfig, name: str | None = None, with_scale: bool = True) -> RMSNorm:
  """The model's RMSNorm (its ``norm_unit_offset`` and ``rms_norm_eps``)."""
  return RMSNorm(cfg.param_dtype, cfg.norm_unit_offset, cfg.rms_norm_eps, with_scale, name=name)


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
  bias: bool = False    # a bias ``b`` over the output axes of ``w`` (init 0)

  @nn.compact
  def __call__(self, eqn: str, x):
    init = _fan_in(self.in_axis, self.out_axis, self.batch_axis)
    w = _param(self, 'w', init, self.axes, self.shape, self.param_dtype)
    y = ops.einsum(eqn, x.astype(self.dtype), w.astype(self.dtype), tuned=self.tuned)
    if not self.bias:
      return y
    inputs, out_sub = eqn.split('->')
    w_sub = inputs.split(',')[1]
    kept = [i for i, c in enumerate(w_sub) if c in out_sub]   # w's axes that reach the output
    b = _param(self, 'b', nn.initializers.zeros_init(), tuple(self.axes[i] for i in kept),
               tuple(self.shape[i] for i in kept), self.param_dtype).astype(self.dtype)
    b_sub = ''.join(w_sub[i] for i in kept)
    return y + jnp.expand_dims(b, [i for i, c in enumerate(out_sub) if c not in b_sub])


class PEParams(nn.Module):
  """The learned parameters an encoding declares (``ParamSpec`` objects), with their logical axes;
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


def pe_dims(cfg: ModelConfig, spec: LayerSpec | None = None) -> pe_interface.Dims:
  """The attention shapes of a layer (``spec``; default: the model's)."""
  K, H = cfg.attention_shape(spec) if spec is not None else (cfg.num_kv_heads, cfg.head_dim)
  return pe_interface.Dims(cfg.num_heads, K, H, cfg.embed_dim)


class Embedder(nn.Module):
  """Token embedding: ``encode`` looks up (times sqrt(embed_dim) rounded to the compute dtype
  if ``scale``), ``decode`` gives logits with the same table (``tied``) or with its own
  ``output_embedding``."""
  vocab_size: int
  embed_dim: int
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  scale: bool = True
  tied: bool = True

  def setup(self):
    init = nn.initializers.normal(stddev=self.embed_dim ** -0.5)
    self.input_embedding = self.param(
        'input_embedding', nn.with_logical_partitioning(init, ('vocab', 'embed')),
        (self.vocab_size, self.embed_dim), self.param_dtype)
    if not self.tied:
      self.output_embedding = self.param(
          'output_embedding', nn.with_logical_partitioning(init, ('vocab', 'embed')),
          (self.vocab_size, self.embed_dim), self.param_dtype)

  def encode(self, tokens_BT):
    x_BTD = jnp.take(self.input_embedding, tokens_BT, axis=0).astype(self.dtype)
    if not self.scale:
      return x_BTD
    return x_BTD * jnp.sqrt(jnp.asarray(self.embed_dim, jnp.float32)).astype(self.dtype)

  def table(self):
    """The output table [V, D]."""
    return self.input_embedding if self.tied else self.output_embedding

  def decode(self, x_BTD, tuned: bool = False):
    """Logits [B, T, V] in float32 whatever the compute dtype (float32 accumulation)."""
    return ops.einsum('BTD,VD->BTV', x_BTD, self.table().astype(self.dtype),
                      jnp.float32, tuned=tuned)


_ACTIVATIONS = {'gelu_pytorch_tanh': nn.gelu, 'silu': nn.silu}   # nn.gelu: the tanh form


class FeedForward(nn.Module):
  """Gated MLP: ``linear(act(x W0) * (x W1))`` with ``gating_einsum`` of shape [2, D, F];
  ``act`` GeLU (tanh form: GeGLU, Gemma) or SiLU (SwiGLU: Llama, Qwen)."""
  embed_dim: int
  hidden_dim: int
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  tuned: bool = False   # CPU-tuned backward passes (ropex.model.platform.cpu_tunings)
  activation: str = 'gelu_pytorch_tanh'

  @nn.compact
  def __call__(self, x_BTD):
    gating = _param(self, 'gating_einsum', _fan_in(1, 2, (0,)), (None, 'embed', 'mlp'),
                    (2, self.embed_dim, self.hidden_dim), self.param_dtype).astype(self.dtype)
    linear = _param(self, 'linear', _fan_in(0, 1), ('mlp', 'embed'),
                    (self.hidden_dim, self.embed_dim), self.param_dtype).astype(self.dtype)
    gate_BTF = ops.dense(x_BTD, gating[0], tuned=self.tuned)
    up_BTF = ops.dense(x_BTD, gating[1], tuned=self.tuned)
    h_BTF = _ACTIVATIONS[self.activation](gate_BTF) * up_BTF
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
  :class:`ropex.model.pe_interface.Encoding`, never by name. Block fields add q/k/v biases,
  q/k norms (before the encoding, as transformers), a value norm, keys-as-values and K/V
  shared from an earlier layer. Returns the output and the (encoded) keys and values."""
  cfg: ModelConfig
  spec: LayerSpec

  def _einsum(self, name, shape, axes, in_axis, out_axis, batch_axis=()):
    cfg = self.cfg
    return Einsum(shape=shape, axes=axes, in_axis=in_axis, out_axis=out_axis,
                  batch_axis=batch_axis, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                  tuned=platform.cpu_tunings(cfg.remat), bias=cfg.qkv_bias and
                  name != 'attn_vec_einsum', name=name)

  def _project(self, x_BTD, own_kv: bool):
    """(q_BTNH, k_BSKH, v_BSKH) straight from the projections (k, v None if not ``own_kv``)."""
    cfg, spec = self.cfg, self.spec
    N, D = cfg.num_heads, cfg.embed_dim
    K, H = cfg.attention_shape(spec)
    if N == K and own_kv and not spec.k_eq_v:
      qkv = self._einsum('qkv_einsum', (3, N, D, H), (None, 'heads', 'embed', 'head_dim'),
                         2, (1, 3), (0,))
      return tuple(qkv('BTD,CNDH->CBTNH', x_BTD))
    q_BTNH = self._einsum('q_einsum', (N, D, H), ('heads', 'embed', 'head_dim'), 1, (0, 2))(
        'BTD,NDH->BTNH', x_BTD)
    if not own_kv:
      return q_BTNH, None, None
    if spec.k_eq_v:
      k_BSKH = self._einsum('k_einsum', (K, D, H), ('kv_heads', 'embed', 'head_dim'), 1,
                            (0, 2))('BSD,KDH->BSKH', x_BTD)
      return q_BTNH, k_BSKH, k_BSKH
    kv = self._einsum('kv_einsum', (2, K, D, H), (None, 'kv_heads', 'embed', 'head_dim'),
                      2, (1, 3), (0,))
    k_BSKH, v_BSKH = kv('BSD,CKDH->CBSKH', x_BTD)
    return q_BTNH, k_BSKH, v_BSKH

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, shared_kv=None):
    cfg = self.cfg
    N, D = cfg.num_heads, cfg.embed_dim
    K, H = cfg.attention_shape(self.spec)
    q_BTNH, k_BSKH, v_BSKH = self._project(x_BTD, shared_kv is None)
    if cfg.qk_norm:
      q_BTNH = norm(cfg, '_query_norm')(q_BTNH)
    pe = pe_interface.as_encoding(self.spec.pe)
    specs = tuple(pe.param_specs(pe_dims(cfg, self.spec)).items())
    pe_params = PEParams(specs, cfg.param_dtype, name='pe')() if specs else {}
    q_BTNH = pe.queries(q_BTNH, positions_BT, pe_params)
    if shared_kv is None:
      if cfg.qk_norm:
        k_BSKH = norm(cfg, '_key_norm')(k_BSKH)
      if cfg.v_norm:
        v_BSKH = norm(cfg, with_scale=False)(v_BSKH)
      k_BSKH = pe.keys(k_BSKH, positions_BT, pe_params)
    else:
      k_BSKH, v_BSKH = shared_kv
    self.sow('intermediates', 'q_BTNH', q_BTNH)
    self.sow('intermediates', 'k_BSKH', k_BSKH)
    cached = decode.extend(self, k_BSKH, v_BSKH, positions_BT, segment_ids_BT)
    if cached is not None:  # decoding: attend over every cached row (bias/mask: its position)
      positions_BT = cached.positions_BS
    q_BTNH = nn.with_logical_constraint(q_BTNH, ('batch', 'length', 'act_heads', 'head_dim'))
    q_BTNH = q_BTNH * jnp.asarray((cfg.query_pre_attn_scalar or H) ** -0.5, q_BTNH.dtype)
    B, T = x_BTD.shape[:2]
    q_BTKGH = q_BTNH.reshape(B, T, K, N // K, H)
    opts = attention.Options(
        window=self.spec.window, softcap=cfg.attn_logit_softcap, chunk=cfg.attention_chunk,
        tuned=platform.cpu_tunings(cfg.remat),
        bias_fn=_bias_fn(pe, pe_params, positions_BT, N, K) if pe.bias_kind else None,
        mask_fn=_local_chunk_fn(self.spec.chunk_attention, positions_BT),
        logits_dtype=logits_dtype(cfg))
    out_BTKGH, probs_BKGTS = (
        attention.attend(cfg.attention_impl, q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts)
        if cached is None else decode.attend(q_BTKGH, cached, segment_ids_BT, opts))
    if probs_BKGTS is not None:
      self.sow('intermediates', 'probs_BNTS', probs_BKGTS.reshape(B, N, T, -1))
    out_BTNH = out_BTKGH.reshape(B, T, N, H)
    out_BTD = self._einsum('attn_vec_einsum', (N, H, D), ('heads', 'head_dim', 'embed'),
                           (0, 1), 2)('BTNH,NHD->BTD', out_BTNH)
    return out_BTD, (k_BSKH, v_BSKH)
