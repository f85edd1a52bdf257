"""The optimizer: AdamW with a warmup + cosine | rsqrt | constant schedule, global-norm
clipping and a weight-decay mask (norm scales and the embedding are not decayed unless
``train.decay_norms_and_embeddings``)."""

from __future__ import annotations

import jax
import optax

SCHEDULES = ('cosine', 'rsqrt', 'constant')
NO_DECAY_MARKERS = ('norm', 'embedder')  # parameter-path substrings excluded from decay
# parameter names of constants the model never trains (their gradient is stopped, e.g. FoPE's
# Fourier coefficients): never decayed, whatever ``train.decay_norms_and_embeddings`` says
FIXED_MARKER = 'fixed_'


def learning_rate_schedule(train) -> optax.Schedule:
  """Linear warmup from 0 to ``learning_rate`` over ``warmup_steps``, then:

  * ``cosine``: cosine decay to ``learning_rate * end_learning_rate_fraction`` at ``steps``;
  * ``rsqrt``: ``learning_rate * sqrt(warmup / step)`` (inverse square root);
  * ``constant``: ``learning_rate``.
  """
  peak, warmup, steps = float(train.learning_rate), int(train.warmup_steps), int(train.steps)
  warm = optax.linear_schedule(0.0, peak, max(warmup, 1))
  if train.schedule == 'cosine':
    after = optax.cosine_decay_schedule(peak, max(steps - warmup, 1),
                                        alpha=float(train.end_learning_rate_fraction))
  elif train.schedule == 'rsqrt':
    offset = max(warmup, 1)
    after = lambda count: peak * jax.lax.rsqrt((count + offset) / offset)
  else:
    after = optax.constant_schedule(peak)
  if warmup == 0:
    return after
  return optax.join_schedules([warm, after], [warmup])


def decay_mask(params, decay_norms_and_embeddings: bool = False):
  """True for parameters that get weight decay."""
  def decays(path, _):
    name = jax.tree_util.keystr(path, simple=True, separator='/')
    if FIXED_MARKER in name:
      return False
    return decay_norms_and_embeddings or not any(m in name for m in NO_DECAY_MARKERS)
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train) -> optax.GradientTransformation:
  """Clip by global norm (``grad_clip_norm`` > 0), then AdamW with the schedule and mask."""
  adamw = optax.adamw(
      learning_rate_schedule(train), b1=float(train.b1), b2=float(train.b2),
      eps=float(train.eps), weight_decay=float(train.weight_decay),
      mask=lambda p: decay_mask(p, bool(train.decay_norms_and_embeddings)))
  if train.grad_clip_norm and train.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(float(train.grad_clip_norm)), adamw)
  return adamw
