"""FLOPs and MFU: the one model-FLOPs formula (benchmark and fit check), and the matmul FLOPs
of a traced step counted from its jaxpr.

Model FLOPs of one train step (forward + backward, recomputation not counted), per token::

    6 * (non-embedding parameters + V * D)  +  sum over layers of 12 * N * H * mean attended keys

Forward only (evaluation), per token: ``2 * (non-embedding parameters + V * D) + sum over
layers of 4 * N * H * attended keys`` — a third of the train step's (:func:`forward_flops`).

``V * D`` is the tied output projection; the mean attended keys of a causal layer over ``T``
positions is ``(T + 1) / 2`` (``mean_t min(t + 1, window)`` with a sliding window). MFU is model
FLOPs per second over the peak FLOP/s of the compute dtype (:func:`mfu`).

Executed matmul FLOPs, from the jaxpr:

XLA's ``compiled.cost_analysis()['flops']`` counts the body of every loop once, so a model
with scanned layers (and a chunked loss) is under-counted by the trip counts. Here every
``dot_general`` is counted as ``2 * |output| * |contracted dims|``, multiplied through the
``scan`` lengths that enclose it; the backward pass and rematerialised (recomputed) forward
work are in the jaxpr of a train step, so they are counted too. Elementwise work is ignored
(it is a small fraction of a transformer step and runs on other units than the MXU).
A Pallas kernel (``pallas_call``) counts its body once per grid point: for the splash kernel
that is the dense-equivalent count, as if no block were skipped (at run time the causal mask
skips about half of the blocks).
"""

from __future__ import annotations

import math
from typing import Any

from jax.extend import core as jex_core

from ropex import model as model_lib
from ropex.model.config import ModelConfig


def mean_attended_keys(seq_len: int, window: int) -> float:
  """Mean number of keys a query attends to under the causal mask (and ``window`` if > 0)."""
  span = window if 0 < window < seq_len else seq_len
  return sum(min(t + 1, span) for t in range(seq_len)) / seq_len


def forward_flops(cfg: ModelConfig, batch_size: int, seq_len: int,
                  attended_keys: float | None = None) -> float:
  """Model FLOPs of one forward pass (logits included) over ``batch_size`` rows of ``seq_len``
  tokens. ``attended_keys`` (default: the causal mean of each layer, :func:`mean_attended_keys`)
  counts the keys every query is scored against; ``seq_len`` gives the work a dense
  implementation executes (it scores the masked half too)."""
  counts = model_lib.count_params(cfg)
  matmul_params = counts['params_non_embedding'] + cfg.vocab_size * cfg.embed_dim
  attention = sum(4.0 * cfg.num_heads * cfg.head_dim * (
      mean_attended_keys(seq_len, layer.window) if attended_keys is None else attended_keys)
                  for layer in cfg.layers)
  return float(batch_size) * seq_len * (2.0 * matmul_params + attention)


def model_flops_per_step(cfg: ModelConfig, batch_size: int, seq_len: int) -> float:
  """The formula above for one train step of ``batch_size`` rows of ``seq_len`` tokens: the
  forward pass and a backward pass of twice its matmul work."""
  return 3.0 * forward_flops(cfg, batch_size, seq_len)


def mfu(model_flops: float, seconds: float, peak_flops: float) -> float:
  """Model FLOPs utilisation: ``model_flops / seconds / peak_flops``."""
  return model_flops / seconds / peak_flops


def dot_flops(eqn) -> float:
  """FLOPs of one ``dot_general`` equation."""
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  lhs_shape = eqn.invars[0].aval.shape
  contracted = math.prod(lhs_shape[d] for d in lhs_contract)
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * contracted


def _sub_jaxprs(value: Any):
  if isinstance(value, jex_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jex_core.Jaxpr):
    yield value
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def jaxpr_flops(jaxpr) -> float:
  """Matmul FLOPs of ``jaxpr`` (a Jaxpr or ClosedJaxpr), scan trip counts included."""
  if isinstance(jaxpr, jex_core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      total += dot_flops(eqn)
      continue
    if name == 'cond':  # one branch runs: count the most expensive
      total += max((jaxpr_flops(b) for b in eqn.params['branches']), default=0.0)
      continue
    inner = sum(jaxpr_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
    if name == 'scan':
      inner *= eqn.params['length']
    elif name == 'shard_map':  # the body sees one shard; every device runs it
      inner *= math.prod(eqn.params['mesh'].shape.values())
    elif name == 'pallas_call':  # the kernel body runs once per grid point
      inner *= math.prod(eqn.params['grid_mapping'].grid)
    total += inner
  return total

