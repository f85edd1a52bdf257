"""Attention implementations, chosen by ``model.attention_impl``; all compute the same thing.

Every implementation takes queries (already positionally encoded and scaled by 1/sqrt(H)),
keys, values and segment ids, and computes causal, same-document attention, optionally within a
sliding window, with an optional logit soft-cap ``tanh(logits / cap) * cap`` and an optional
additive logit bias (``bias_fn``, for bias-style positional encodings). Values and gradients
agree with ``xla`` up to float summation order (``tests/model/test_model_attention.py``).

===========  ===================================================================================
``xla``      the plain reference: logits ``[B, K, G, T, S]`` (``q.k`` rounded to
             ``model.attention_logits_dtype``, the rest float32), ``jax.nn.softmax``, einsum.
``dense``    the same dense scores with ``ops.softmax_attend``, whose hand-written backward pass
             is used on CPU (``ropex.model.platform.cpu_tunings``); elsewhere it is ``xla``.
``chunked``  ``dense`` over blocks of ``model.attention_chunk`` queries (``lax.map``), never the
             full T x S scores; T is padded up to a multiple of the chunk (padded queries
             attend to nothing real and are dropped), so it never falls back to dense.
``splash``   the Pallas TPU splash-attention kernel (causal / local mask, segment ids,
             soft-cap, MHA / GQA / MQA); T is padded to a multiple of 128. Off TPU it runs in
             Pallas interpret mode (slow; for tests). Cannot express a logit bias.
``cudnn``    ``jax.nn.dot_product_attention(implementation='cudnn')`` (GPU; bfloat16/float16):
             causal + sliding window natively, segment ids as a boolean mask, a logit bias as
             its ``bias``. Cannot express the logit soft-cap.
``auto``     :func:`choose_attention`: TPU ``splash``; GPU ``cudnn`` where cuDNN flash attention
             takes the layer's dtype and head dim on that GPU, else as CPU; CPU ``dense`` up to
             ``attention_chunk`` positions, ``chunked`` beyond.
===========  ===================================================================================

``auto`` on a GPU (the limits ``jax.nn.dot_product_attention(implementation='cudnn')`` enforces in
``jax/_src/cudnn/fused_attention_stablehlo.py``, jax 0.10: ``check_layout`` takes float16 / bfloat16
(or fp8) only; ``check_is_flash_attention`` takes a head dim that is a multiple of 8 and at most
256 on compute capability >= 9.0 (Hopper and later), at most 128 before; cuDNN's fused flash
attention needs Ampere (8.0) or later, which JAX does not check itself):

=================  ==============================  =================================
dtype              head dim                        GPU compute capability -> impl
=================  ==============================  =================================
float32            any                             any -> dense / chunked
bfloat16, float16  multiple of 8, <= 128           >= 8.0 -> cudnn; < 8.0 -> dense
bfloat16, float16  multiple of 8, 129..256         >= 9.0 -> cudnn; < 9.0 -> dense
bfloat16, float16  not a multiple of 8, or > 256   any -> dense / chunked
=================  ==============================  =================================

An unknown compute capability (tracing for a GPU on a host without one) counts as Ampere (8.x).

A kernel that cannot express a layer's attention (``splash`` with a bias, ``cudnn`` with a
soft-cap) falls back to ``dense`` / ``chunked`` with a log line naming the reason, never
silently. Only ``xla`` and ``dense`` return the probabilities (analysis sows them).
"""

from __future__ import annotations

import logging
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ropex.errors import ConfigError
from ropex.model import ops, platform

IMPLS = ('auto', 'xla', 'dense', 'chunked', 'splash', 'cudnn')
NEG_INF = -2.3819763e38  # finite, so fully masked rows give a uniform softmax, not NaN
SPLASH_BLOCK = 128       # splash needs sequence blocks that are multiples of the 128 lanes

# bias_fn(t_T, s_S) -> float32 logit bias broadcastable to [B, K, G, T, S], given the row
# indices of the queries (t_T) and keys (s_S).
BiasFn = Callable[[jax.Array, jax.Array], jax.Array]
# mask_fn(t_T, s_S) -> boolean broadcastable to [B, 1, 1, T, S]: an extra restriction of the
# causal mask (chunked-local attention, which depends on the tokens' positions).
MaskFn = Callable[[jax.Array, jax.Array], jax.Array]

_log = logging.getLogger(__name__)
_logged: set[str] = set()


class Options(NamedTuple):
  """What a layer asks of its attention, besides the tensors."""
  window: int = 0              # sliding window (0: full causal)
  softcap: float = 0.0         # attention logit soft-cap (0: none)
  chunk: int = 1024            # query block of ``chunked`` (and ``auto``'s CPU threshold)
  tuned: bool = False          # CPU-tuned backward passes of ``ops``
  bias_fn: BiasFn | None = None
  mask_fn: MaskFn | None = None
  logits_dtype: str = 'float32'  # dtype of q.k (model.attention_logits_dtype resolved)


