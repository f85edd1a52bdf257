"""Matplotlib without a display (Agg) and one way to write a figure, for every ropex figure."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

__all__ = ['plt', 'save']


def save(fig, path: str, dpi: int = 110, tight: bool = True) -> str:
  """Writes a PNG (creating its folder) and closes the figure; returns ``path``."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  if tight:
    fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path
