"""Matmul and attention-softmax ops of the decoder, with hand-written backward passes on CPU.

Every op takes ``tuned``: ``True`` (what :func:`ropex.model.platform.cpu_tunings` says on CPU)
selects a hand-written backward pass, ``False`` the plain ``jnp`` expression, which XLA fuses
freely and remat policies see into (a policy cannot see the dots inside a ``custom_vjp``). Both
have the same values and gradients up to float summation order
(``tests/model/test_model_ops.py`` checks every backward pass against ``jax.grad`` of the plain
expression). The tunings exist for XLA:CPU, measured with ``python -m ropex.bench``:

* :func:`dense` ``x[..., K] @ w[K, N]``. Its backward pass materialises the incoming cotangent
  once (``optimization_barrier``) as a row-major ``[M, N]`` matrix before the two matmuls.
  Without that, XLA:CPU fuses the elementwise producer of the cotangent (the GeGLU derivative)
  into the weight-gradient matmul's operand and writes it in a transposed layout, which took
  longer than all the MLP matmuls together.
* :func:`einsum` is ``jnp.einsum`` for float32 operands. For bfloat16 / float16 operands every
  matmul, forward and backward, accumulates in float32 (``preferred_element_type``) and the
  result is rounded once; that is both more accurate and, on CPUs with AVX512-BF16, the
  native bf16 dot (about twice the float32 peak) instead of a bf16-output one (no faster than
  float32).
* :func:`softmax_attend` ``probs = softmax(logits); out = probs @ v`` with the backward pass
  ``dP = dO V^T; dlogits = P * (dP - rowsum(P * dP)); dV = P^T dO``, whose matmuls get plain
  operands (XLA:CPU otherwise fuses the softmax derivative into a slow library fusion).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_F32 = jnp.float32


def _dot(eqn: str, a, b, out_dtype):
  return jnp.einsum(eqn, a, b, preferred_element_type=_F32).astype(out_dtype)


def dense(x, w, *, tuned: bool = False):
  """``x[..., K] @ w[K, N]`` in the dtype of ``x`` (float32 accumulation)."""
  return _dense_tuned(x, w) if tuned else _dense_plain(x, w)


def _dense_plain(x, w):
  return _dot('...k,kn->...n', x, w, x.dtype)


@jax.custom_vjp
def _dense_tuned(x, w):
  return _dense_plain(x, w)


def _dense_fwd(x, w):
  # The forward runs as the custom_vjp call itself: the traced step is then exactly the one
  # `python -m ropex.bench` measured before ops became backend-aware.
  return _dense_tuned(x, w), (x, w)


def _dense_bwd(res, g):
  x, w = res
  k, n = w.shape
  x_MK = x.reshape(-1, k)
  g_MN = jax.lax.optimization_barrier(g.reshape(-1, n).astype(x.dtype))
  dx = _dot('mn,kn->mk', g_MN, w, x.dtype).reshape(x.shape)
  dw = _dot('mk,mn->kn', x_MK, g_MN, w.dtype)
  return dx, dw


_dense_tuned.defvjp(_dense_fwd, _dense_bwd)


def einsum(eqn: str, a, b, out_dtype=None, *, tuned: bool = False):
  """``jnp.einsum(eqn, a, b)`` (result in ``out_dtype``, default the operands' type); low
  precision operands accumulate in float32 (backward too when ``tuned``; plain autodiff
  elsewhere, where the matrix units accumulate in float32 anyway). Every index of one operand
  must appear in the other operand or in the output (true of a matmul-like ``eqn``)."""
  out_dtype = jnp.dtype(out_dtype or jnp.result_type(a, b))
  if a.dtype == _F32 and b.dtype == _F32:
    return jnp.einsum(eqn, a, b).astype(out_dtype)
  if not tuned:
    return _dot(eqn, a, b, out_dtype)
  return _einsum_acc32(eqn, out_dtype, a, b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _einsum_acc32(eqn, out_dtype, a, b):
  return _dot(eqn, a, b, out_dtype)


def _einsum_fwd(eqn, out_dtype, a, b):
  return _einsum_acc32(eqn, out_dtype, a, b), (a, b)


def _einsum_bwd(eqn, out_dtype, res, g):
  del out_dtype
  a, b = res
  inputs, out = eqn.split('->')
  sub_a, sub_b = inputs.split(',')
  g = g.astype(jnp.result_type(a, b))
  return (_dot(f'{out},{sub_b}->{sub_a}', g, b, a.dtype),
          _dot(f'{sub_a},{out}->{sub_b}', a, g, b.dtype))


_einsum_acc32.defvjp(_einsum_fwd, _einsum_bwd)


def softmax_attend(logits_BKGTS, v_BSKH, *, tuned: bool = False):
  """``(softmax(logits) @ v [B, T, K, G, H], probs [B, K, G, T, S])``; ``logits`` float32
  (already masked), ``out`` in the dtype of ``v``."""
  fn = _softmax_attend_tuned if tuned else _softmax_attend_plain
  return fn(logits_BKGTS, v_BSKH)


def _softmax_attend_plain(logits_BKGTS, v_BSKH):
  probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1)
  out_BTKGH = _dot('BKGTS,BSKH->BTKGH', probs_BKGTS.astype(v_BSKH.dtype), v_BSKH, v_BSKH.dtype)
  return out_BTKGH, probs_BKGTS


@jax.custom_vjp
def _softmax_attend_tuned(logits_BKGTS, v_BSKH):
  return _softmax_attend_plain(logits_BKGTS, v_BSKH)


def _softmax_attend_fwd(logits_BKGTS, v_BSKH):
  out_BTKGH, probs_BKGTS = _softmax_attend_tuned(logits_BKGTS, v_BSKH)
  return (out_BTKGH, probs_BKGTS), (probs_BKGTS, v_BSKH)


def _softmax_attend_bwd(res, cts):
  probs_BKGTS, v_BSKH = res
  d_out_BTKGH, d_probs_BKGTS = cts
  d_out_BTKGH = jax.lax.optimization_barrier(d_out_BTKGH.astype(v_BSKH.dtype))
  dp_BKGTS = _dot('BTKGH,BSKH->BKGTS', d_out_BTKGH, v_BSKH, _F32) + d_probs_BKGTS
  dp_BKGTS = jax.lax.optimization_barrier(dp_BKGTS)
  d_logits_BKGTS = probs_BKGTS * (dp_BKGTS - jnp.sum(probs_BKGTS * dp_BKGTS, axis=-1,
                                                     keepdims=True))
  d_v_BSKH = _dot('BKGTS,BTKGH->BSKH', probs_BKGTS.astype(v_BSKH.dtype), d_out_BTKGH,
                  v_BSKH.dtype)
  return jax.lax.optimization_barrier(d_logits_BKGTS), d_v_BSKH


_softmax_attend_tuned.defvjp(_softmax_attend_fwd, _softmax_attend_bwd)
