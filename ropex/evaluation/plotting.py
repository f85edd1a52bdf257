"""Matplotlib without a display (Agg) and one way to write a figure, for every ropex figure
(evaluation, analysis, report); it lives beside the evaluation figures, its main user."""

from __future__ import annotations

import matplotlib

from ropex import paths

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

__all__ = ['plt', 'save']


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
