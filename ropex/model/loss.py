"""Token cross-entropy with a loss mask, plain or chunked over the sequence.

Both return a :class:`LossSums`: weighted sums (divide by ``sum(weights)`` yourself, so that
microbatches and chunks add up exactly to the whole batch) and per-token correctness
(``argmax(logits) == target``) for accuracy metrics. The chunked version never holds more than
``[B, chunk, V]`` logits, forward or backward (each chunk is recomputed under
``jax.checkpoint`` in the backward pass).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class LossSums(NamedTuple):
  ce_sum: jax.Array       # sum_t w_t * (logsumexp(logits_t) - logits_t[target_t])
  z_sum: jax.Array        # sum_t w_t * logsumexp(logits_t)^2   (for the z-loss)
  correct_BT: jax.Array   # bool: argmax(logits) == target


class TokenLosses(NamedTuple):
  loss_BT: jax.Array      # logsumexp(logits_t) - logits_t[target_t], float32
  log_z_BT: jax.Array     # logsumexp(logits_t), float32
  correct_BT: jax.Array   # bool: argmax(logits) == target


def token_losses(logits_BTV, targets_BT) -> TokenLosses:
  """The token loss every part of ropex uses (training, scoring, analysis): per-token
  cross-entropy of ``targets_BT`` under ``logits_BTV``, computed in float32 whatever the
  logits' dtype."""
  logits_BTV = logits_BTV.astype(jnp.float32)
  log_z_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
  target_logit_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
  correct_BT = jnp.argmax(logits_BTV, axis=-1) == targets_BT
  return TokenLosses(log_z_BT - target_logit_BT, log_z_BT, correct_BT)


def cross_entropy(logits_BTV, targets_BT, weights_BT) -> LossSums:
  """Weighted token cross-entropy sums of :func:`token_losses`."""
  t = token_losses(logits_BTV, targets_BT)
  weights_BT = weights_BT.astype(jnp.float32)
  ce_sum = jnp.sum(weights_BT * t.loss_BT)
  z_sum = jnp.sum(weights_BT * jnp.square(t.log_z_BT))
  return LossSums(ce_sum, z_sum, t.correct_BT)


def chunked_cross_entropy(hidden_BTD, logits_fn: Callable[[jax.Array], jax.Array],
                          targets_BT, weights_BT, chunk: int) -> LossSums:
  """:func:`cross_entropy` of ``logits_fn(hidden_BTD)`` over sequence chunks of ``chunk``
  tokens (``T % chunk == 0``), without materialising the ``[B, T, V]`` logits."""
  B, T, D = hidden_BTD.shape
  if T % chunk:
    raise ValueError(f'sequence length {T} is not a multiple of the loss chunk {chunk}')
  n = T // chunk

  def to_chunks(x_BT):  # [B, T, ...] -> [n, B, chunk, ...]
    return jnp.moveaxis(x_BT.reshape((B, n, chunk) + x_BT.shape[2:]), 1, 0)

  @jax.checkpoint
  def one_chunk(hidden_BCD, targets_BC, weights_BC):
    sums = cross_entropy(logits_fn(hidden_BCD), targets_BC, weights_BC)
    return sums.ce_sum, sums.z_sum, sums.correct_BT

  def body(carry, xs):
    ce, z, correct_BC = one_chunk(*xs)
    return (carry[0] + ce, carry[1] + z), correct_BC

  zero = jnp.zeros((), jnp.float32)
  (ce_sum, z_sum), correct_nBC = jax.lax.scan(
      body, (zero, zero), (to_chunks(hidden_BTD), to_chunks(targets_BT), to_chunks(weights_BT)))
  correct_BT = jnp.moveaxis(correct_nBC, 0, 1).reshape(B, T)
  return LossSums(ce_sum, z_sum, correct_BT)
