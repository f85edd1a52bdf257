"""Runs a ropex model on token batches and collects, per layer, the queries and keys after the
positional encoding, the attention probabilities, and the next-token losses.

The model sows ``q_BTNH``, ``k_BSKH`` and ``probs_BNTS`` under ``intermediates``; scanned
models stack them over pattern groups under ``layers/layer_j``, unscanned ones put them under
``layer_i``. :func:`per_layer` reads both layouts. :func:`for_analysis` returns the unscanned,
dense-attention version of a model (the layout every analysis, including ablation, uses).
Logits and losses are float32 whatever the compute dtype. With a
:class:`~ropex.training.placement.Placement`, parameters must already be on its mesh
(:meth:`Placement.place`, once) and each batch is split over the batch axes; the forward pass
compiles once per (config, batch shape).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ropex import model as model_lib
from ropex.model import loss as loss_lib
from ropex.model.config import ModelConfig
from ropex.training.placement import Placement


@dataclasses.dataclass
class Captured:
  """One batch. Lists are indexed by layer; ``nll_BT[b, t]`` is the loss of predicting token
  ``t + 1`` from the prefix up to ``t`` (0 where ``t + 1`` is padding)."""
  q: list[np.ndarray]       # [B, T, N, H] after the PE, before the 1/sqrt(H) scaling
  k: list[np.ndarray]       # [B, T, K, H]
  probs: list[np.ndarray]   # [B, N, T, T]
  nll_BT: np.ndarray
  valid_BT: np.ndarray      # bool: real (non-padding) tokens
  scored_BT: np.ndarray     # bool: tokens whose prediction counts in the loss


def for_analysis(cfg: ModelConfig, params: dict) -> tuple[ModelConfig, dict]:
  """Unscanned config with one LayerSpec per layer, dense attention (so probabilities are
  sown), no remat; params converted to the official ``layer_i`` tree if they were scanned."""
  params = nn.unbox(params)
  if 'layers' in params:
    params = model_lib.unstack_layers(params, cfg)
  flat = dataclasses.replace(cfg, pattern=cfg.layers, scan_layers=False, remat='none',
                             attention_impl='dense')
  return flat, params


def per_layer(cfg: ModelConfig, intermediates: dict, name: str) -> list:
  """The sown value ``name`` of every layer's attention, in layer order, for either layout."""
  out = []
  for i in range(cfg.num_layers):
    if cfg.scan_layers:
      group, j = divmod(i, len(cfg.pattern))
      out.append(intermediates['layers'][f'layer_{j}']['attn'][name][0][group])
    else:
      out.append(intermediates[f'layer_{i}']['attn'][name][0])
  return out


def token_nll(logits_BTV, tokens_BT, valid_BT):
  """Next-token negative log-likelihood [B, T] (last position and padding targets are 0)."""
  nll = loss_lib.token_losses(logits_BTV[:, :-1], tokens_BT[:, 1:]).loss_BT
  nll = jnp.where(valid_BT[:, 1:], nll, 0.0)
  return jnp.pad(nll, ((0, 0), (0, 1)))


@functools.lru_cache(maxsize=32)
def _forward_fn(cfg: ModelConfig):
  model = model_lib.Transformer(cfg)

  @jax.jit
  def forward(params, tokens_BT, valid_BT):
    segments_BT = jnp.ones_like(tokens_BT)
    logits, state = model.apply({'params': params}, tokens_BT, None, segments_BT,
                                mutable=['intermediates'])
    inter = state['intermediates']
    return (per_layer(cfg, inter, 'q_BTNH'), per_layer(cfg, inter, 'k_BSKH'),
            per_layer(cfg, inter, 'probs_BNTS'), token_nll(logits, tokens_BT, valid_BT))

  return forward


def capture(cfg: ModelConfig, params: dict, tokens_BT, valid_BT, scored_BT=None,
            placement: Placement | None = None) -> Captured:
  """Runs the model (either layout; dense attention required for probabilities).
  ``scored_BT`` (default: every real token after the first) marks the loss targets."""
  if cfg.attention_impl != 'dense':
    cfg = dataclasses.replace(cfg, attention_impl='dense')
  tokens_BT = np.asarray(tokens_BT, np.int32)
  valid_BT = np.asarray(valid_BT, bool)
  if placement is not None:
    with placement.rules_context():
      q, k, probs, nll = _forward_fn(cfg)(nn.unbox(params), placement.batch(tokens_BT),
                                          placement.batch(valid_BT))
  else:
    q, k, probs, nll = _forward_fn(cfg)(nn.unbox(params), jnp.asarray(tokens_BT),
                                        jnp.asarray(valid_BT))
  host = Placement.to_host   # the whole batch on every process (gathered when multi-process)
  to_np = lambda xs: [np.asarray(host(x), np.float32) for x in xs]
  valid = np.asarray(valid_BT)
  scored = valid.copy() if scored_BT is None else np.asarray(scored_BT, bool) & valid
  scored[:, 0] = False
  return Captured(to_np(q), to_np(k), to_np(probs), np.asarray(host(nll), np.float64), valid,
                  scored)


def batches(prompts, batch_size: int):
  """Yields ``(tokens_BT, valid_BT, scored_BT)`` of fixed batch size from a
  :class:`~ropex.analysis.prompts.Prompts`; the last batch is padded with empty rows (valid all
  False) so every batch has one shape and compiles once."""
  P, T = prompts.tokens_PT.shape
  valid_PT = np.arange(T)[None, :] < np.asarray(prompts.lengths_P)[:, None]
  scored_PT = valid_PT if prompts.scored_PT is None else np.asarray(prompts.scored_PT, bool)
  for start in range(0, P, batch_size):
    rows = slice(start, min(start + batch_size, P))
    n = rows.stop - rows.start
    out = [np.zeros((batch_size, T), np.int32), np.zeros((batch_size, T), bool),
           np.zeros((batch_size, T), bool)]
    for array, source in zip(out, (prompts.tokens_PT, valid_PT, scored_PT)):
      array[:n] = source[rows]
    yield tuple(out)


class LossAccumulator:
  """Mean next-token loss over the valid targets of many batches."""

  def __init__(self):
    self._sum, self._count = 0.0, 0

  def add(self, captured: Captured) -> None:
    targets_BT = captured.scored_BT[:, 1:]       # nll_BT[:, t] predicts token t + 1
    self._sum += float((captured.nll_BT[:, :-1] * targets_BT).sum())
    self._count += int(targets_BT.sum())

  def result(self) -> float:
    return self._sum / max(self._count, 1)


def run(cfg: ModelConfig, params: dict, prompts, batch_size: int, consumers,
        placement: Placement | None = None) -> None:
  """Feeds every batch of the prompts through the model and each ``consumer.add`` (on the
  placement's mesh if given: ``params`` placed once, the batch size rounded up to the shards)."""
  if placement is not None:
    params = placement.place(params, cfg)
    batch_size = placement.rows(batch_size)
  for tokens_BT, valid_BT, scored_BT in batches(prompts, batch_size):
    captured = capture(cfg, params, tokens_BT, valid_BT, scored_BT, placement)
    for consumer in consumers:
      consumer.add(captured)
