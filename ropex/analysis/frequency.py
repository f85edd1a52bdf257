"""Frequency usage: for every layer and head, the mean 2-norm of each frequency chunk of the
queries and of the keys over the prompts' tokens.

By Cauchy-Schwarz, ``|q_c . k_c| <= |q_c| |k_c|``: a chunk's norms bound what that frequency
can contribute to an attention logit, so the mean norms show which frequencies a head uses
(the measure of Barbero et al., 2025, Section 4).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ropex.analysis import figures
from ropex.analysis.capture import Captured
from ropex.analysis.chunks import ChunkLayout, chunk_layout, chunk_norms
from ropex.model.config import ModelConfig


@dataclasses.dataclass
class FrequencyUsage:
  q_LNC: np.ndarray     # mean chunk norm of the queries, per layer, query head, chunk
  k_LKC: np.ndarray     # same for the keys, per KV head
  freqs_LC: np.ndarray  # angular frequency of every chunk (0 = unrotated)
  tokens: int           # tokens averaged over
  declared_L: np.ndarray | None = None  # False: the layer's encoding declares no frequencies
  chunks_L: np.ndarray | None = None    # chunks of each layer (layers with their own head dim,
                                        # Gemma 4: arrays are padded to the widest, NaN beyond)

  def declared(self, layer: int) -> bool:
    return True if self.declared_L is None else bool(self.declared_L[layer])

  def band_shares(self, fraction: float = 0.25) -> dict[str, np.ndarray]:
    """Per layer, the share of the total mean query / key chunk norm held by the highest- and
    the lowest-frequency ``fraction`` of chunks (unrotated chunks count as lowest); NaN for
    a layer whose encoding declares no frequencies (not applicable)."""
    out = {}
    for name, x_LHC in (('q', self.q_LNC), ('k', self.k_LKC)):
      high, low = [], []
      for layer in range(x_LHC.shape[0]):
        if not self.declared(layer):
          high.append(np.nan)
          low.append(np.nan)
          continue
        C = self.freqs_LC.shape[1] if self.chunks_L is None else int(self.chunks_L[layer])
        order = np.argsort(-self.freqs_LC[layer, :C], kind='stable')
        n = max(1, int(round(fraction * len(order))))
        per_chunk = np.nansum(x_LHC[layer, :, :C], axis=0)
        total = per_chunk.sum() or 1.0
        high.append(per_chunk[order[:n]].sum() / total)
        low.append(per_chunk[order[-n:]].sum() / total)
      out[f'{name}_high'], out[f'{name}_low'] = np.asarray(high), np.asarray(low)
    return out


class FrequencyAccumulator:
  """Sums chunk norms over the valid tokens of many batches."""

  def __init__(self, cfg: ModelConfig):
    shapes = [cfg.attention_shape(s) for s in cfg.layers]      # (kv heads, head dim) per layer
    self.layouts: list[ChunkLayout] = [chunk_layout(s.pe, H) for s, (_, H) in
                                       zip(cfg.layers, shapes)]
    C, K = max(H for _, H in shapes) // 2, max(k for k, _ in shapes)
    self._q = np.full((cfg.num_layers, cfg.num_heads, C), np.nan)
    self._k = np.full((cfg.num_layers, K, C), np.nan)
    for layer, (k, H) in enumerate(shapes):   # NaN marks what a narrower layer does not have
      self._q[layer, :, :H // 2] = 0.0
      self._k[layer, :k, :H // 2] = 0.0
    self._tokens = 0

  def add(self, captured: Captured) -> None:
    valid_BT = captured.valid_BT
    self._tokens += int(valid_BT.sum())
    for layer, layout in enumerate(self.layouts):
      q_NC = chunk_norms(captured.q[layer], layout)[valid_BT].sum(axis=0)
      k_KC = chunk_norms(captured.k[layer], layout)[valid_BT].sum(axis=0)
      self._q[layer, :, :q_NC.shape[-1]] += q_NC
      self._k[layer, :k_KC.shape[0], :k_KC.shape[-1]] += k_KC

  def result(self) -> FrequencyUsage:
    n = max(self._tokens, 1)
    C = self._q.shape[-1]
    freqs_LC = np.stack([np.pad(l.freqs_C, (0, C - len(l.freqs_C)), constant_values=np.nan)
                         for l in self.layouts])
    return FrequencyUsage(self._q / n, self._k / n, freqs_LC, self._tokens,
                          np.asarray([layout.declared for layout in self.layouts]),
                          np.asarray([len(l.freqs_C) for l in self.layouts]))


def _boundary(ax, freqs_C: np.ndarray) -> None:
  """Marks where rotated chunks end (p-RoPE: the unrotated, lowest band starts)."""
  rotated = freqs_C > 0
  if rotated.any() and not rotated.all():
    ax.axvline(np.flatnonzero(rotated).max() + 0.5, color='w', lw=1, ls='--')


def plot_overview(usage: FrequencyUsage, path: str, title: str = '') -> str:
  """Layers x frequency chunks, mean over heads, for queries and keys."""
  fig, axes = figures.new(2, 1, width=5.2, height=0.25 * usage.q_LNC.shape[0] + 2.2)
  for ax, (name, x_LHC) in zip(axes[0], (('queries', usage.q_LNC), ('keys', usage.k_LKC))):
    figures.heatmap(ax, x_LHC.mean(axis=1), f'{title} {name}: mean chunk norm'.strip(),
                    'frequency chunk (0 = highest frequency)', 'layer')
    _boundary(ax, usage.freqs_LC[0])
  return figures.save(fig, path)


def plot_layers(usage: FrequencyUsage, out_dir: str) -> list[str]:
  """One PNG per layer: heads x frequency chunks for queries and keys."""
  paths = []
  for layer in range(usage.q_LNC.shape[0]):
    fig, axes = figures.new(2, 1, width=4.6, height=0.2 * usage.q_LNC.shape[1] + 2.0)
    for ax, (name, x_HC) in zip(axes[0], (('queries', usage.q_LNC[layer]),
                                          ('keys', usage.k_LKC[layer]))):
      figures.heatmap(ax, x_HC, f'layer {layer} {name}', 'frequency chunk (0 = highest)',
                      'head')
      _boundary(ax, usage.freqs_LC[layer])
    paths.append(figures.save(fig, os.path.join(out_dir, f'frequency_layer_{layer:02d}.png')))
  return paths
