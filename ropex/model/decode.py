"""Cached autoregressive decoding: each attention layer's key/value cache and the attention
over it (Flax's decode convention: the cache lives in the ``cache`` variable collection).

A layer decodes from its cache only while the ``cache`` collection is mutable and already
holds the layer's cache (``model.apply({'params': p, 'cache': c}, ..., mutable=['cache'])``);
otherwise it computes the ordinary self-attention (training, evaluation, ``init``). A first
apply with ``mutable=['cache']`` and no cache creates a zero cache sized by its input
``[B, S_max]`` (:func:`empty_cache` does that abstractly, computing nothing).

Every call appends its ``T`` new keys/values (already positionally encoded with their given
positions) at rows ``index .. index+T-1`` of every batch row, and its queries sit at those same
rows. The mask is the training one (:func:`ropex.model.attention.masked_logits`): causal by row,
same segment id, the sliding window counted in rows; so a batch of left-padded prompts (pad
segment 0, prompt and generated tokens segment 1, positions counting real tokens only) decodes
every row exactly as it would alone. The cache also keeps every row's position, so bias-style
encodings and chunked-local masks read the positions of the keys they attend to.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ropex.model import attention, ops

COLLECTION = 'cache'


class Cached(NamedTuple):
  """One layer's cache after appending this call's keys/values: keys and values of every row,
  the position and segment id of every row, and the row of this call's first query."""
  k_BSKH: jax.Array
  v_BSKH: jax.Array
  positions_BS: jax.Array
  segment_ids_BS: jax.Array
  offset: jax.Array


def extend(module: nn.Module, k_BSKH, v_BSKH, positions_BT, segment_ids_BT) -> Cached | None:
  """In an attention layer: the layer's cache with this call's keys/values appended, or None
  when not decoding (then the caller attends as usual). A call that finds no cache creates an
  empty one sized by its input and returns None."""
  if not module.is_mutable_collection(COLLECTION) or module.is_initializing():
    return None
  B, T, K, H = k_BSKH.shape
  exists = module.has_variable(COLLECTION, 'k_BSKH')
  k = module.variable(COLLECTION, 'k_BSKH', jnp.zeros, (B, T, K, H), k_BSKH.dtype)
  v = module.variable(COLLECTION, 'v_BSKH', jnp.zeros, (B, T, K, H), v_BSKH.dtype)
  pos = module.variable(COLLECTION, 'positions_BS', jnp.zeros, (B, T), jnp.int32)
  seg = module.variable(COLLECTION, 'segment_ids_BS', jnp.zeros, (B, T), jnp.int32)
  index = module.variable(COLLECTION, 'index', lambda: jnp.zeros((), jnp.int32))
  if not exists:
    return None
  offset = index.value
  put = lambda cache, new: jax.lax.dynamic_update_slice_in_dim(
      cache, new.astype(cache.dtype), offset, axis=1)
  k.value, v.value = put(k.value, k_BSKH), put(v.value, v_BSKH)
  pos.value = put(pos.value, positions_BT)
  seg.value = put(seg.value, segment_ids_BT)
  index.value = offset + T
  return Cached(k.value, v.value, pos.value, seg.value, offset)


def attend(q_BTKGH, cached: Cached, segment_ids_BT, opts: attention.Options):
  """``(out_BTKGH, None)``: this call's queries (rows ``cached.offset ..``) over the cache, with
  the training mask, soft-cap and bias (the dense formula; long prompts in blocks of
  ``opts.chunk`` queries, so no ``T x S`` logits beyond a block are formed)."""
  T = q_BTKGH.shape[1]
  block = min(T, opts.chunk)
  n = math.ceil(T / block)
  if n == 1:
    return _rows(q_BTKGH, cached, segment_ids_BT, cached.offset, opts), None
  pad = n * block - T
  q_BPKGH = jnp.pad(q_BTKGH, [(0, 0), (0, pad), (0, 0), (0, 0), (0, 0)])
  segment_q_BP = jnp.pad(segment_ids_BT, [(0, 0), (0, pad)], constant_values=-1)

  def one_block(i):
    q = jax.lax.dynamic_slice_in_dim(q_BPKGH, i * block, block, axis=1)
    seg = jax.lax.dynamic_slice_in_dim(segment_q_BP, i * block, block, axis=1)
    return _rows(q, cached, seg, cached.offset + i * block, opts)

  out_nBCKGH = jax.lax.map(one_block, jnp.arange(n))
  out_BPKGH = jnp.moveaxis(out_nBCKGH, 0, 1).reshape((q_BTKGH.shape[0], n * block)
                                                      + q_BTKGH.shape[2:])
  return out_BPKGH[:, :T], None


def _rows(q_BTKGH, cached: Cached, segment_q_BT, offset, opts: attention.Options):
  logits_BKGTS = attention.masked_logits(q_BTKGH, cached.k_BSKH, segment_q_BT,
                                         cached.segment_ids_BS, offset, opts)
  return ops.softmax_attend(logits_BKGTS, cached.v_BSKH, tuned=False)[0]


def empty_cache(model: nn.Module, params, batch: int, max_length: int):
  """A zero cache for ``batch`` rows of up to ``max_length`` tokens (shapes from an abstract
  apply; nothing is computed)."""
  tokens = jax.ShapeDtypeStruct((batch, max_length), jnp.int32)

  def shapes(p, t):
    _, variables = model.apply({'params': p}, t, mutable=[COLLECTION])
    return variables[COLLECTION]
  abstract = jax.eval_shape(shapes, params, tokens)
  return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), abstract)
