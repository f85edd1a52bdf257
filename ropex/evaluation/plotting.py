"""Matplotlib without a display (Agg) and one way to write a figure, for every ropex figure
(evaluation, analysis, report); it lives beside the evaluation figures, its main user."""

from __future__ import annotations

import matplotlib

from ropex import paths

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

__all__ = ['plt', 'save', 'legend_beside']


def legend_beside(ax, fontsize: int = 7):
  """The legend right of the axes, where it never covers a curve; the figure is widened by the
  legend's width, so the axes keep their size."""
  legend = ax.legend(fontsize=fontsize, loc='upper left', bbox_to_anchor=(1.02, 1.0),
                     borderaxespad=0.0)
  fig = ax.figure
  width = legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
  fig.set_size_inches(fig.get_size_inches() + (width + 0.15, 0.0))
  return legend


def save(fig, path: str, dpi: int = 110, tight: bool = True) -> str:
  """Writes a PNG (creating its folder; a local path or a URL, through epath) and closes the
  figure; returns ``path``."""
  target = paths.path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  if tight:
    fig.tight_layout()
  with target.open('wb') as f:
    fig.savefig(f, format='png', dpi=dpi)
  plt.close(fig)
  return path
