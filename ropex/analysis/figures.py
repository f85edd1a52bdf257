"""Matplotlib (Agg, no display) helpers shared by the analysis figures."""

from __future__ import annotations

import os

import matplotlib
import matplotlib.ticker

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position


def new(ncols: int = 1, nrows: int = 1, width: float = 5.0, height: float = 3.6, **kw):
  fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                           squeeze=False, **kw)
  return fig, axes


def heatmap(ax, values_YX: np.ndarray, title: str, xlabel: str, ylabel: str,
            cmap: str = 'viridis', colorbar: bool = True, **kw):
  image = ax.imshow(values_YX, aspect='auto', interpolation='nearest', cmap=cmap, **kw)
  ax.set_title(title, fontsize=9)
  ax.set_xlabel(xlabel, fontsize=8)
  ax.set_ylabel(ylabel, fontsize=8)
  ax.tick_params(labelsize=7)
  for axis, size in ((ax.yaxis, values_YX.shape[0]), (ax.xaxis, values_YX.shape[1])):
    if size <= 8:
      axis.set_ticks(np.arange(size))
    else:
      axis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  if colorbar:
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
  return image


def save(fig, path: str) -> str:
  """Writes a PNG (creating its folder) and closes the figure; returns ``path``."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def close(fig) -> None:
  plt.close(fig)
