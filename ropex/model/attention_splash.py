"""The Pallas TPU splash-attention kernel behind ``model.attention_impl='splash'``.

``jax.experimental.pallas.ops.tpu.splash_attention`` computes one sequence: ``q [N, T, H]``,
``k, v [K, S, H]`` (MHA / GQA) or ``[S, H]`` (MQA), segment ids, a static block-sparse mask
(here causal, or causal within a sliding window), and a logit soft-cap. The batch is vmapped;
under a mesh the call runs inside ``shard_map`` over the batch's mesh axes. The sequence is
padded to a multiple of 128 (the kernel's lane width); padded keys get segment id -1, which no
real query has, and padded queries are dropped. Off TPU the kernel runs in interpret mode.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

from ropex.model import platform

_LANES = 128


def block_size(length: int) -> int:
  """The largest of 512, 256, 128 that divides ``length`` (a multiple of 128)."""
  return next(b for b in (512, 256, 128) if length % b == 0)


def make_kernel(num_heads: int, num_kv_heads: int, length: int, window: int, softcap: float,
                interpret: bool):
  """The kernel for one sequence of ``length`` (a multiple of 128) positions."""
  shape = (length, length)
  one = (masks.LocalMask(shape, window_size=(window - 1, 0), offset=0) if window
         else masks.CausalMask(shape))
  block = block_size(length)
  sizes = kernel.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  make = (kernel.make_splash_mqa_single_device if num_kv_heads == 1
          else kernel.make_splash_mha_single_device)
  return make(masks.MultiHeadMask([one] * num_heads), block_sizes=sizes,
              attn_logits_soft_cap=softcap or None, interpret=interpret)


def attend(q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts):
  """``out_BTKGH`` of causal attention with ``opts`` (an :class:`attention.Options`)."""
  B, T, K, G, H = q_BTKGH.shape
  N, P = K * G, math.ceil(T / _LANES) * _LANES   # P: padded length
  pad = lambda x, value=0: jnp.pad(x, [(0, 0), (0, P - T)] + [(0, 0)] * (x.ndim - 2),
                                   constant_values=value)
  q_BNPH = jnp.moveaxis(pad(q_BTKGH).reshape(B, P, N, H), 2, 1)
  k_BKPH = jnp.moveaxis(pad(k_BSKH), 2, 1)
  v_BKPH = jnp.moveaxis(pad(v_BSKH), 2, 1)
  segment_BP = pad(segment_ids_BT.astype(jnp.int32), -1)
  splash = make_kernel(N, K, P, opts.window, opts.softcap,
                       interpret=platform.current() != 'tpu')

  def per_batch(q_BNPH, k_BKPH, v_BKPH, segment_BP):
    def one(q_NPH, k_KPH, v_KPH, segment_P):
      if K == 1:
        k_KPH, v_KPH = k_KPH[0], v_KPH[0]
      return splash(q_NPH, k_KPH, v_KPH, segment_ids=kernel.SegmentIds(segment_P, segment_P))
    return jax.vmap(one)(q_BNPH, k_BKPH, v_BKPH, segment_BP)

  out_BNPH = sharded_over_batch(per_batch, 4)(q_BNPH, k_BKPH, v_BKPH, segment_BP)
  return jnp.moveaxis(out_BNPH, 1, 2)[:, :T].reshape(B, T, K, G, H)


def sharded_over_batch(fn, num_args: int):
  """``fn`` under ``shard_map`` over the mesh axes of the logical ``batch`` axis when a mesh is
  in context (a Pallas kernel is opaque to the SPMD partitioner); ``fn`` itself otherwise."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return fn
  spec = jax.sharding.PartitionSpec(nn.logical_to_mesh_axes(('batch',))[0])
  return jax.shard_map(fn, mesh=mesh, in_specs=(spec,) * num_args, out_specs=spec,
                       check_vma=False)
