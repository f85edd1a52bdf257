"""Positional heads: how much each head attends to the token itself (diagonal), to the previous
token, and to the first token (BOS), averaged over query positions; and, more generally, its
offset profile: the mean attention on the key ``delta`` tokens back, ``delta = 0..max_offset-1``.

Scores average the attention weight on the target over the valid query positions
``t >= max(min_position, delta)`` (``min_position`` 2 by default: the first position where
BOS, previous and current token are three different tokens). A head's positional score is the
peak of its offset profile, its kind the peak's offset (0 = diagonal, 1 = previous, ``k`` =
"offset k", e.g. a copy head).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ropex.analysis import figures
from ropex.analysis.capture import Captured
from ropex.model.config import ModelConfig

SCORE_NAMES = ('diagonal', 'previous', 'first')


def pattern_sums(probs_BNTS: np.ndarray, valid_BT: np.ndarray, min_position: int = 2):
  """Summed attention on the three targets [N, 3] and the number of query rows used."""
  T = probs_BNTS.shape[2]
  t = np.arange(min_position, T)
  w_B1T = valid_BT[:, None, min_position:].astype(np.float64)
  targets = (probs_BNTS[:, :, t, t], probs_BNTS[:, :, t, t - 1], probs_BNTS[:, :, t, 0])
  sums_N3 = np.stack([(x * w_B1T).sum(axis=(0, 2)) for x in targets], axis=-1)
  return sums_N3, int(valid_BT[:, min_position:].sum())


def offset_sums(probs_BNTS: np.ndarray, valid_BT: np.ndarray, max_offset: int,
                min_position: int = 2):
  """Summed attention on the key ``delta`` back [N, max_offset] and the rows used per delta."""
  N, T = probs_BNTS.shape[1], probs_BNTS.shape[2]
  sums_NO, rows_O = np.zeros((N, max_offset)), np.zeros(max_offset, np.int64)
  for delta in range(max_offset):
    t = np.arange(max(min_position, delta), T)
    if not t.size:
      continue
    w_B1T = valid_BT[:, None, t].astype(np.float64)
    sums_NO[:, delta] = (probs_BNTS[:, :, t, t - delta] * w_B1T).sum(axis=(0, 2))
    rows_O[delta] = int(valid_BT[:, t].sum())
  return sums_NO, rows_O


def _kind(offset: int) -> str:
  return {0: 'diagonal', 1: 'previous'}.get(offset, f'offset {offset}')


@dataclasses.dataclass
class HeadScores:
  scores_LNS: np.ndarray   # [layers, heads, 3]: diagonal, previous, first
  offsets_LNO: np.ndarray  # [layers, heads, max_offset]: mean attention delta tokens back
  queries: int             # query positions averaged over (t >= min_position)

  def score(self, layer: int, head: int, name: str) -> float:
    """A named score, or ``'offset k'``."""
    if name.startswith('offset '):
      return float(self.offsets_LNO[layer, head, int(name.split()[1])])
    return float(self.scores_LNS[layer, head, SCORE_NAMES.index(name)])

  def ranked(self) -> list[dict]:
    """Every head, most positional first: ``layer, head, diagonal, previous, first, offset,
    positional, kind`` (``positional`` = the offset-profile peak at ``offset``)."""
    rows = []
    for layer, head in np.ndindex(*self.scores_LNS.shape[:2]):
      diag, prev, first = (float(v) for v in self.scores_LNS[layer, head])
      profile = self.offsets_LNO[layer, head]
      offset = int(np.argmax(profile))
      rows.append(dict(layer=int(layer), head=int(head), diagonal=diag, previous=prev,
                       first=first, offset=offset, positional=float(profile[offset]),
                       kind=_kind(offset)))
    return sorted(rows, key=lambda r: (-r['positional'], r['layer'], r['head']))

  def top(self, k: int) -> list[dict]:
    return self.ranked()[:k]


class HeadScoreAccumulator:

  def __init__(self, cfg: ModelConfig, min_position: int = 2, max_offset: int = 16):
    self.min_position, self.max_offset = min_position, max_offset
    self._sums = np.zeros((cfg.num_layers, cfg.num_heads, len(SCORE_NAMES)))
    self._offsets = np.zeros((cfg.num_layers, cfg.num_heads, max_offset))
    self._rows, self._offset_rows = 0, np.zeros(max_offset, np.int64)

  def add(self, captured: Captured) -> None:
    for layer, probs in enumerate(captured.probs):
      sums, rows = pattern_sums(probs, captured.valid_BT, self.min_position)
      offsets, offset_rows = offset_sums(probs, captured.valid_BT, self.max_offset,
                                         self.min_position)
      self._sums[layer] += sums
      self._offsets[layer] += offsets
    self._rows += rows
    self._offset_rows += offset_rows

  def result(self) -> HeadScores:
    return HeadScores(self._sums / max(self._rows, 1),
                      self._offsets / np.maximum(self._offset_rows, 1), self._rows)


def plot_attention_maps(maps_LNTS: np.ndarray, heads: list[dict], path: str,
                        labels: list[str] | None = None) -> str:
  """Attention maps (query rows x key columns) of the given heads on one prompt."""
  n = max(len(heads), 1)
  fig, axes = figures.new(n, 1, width=3.2, height=3.0)
  for ax, row in zip(axes[0], heads):
    figures.heatmap(ax, maps_LNTS[row['layer'], row['head']],
                    f"L{row['layer']} H{row['head']}: {row['kind']} {row['positional']:.2f}",
                    'key position', 'query position',
                    cmap='magma', vmin=0.0, vmax=1.0)
    if labels is not None and len(labels) <= 32:
      ticks = np.arange(len(labels))
      ax.set_xticks(ticks, labels, rotation=90, fontsize=5)
      ax.set_yticks(ticks, labels, fontsize=5)
  return figures.save(fig, path)