def _log_once(message: str) -> None:
  if message not in _logged:
    _logged.add(message)
    _log.warning(message)


CUDNN_DTYPES = ('bfloat16', 'float16')
CUDNN_MIN_CAPABILITY = (8, 0)      # Ampere: cuDNN's fused flash attention
CUDNN_HOPPER = (9, 0)              # head dim up to 256 from here, up to 128 before


def choose_attention(backend: str, dtype, head_dim: int,
                     gpu_compute_capability: tuple[int, int] | None) -> str:
  """``auto``'s kernel: ``'splash'``, ``'cudnn'`` or ``'dense'`` (dense, or chunked beyond
  ``attention_chunk``) for a layer of ``dtype`` and ``head_dim`` on ``backend`` (cpu / gpu /
  tpu); on a GPU, cuDNN only where it accepts the dtype and head dim (table above)."""
  if backend == 'tpu':
    return 'splash'
  if backend != 'gpu' or str(jnp.dtype(dtype)) not in CUDNN_DTYPES or head_dim % 8:
    return 'dense'
  capability = tuple(gpu_compute_capability or (0, 0))
  if capability < CUDNN_MIN_CAPABILITY and gpu_compute_capability is not None:
    return 'dense'
  max_head_dim = 256 if capability >= CUDNN_HOPPER else 128
  return 'cudnn' if head_dim <= max_head_dim else 'dense'


def resolve(impl: str, seq_len: int, opts: Options, on: str | None = None, dtype=None,
            head_dim: int | None = None,
            gpu_compute_capability: tuple[int, int] | None = None) -> str:
  """The implementation that runs for ``impl`` on platform ``on`` (default: the current one,
  with this host's GPU generation) for a layer of ``dtype`` and ``head_dim`` (both needed by
  ``auto``)."""
  if on is None:
    on, gpu_compute_capability = platform.current(), platform.gpu_compute_capability()
  if impl not in IMPLS:
    raise ValueError(f'attention_impl {impl!r} is not one of {IMPLS}')
  if impl == 'auto':
    if dtype is None or head_dim is None:
      raise ValueError('attention_impl auto needs the layer\'s dtype and head_dim')
    impl = choose_attention(on, dtype, head_dim, gpu_compute_capability)
    if impl == 'dense' and seq_len > opts.chunk:
      impl = 'chunked'
  reason = None
  if impl == 'splash' and opts.bias_fn is not None:
    reason = 'the splash kernel cannot add a positional logit bias'
  if impl == 'cudnn' and opts.softcap:
    reason = 'cuDNN attention has no logit soft-cap (model.attn_logit_softcap)'
  if impl in ('splash', 'cudnn') and opts.mask_fn is not None:
    reason = (f'the {impl} kernel cannot express chunked-local attention '
              '(model.layer_types.<type>.chunk_attention)')
  if reason:
    fallback = 'dense' if seq_len <= opts.chunk else 'chunked'
    _log_once(f'attention_impl={impl}: {reason}; this attention runs {fallback} instead')
    impl = fallback
  check_platform(impl, on)
  return impl


def check_platform(impl: str, on: str | None = None) -> None:
  """ConfigError when ``impl`` cannot run on platform ``on`` (default: the current one):
  ``cudnn`` needs a GPU (cuDNN ships with JAX's CUDA wheels)."""
  on = on or platform.current()
  if impl == 'cudnn' and on != 'gpu':
    raise ConfigError(f"model.attention_impl='cudnn' needs a GPU with cuDNN, and this runs on "
                      f"{on}; allowed here: auto, xla, dense, chunked")


def attend(impl: str, q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts: Options):
  """``(out_BTKGH, probs_BKGTS or None)`` of self-attention (T == S) with ``impl``."""
  impl = resolve(impl, q_BTKGH.shape[1], opts, dtype=q_BTKGH.dtype, head_dim=q_BTKGH.shape[-1])
  return _IMPLS[impl](q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts)


# --- the one place logits, bias and mask are formed (xla, dense, chunked) ----------------------

def allowed(t_T, s_S, segment_q_BT, segment_k_BS, window: int):
  """Boolean [B, 1, 1, T, S]: causal, same document, within the window (if ``window`` > 0).
  ``t_T`` / ``s_S`` are the row indices of the queries / keys."""
  ok_TS = s_S[None, :] <= t_T[:, None]
  if window:
    ok_TS &= t_T[:, None] - s_S[None, :] < window
  same_BTS = segment_q_BT[:, :, None] == segment_k_BS[:, None, :]
  return (ok_TS[None] & same_BTS)[:, None, None]


