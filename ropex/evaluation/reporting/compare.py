"""Several evaluation results (e.g. the NoPE / RoPE / p-RoPE runs of an ablation) in one
``comparison.md`` and one set of figures: the tables (:mod:`.tables`, or :mod:`.grouped` when
some results differ only by seed), the paired differences against the first entry, the
declared baseline (:mod:`.paired`), and the figures with their bands
(:mod:`ropex.evaluation.reporting.figures`).
"""

from __future__ import annotations

from typing import Sequence

from ropex import paths
from ropex.evaluation.reporting import figures, grouped, paired, tables, values


def report(results: Sequence[dict], pairs: Sequence[tuple[int, int]] | None = None
           ) -> tuple[str, list[list[dict]], list[str], dict | None]:
  """``(markdown, groups, labels, bands)``; ``pairs``: ``(baseline, other)`` group indices
  for the paired table (default: every group against the first)."""
  indices = grouped.group_indices(results)
  groups = [[results[i] for i in idx] for idx in indices]
  if all(len(g) == 1 for g in groups):
    labels = values.unique_labels([g[0] for g in groups])
    text, bands = tables.markdown([g[0] for g in groups], labels), None
  else:
    text, groups, labels = grouped.markdown(results)
    bands = grouped.bands(groups)
  pairs = [(0, j) for j in range(1, len(groups))] if pairs is None else pairs
  diff = paired.markdown(groups, labels, pairs)
  return text + ('\n' + diff if diff else ''), groups, labels, bands


def compare(results: Sequence[dict], out_dir: str,
            pairs: Sequence[tuple[int, int]] | None = None) -> tuple[str, list[str]]:
  """Writes ``comparison.md`` and the figures; returns (markdown, paths written)."""
  root = paths.path(out_dir, '--out')
  root.mkdir(parents=True, exist_ok=True)
  text, groups, labels, bands = report(results, pairs)
  written = figures.all_figures([grouped.mean_result(g) for g in groups], labels, out_dir,
                                bands)
  path = root / 'comparison.md'
  path.write_text(text)
  return text, [str(path)] + written
