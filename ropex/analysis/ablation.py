"""Frequency ablation: remove frequency chunks from chosen heads and measure what changes.

The model is not told about ablations. Each layer's positional encoding is wrapped in
:class:`ZeroChunks`, a hashable callable with the encoding signature that applies the
original encoding and then zeroes the chosen chunks of the chosen heads. Queries and keys go
through the same callable: the query heads are zeroed, and a KV head is zeroed only when every
query head that reads it is ablated (MHA, or a whole group), so no other head is touched.
Since a head's logit is ``sum_c q_c . k_c``, zeroing a chunk of its query already removes the
chunk's contribution exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from ropex.analysis import capture as capture_lib
from ropex.analysis.chunks import chunk_layout
from ropex.analysis.heads import HeadScoreAccumulator, HeadScores
from ropex.model.config import LayerSpec, ModelConfig
from ropex.model.pe_interface import Encoding, as_encoding
from ropex.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ZeroChunks(Encoding):
  """``base_pe`` followed by zeroing ``dims`` of ``query_heads`` (queries) and ``kv_heads``
  (keys). Build it with :meth:`build`. Every other hook of the positional interface (logit
  bias, learned parameters, declared frequencies) is the base encoding's."""
  base_pe: Any
  dims: tuple[int, ...]
  query_heads: tuple[int, ...]
  kv_heads: tuple[int, ...]
  num_heads: int
  num_kv_heads: int
  head_dim: int

  @classmethod
  def build(cls, base_pe, cfg: ModelConfig, chunks, heads,
            spec: LayerSpec | None = None) -> 'ZeroChunks':
    """``spec``: the layer's spec, for its own attention shape (default: the model's)."""
    num_kv_heads, head_dim = (cfg.attention_shape(spec) if spec is not None
                              else (cfg.num_kv_heads, cfg.head_dim))
    layout = chunk_layout(base_pe, head_dim)
    chunks = sorted({int(c) for c in chunks})
    heads = sorted({int(h) for h in heads})
    if any(not 0 <= c < layout.num_chunks for c in chunks):
      raise ConfigError(f'ablation chunks={chunks} must lie in [0, {layout.num_chunks})')
    if any(not 0 <= h < cfg.num_heads for h in heads):
      raise ConfigError(f'ablation heads={heads} must lie in [0, {cfg.num_heads})')
    group = cfg.num_heads // num_kv_heads
    kv_heads = [g for g in range(num_kv_heads)
                if all(h in heads for h in range(g * group, (g + 1) * group))]
    dims = sorted(int(d) for d in layout.dims_C2[chunks].reshape(-1))
    return cls(base_pe, tuple(dims), tuple(heads), tuple(kv_heads), cfg.num_heads,
               num_kv_heads, head_dim)

  def mask(self, num_heads_in_x: int) -> np.ndarray:
    """[heads, head_dim] multiplier for an input with that many heads."""
    if num_heads_in_x == self.num_heads:
      heads = self.query_heads
    elif num_heads_in_x == self.num_kv_heads:
      heads = self.kv_heads
    else:
      raise ValueError(f'ZeroChunks built for {self.num_heads} query / {self.num_kv_heads} '
                       f'KV heads, got {num_heads_in_x}')
    mask = np.ones((num_heads_in_x, self.head_dim), np.float32)
    mask[np.ix_(list(heads), list(self.dims))] = 0.0
    return mask

  def _zero(self, y_BTNH):
    return y_BTNH * jnp.asarray(self.mask(y_BTNH.shape[2]), y_BTNH.dtype)

  def __call__(self, x_BTNH, positions_BT):
    return self._zero(self.base_pe(x_BTNH, positions_BT))

  @property
  def _base(self) -> Encoding:
    return as_encoding(self.base_pe)

  @property
  def bias_kind(self):
    return self._base.bias_kind

  @property
  def kind(self):
    return getattr(self._base, 'kind', 'custom')

  def queries(self, q_BTNH, positions_BT, params):
    return self._zero(self._base.queries(q_BTNH, positions_BT, params))

  def keys(self, k_BSKH, positions_BS, params):
    return self._zero(self._base.keys(k_BSKH, positions_BS, params))

  def logit_bias(self, positions_q_BT, positions_k_BS, params, num_heads):
    return self._base.logit_bias(positions_q_BT, positions_k_BS, params, num_heads)

  def param_specs(self, dims):
    return self._base.param_specs(dims)

  def inv_freq(self, seq_len=None):
    return self._base.inv_freq(seq_len)

  def attention_factor(self, seq_len=None):
    return self._base.attention_factor(seq_len)

  def chunk_dims(self, head_dim):
    return self._base.chunk_dims(head_dim)

  def summary(self) -> dict:
    return self._base.summary()