def masked_logits(q_BTKGH, k_BSKH, segment_q_BT, segment_k_BS, offset: int, opts: Options):
  """Float32 logits [B, K, G, T, S] (soft-capped, biased, masked); query ``t`` sits at row
  ``offset + t``, key ``s`` at row ``s``. The product ``q.k`` itself is rounded to
  ``opts.logits_dtype`` (float32 accumulation either way) before everything else runs in
  float32: with bfloat16 it is Gemma's reference (bfloat16 scores, float32 softmax), and XLA
  keeps the [T, S] scores and their gradient in bfloat16, half the memory of the dense path."""
  logits_BKGTS = ops.einsum('BTKGH,BSKH->BKGTS', q_BTKGH, k_BSKH, opts.logits_dtype,
                            tuned=opts.tuned).astype(jnp.float32)
  t_T = offset + jnp.arange(q_BTKGH.shape[1])
  s_S = jnp.arange(k_BSKH.shape[1])
  if opts.bias_fn is not None:  # the encoding's logit bias, before the soft-cap
    logits_BKGTS = logits_BKGTS + opts.bias_fn(t_T, s_S).astype(jnp.float32)
  if opts.softcap:
    logits_BKGTS = jnp.tanh(logits_BKGTS / opts.softcap) * opts.softcap
  mask = allowed(t_T, s_S, segment_q_BT, segment_k_BS, opts.window)
  if opts.mask_fn is not None:
    mask = mask & opts.mask_fn(t_T, s_S)
  return jnp.where(mask, logits_BKGTS, NEG_INF)


# --- implementations -----------------------------------------------------------------------------

def xla(q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts: Options):
  """The plain reference (no hand-written gradients, whatever ``opts.tuned`` says)."""
  opts = opts._replace(tuned=False)
  logits_BKGTS = masked_logits(q_BTKGH, k_BSKH, segment_ids_BT, segment_ids_BT, 0, opts)
  probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1)
  out_BTKGH = jnp.einsum('BKGTS,BSKH->BTKGH', probs_BKGTS.astype(v_BSKH.dtype), v_BSKH,
                         preferred_element_type=jnp.float32).astype(v_BSKH.dtype)
  return out_BTKGH, probs_BKGTS


def _dense_rows(q_BTKGH, k_BSKH, v_BSKH, segment_q_BT, segment_k_BS, offset, opts: Options):
  logits_BKGTS = masked_logits(q_BTKGH, k_BSKH, segment_q_BT, segment_k_BS, offset, opts)
  return ops.softmax_attend(logits_BKGTS, v_BSKH, tuned=opts.tuned)


def dense(q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts: Options):
  return _dense_rows(q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, segment_ids_BT, 0, opts)


def _pad_to(x, size: int, axis: int, value=0):
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


def chunked(q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts: Options):
  """Blocks of ``opts.chunk`` queries against all keys; queries padded to a multiple of it."""
  B, T, K, G, H = q_BTKGH.shape
  chunk = opts.chunk
  n = math.ceil(T / chunk)
  q_BPKGH = _pad_to(q_BTKGH, n * chunk, 1)            # P: padded query positions
  segment_q_BP = _pad_to(segment_ids_BT, n * chunk, 1, -1)  # -1: attends to no real key

  def one_block(i):
    q = jax.lax.dynamic_slice_in_dim(q_BPKGH, i * chunk, chunk, axis=1)
    seg = jax.lax.dynamic_slice_in_dim(segment_q_BP, i * chunk, chunk, axis=1)
    return _dense_rows(q, k_BSKH, v_BSKH, seg, segment_ids_BT, i * chunk, opts)[0]

  out_nBCKGH = jax.lax.map(one_block, jnp.arange(n))
  out_BPKGH = jnp.moveaxis(out_nBCKGH, 0, 1).reshape(B, n * chunk, K, G, H)
  return out_BPKGH[:, :T], None


def splash(q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts: Options):
  """Pallas splash attention, vmapped over the batch (under a mesh: inside ``shard_map`` over
  the batch axes; heads are not split inside the kernel call)."""
  from ropex.model import attention_splash  # pylint: disable=g-import-not-at-top
  return attention_splash.attend(q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts), None


def cudnn(q_BTKGH, k_BSKH, v_BSKH, segment_ids_BT, opts: Options, implementation='cudnn'):
  """``jax.nn.dot_product_attention``; ``implementation='xla'`` runs the same arguments
  anywhere (the CPU tests check the argument construction that way)."""
  B, T, K, G, H = q_BTKGH.shape
  same_B1TS = (segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :])[:, None]
  bias_BNTS = None
  if opts.bias_fn is not None:
    t_T = jnp.arange(T)
    bias_BKGTS = jnp.broadcast_to(opts.bias_fn(t_T, t_T).astype(jnp.float32),
                                  (B, K, G, T, T))
    bias_BNTS = bias_BKGTS.reshape(B, K * G, T, T).astype(q_BTKGH.dtype)
  out_BTNH = jax.nn.dot_product_attention(
      q_BTKGH.reshape(B, T, K * G, H), k_BSKH, v_BSKH, bias=bias_BNTS, mask=same_B1TS,
      scale=1.0, is_causal=True,
      local_window_size=(opts.window - 1, 0) if opts.window else None,
      implementation=implementation)
  return out_BTNH.reshape(B, T, K, G, H), None


_IMPLS = {'xla': xla, 'dense': dense, 'chunked': chunked, 'splash': splash, 'cudnn': cudnn}

