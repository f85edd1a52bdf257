"""Matplotlib (Agg, no display) helpers shared by the analysis figures."""

from __future__ import annotations

import matplotlib.ticker
import numpy as np

from ropex.evaluation.plotting import legend_beside, plt, save  # pylint: disable=unused-import  (re-exported)


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


def close(fig) -> None:
  plt.close(fig)