def ablated_config(cfg: ModelConfig, ablations: dict[int, tuple]) -> ModelConfig:
  """``cfg`` (unscanned, one LayerSpec per layer, see ``capture.for_analysis``) with layer
  ``i``'s encoding wrapped as ``ZeroChunks(chunks, heads)`` for ``ablations[i] = (chunks,
  heads)``."""
  if cfg.scan_layers or len(cfg.pattern) != cfg.num_layers:
    raise ValueError('ablated_config needs the per-layer config of capture.for_analysis')
  pattern = list(cfg.pattern)
  for layer, (chunks, heads) in ablations.items():
    spec = pattern[layer]
    pattern[layer] = dataclasses.replace(
        spec, pe=ZeroChunks.build(spec.pe, cfg, chunks, heads, spec))
  return dataclasses.replace(cfg, pattern=tuple(pattern))


def band(cfg: ModelConfig, layer: int, which: str, fraction: float) -> list[int]:
  """The ``fraction`` highest- (``which='high'``) or lowest-frequency chunks of a layer
  (unrotated chunks count as the lowest; at least one chunk)."""
  spec = cfg.layers[layer]
  order = chunk_layout(spec.pe, cfg.attention_shape(spec)[1]).by_frequency()
  n = max(1, int(round(fraction * len(order))))
  if which == 'high':
    return sorted(order[:n].tolist())
  if which == 'low':
    return sorted(order[-n:].tolist())
  raise ConfigError(f'ablation band={which!r} is not allowed; allowed: high, low')


def measure(cfg, params, prompts, batch_size, placement=None) -> tuple[HeadScores, float]:
  """Head pattern scores and mean next-token loss of a model on the prompts (on the
  placement's mesh if given, see ``capture.run``)."""
  scores, loss = HeadScoreAccumulator(cfg), capture_lib.LossAccumulator()
  capture_lib.run(cfg, params, prompts, batch_size, [scores, loss], placement)
  return scores.result(), loss.result()


def run_ablations(cfg: ModelConfig, params: dict, prompts, heads: list[dict],
                  fraction: float = 0.25, batch_size: int = 8,
                  baseline: tuple[HeadScores, float] | None = None,
                  placement=None) -> list[dict]:
  """For each head (rows of ``HeadScores.top``: ``layer``, ``head``, ``kind``) alone, and for
  all of them together, removes the high band then the low band; returns one row per
  experiment with the ablated heads' scores before/after (``pattern`` = each head's own kind,
  averaged over the heads) and the loss before/after.

  ``cfg``/``params`` must come from ``capture.for_analysis``; with a ``placement``
  (:class:`~ropex.training.placement.Placement`) every measurement runs on its mesh. Each
  ablated model compiles once, for all its batches."""
  if baseline is None:
    baseline = measure(cfg, params, prompts, batch_size, placement)
  base_scores, base_loss = baseline
  targets = [[h] for h in heads]
  if len(heads) > 1:
    targets.append(list(heads))
  rows = []
  for target in targets:
    for which in ('high', 'low'):
      ablations: dict[int, tuple[set, set]] = {}
      for h in target:
        chunks, hs = ablations.setdefault(h['layer'], (set(), set()))
        chunks.update(band(cfg, h['layer'], which, fraction))
        hs.add(h['head'])
      scores, loss = measure(ablated_config(cfg, ablations), params, prompts, batch_size,
                             placement)
      rows.append(_row(target, which, ablations, base_scores, scores, base_loss, loss))
  return rows


def _row(target, which, ablations, before: HeadScores, after: HeadScores, loss0, loss1):
  def mean(scores, name=None):
    return float(np.mean([scores.score(h['layer'], h['head'], name or h['kind'])
                          for h in target]))

  row = dict(heads=' '.join(f"L{h['layer']}H{h['head']}" for h in target), band=which,
             kinds=[h['kind'] for h in target],
             chunks={int(k): sorted(int(c) for c in v[0]) for k, v in ablations.items()},
             loss_before=loss0, loss_after=loss1,
             pattern_before=mean(before), pattern_after=mean(after))
  for name in ('diagonal', 'previous', 'first'):
    row[f'{name}_before'], row[f'{name}_after'] = mean(before, name), mean(after, name)
  return row
