"""Several evaluation results (e.g. the NoPE / RoPE / p-RoPE runs of an ablation) in one set of
markdown tables (``comparison.md``) and one set of figures (:mod:`ropex.evaluation.figures`).

Tables: perplexity by context length; then one table per retrieval kind / task with the
accuracy at each length, averaged over depths (the full length x depth grids are in the JSON
files and the heatmaps).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ropex import paths
from ropex.evaluation import figures, ruler, suite


def describe_pe(results: dict) -> str:
  """``rope θ=1e+04``, ``prope 12/16 θ=1e+04``, ``none`` (+ ``÷4`` for position interpolation);
  layer types joined with ``/``."""
  half = int(results['run']['model']['head_dim']) // 2
  parts = []
  for layer in results['run']['layers']:
    kind = layer['pe_kind']
    if kind == 'none':
      parts.append('none')
      continue
    rotated = len(layer['rotated_chunks'])
    text = kind + ('' if rotated == half else f' {rotated}/{half}')
    if layer.get('max_wavelength'):  # rotary kinds; bias / learned kinds declare no θ
      text += f' θ={layer["max_wavelength"]:g}'
    if layer.get('position_scale', 1.0) != 1.0:
      text += f' pos÷{layer["position_scale"]:g}'
    if layer.get('window'):
      text += f' w={layer["window"]}'
    parts.append(text)
  return ' / '.join(dict.fromkeys(parts))


def _fmt(value, digits: int = 3) -> str:
  if value is None or (isinstance(value, float) and np.isnan(value)):
    return '–'
  return f'{value:.{digits}g}' if abs(value) >= 100 else f'{value:.{digits}f}'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return '\n'.join(lines)


def _length_header(lengths, train_positions: int) -> list[str]:
  return [f'{L}' + (' *' if L > train_positions else '') for L in lengths]


def primary(grid: dict) -> str:
  """The number a grid's tables and figures show (``accuracy`` or ``token_accuracy``)."""
  return grid.get('primary', 'accuracy')


def mean_over_depths(grid: dict) -> list[float | None]:
  out = []
  for column in zip(*grid[primary(grid)]):
    values = [v for v in column if v is not None]
    out.append(float(np.mean(values)) if values else None)
  return out


def markdown(results: Sequence[dict], labels: Sequence[str]) -> str:
  trained = min(r['run']['train_positions'] for r in results)
  out = []
  with_ppl = [(r, name) for r, name in zip(results, labels) if 'perplexity' in r]
  if with_ppl:
    lengths = sorted({L for r, _ in with_ppl for L in r['perplexity']['lengths']})
    data = ', '.join(sorted({r['perplexity']['data'] for r, _ in with_ppl}))
    out += [f'Perplexity by context length ({data} data; * = beyond the {trained} positions '
            'seen in training)', '']
    rows = []
    for r, name in with_ppl:
      ppl = dict(zip(r['perplexity']['lengths'], r['perplexity']['perplexity']))
      rows.append([name, describe_pe(r), str(r['run']['step'])] +
                  [_fmt(ppl.get(L)) for L in lengths])
    out.append(_table(['run', 'PE', 'step'] + _length_header(lengths, trained), rows))
  names = list(dict.fromkeys(n for r in results for n in figures.grids(r)
                             if not n.startswith('ruler: ')))   # RULER: its own tables below
  for name in names:
    grid_lengths = sorted({L for r in results for L in figures.grids(r).get(name, {})
                           .get('lengths', [])})
    rows = []
    for r, run_name in zip(results, labels):
      g = figures.grids(r).get(name)
      acc = dict(zip(g['lengths'], mean_over_depths(g))) if g else {}
      rows.append([run_name] + [_fmt(acc.get(L), 2) for L in grid_lengths])
    metric = primary(next(figures.grids(r)[name] for r in results
                          if name in figures.grids(r))).replace('_', ' ')
    out += ['', f'{name}: {metric} (mean over depths)', '',
            _table(['run'] + _length_header(grid_lengths, trained), rows)]
  table = ruler.markdown(results, labels, trained)
  if table:
    out += ['', table]
  return '\n'.join(out).lstrip('\n') + '\n'


def compare(results: Sequence[dict], out_dir: str) -> tuple[str, list[str]]:
  """Writes ``comparison.md`` and the figures; returns (markdown, paths written). Results of
  runs that differ only by seed are aggregated (:mod:`ropex.evaluation.grouped`): their tables
  show mean ± 95% interval and their figures the seed mean with a band."""
  from ropex.evaluation import grouped  # pylint: disable=g-import-not-at-top
  root = paths.path(out_dir, '--out')
  root.mkdir(parents=True, exist_ok=True)
  path = root / 'comparison.md'
  if all(len(g) == 1 for g in grouped.group_indices(results)):
    labels = unique_labels(results)
    text = markdown(results, labels)
    written = figures.all_figures(results, labels, out_dir)
  else:
    text, groups, labels = grouped.markdown(results)
    written = figures.all_figures([grouped.mean_result(g) for g in groups], labels, out_dir,
                                  grouped.bands(groups))
  path.write_text(text)
  return text, [str(path)] + written


def unique_labels(results: Sequence[dict]) -> list[str]:
  labels = [suite.label(r) for r in results]
  seen: dict[str, int] = {}
  out = []
  for name in labels:
    seen[name] = seen.get(name, 0) + 1
    out.append(name if labels.count(name) == 1 else f'{name} #{seen[name]}')
  return out
