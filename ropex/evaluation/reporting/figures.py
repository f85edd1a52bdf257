"""Figures (matplotlib, Agg) for one or several evaluation results, one curve / row per run:
``perplexity.png`` (perplexity vs context length), ``loss_by_position.png`` (at the longest
length) and ``accuracy.png`` (accuracy heatmaps, length x depth, one column per retrieval kind
or task, RULER task), and ``ruler.png`` (RULER's average recall vs context length). Dashed
lines mark the positions seen in training. Figures of parts a result lacks are not written.

Shaded bands: the 95% interval of every curve — per length the loss's interval over units
(one run) or over seeds and units (a seed group, :func:`ropex.evaluation.reporting.grouped.bands`),
per position bucket the bucket's loss interval over units, and RULER's Wilson interval.
"""

from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np

from ropex import paths as paths_lib
from ropex.evaluation import ruler, sampling
from ropex.evaluation.plotting import legend_beside, plt, save
from ropex.evaluation.reporting import values

grids = values.grids


def _float(values) -> np.ndarray:
  return np.asarray([np.nan if v is None else v for v in values], np.float64)


def _mark_training(ax, results: Sequence[dict]) -> None:
  for n in sorted({r['run']['train_positions'] for r in results}):
    ax.axvline(n, color='grey', linestyle='--', linewidth=0.8)


def own_bands(r: dict) -> dict:
  """One result's bands: ``{'perplexity': (lengths, low, high) or None, 'ruler': ...}``."""
  out = {}
  for part, at in (('perplexity', values.loss_at), ('ruler', values.ruler_at)):
    lengths = sorted(r['perplexity']['lengths']) if part == 'perplexity' and 'perplexity' in r \
        else (ruler.average_table(r['ruler'])[0] if part == 'ruler' and r.get('ruler') else [])
    keep = [(L, at(r, L)) for L in lengths]
    keep = [(L, e) for L, e in keep if e is not None and e.low is not None]
    if part == 'perplexity':
      keep = [(L, values.perplexity_band(e)) for L, e in keep]
    else:
      keep = [(L, (e.low, e.high)) for L, e in keep]
    out[part] = ([L for L, _ in keep], [b[0] for _, b in keep], [b[1] for _, b in keep]) \
        if keep else None
  return out


def _band(ax, line, band, scale: float = 1.0) -> None:
  """Shades ``band = (lengths, low, high)`` (a 95% interval) in ``line``'s colour."""
  if band:
    lengths, low, high = band
    ax.fill_between(lengths, scale * _float(low), scale * _float(high), alpha=0.2, linewidth=0,
                    color=line.get_color())


def perplexity_vs_length(results: Sequence[dict], labels: Sequence[str], path: str,
                         bands: Sequence | None = None) -> str:
  """``bands[i]``: ``(lengths, low, high)`` of result ``i`` (or None): drawn as a shaded band."""
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for i, (r, name) in enumerate(zip(results, labels)):
    p = r['perplexity']
    [line] = ax.plot(p['lengths'], _float(p['perplexity']), marker='o', label=name)
    _band(ax, line, bands[i] if bands else None)
  if bands and any(bands):
    ax.set_title('shaded: 95% interval', fontsize=8)
  _mark_training(ax, results)
  ax.set_xscale('log', base=2)
  ax.set_yscale('log')
  ax.set_xlabel('context length (tokens); dashed: positions seen in training')
  ax.set_ylabel(f'perplexity ({results[0]["perplexity"]["data"]} data)')
  legend_beside(ax)
  ax.grid(alpha=0.3)
  return save(fig, path)


def loss_by_position(results: Sequence[dict], labels: Sequence[str], path: str) -> str:
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for r, name in zip(results, labels):
    if 'perplexity' not in r:
      continue
    p = r['perplexity']
    longest = str(max(p['lengths']))
    b = p['by_position'][longest]
    mid = (np.asarray(b['start']) + np.asarray(b['stop'])) / 2
    [line] = ax.plot(mid, b['loss'], marker='.', label=f'{name} (L={longest})')
    if b.get('se') and None not in b['se'] and len(b['se']) == len(mid):
      t = sampling.t_quantile(max(int(p['rows'][p['lengths'].index(int(longest))]) - 1, 1))
      half = t * _float(b['se'])
      _band(ax, line, (mid, _float(b['loss']) - half, _float(b['loss']) + half))
  _mark_training(ax, results)
  ax.set_xlabel('token position (buckets of '
                f'{results[0]["perplexity"]["position_bucket"]})')
  ax.set_ylabel('mean loss (nats); shaded: 95% interval')
  legend_beside(ax)
  ax.grid(alpha=0.3)
  return save(fig, path)


def accuracy_heatmaps(results: Sequence[dict], labels: Sequence[str], path: str) -> str | None:
  names = list(dict.fromkeys(n for r in results for n in grids(r)))
  if not names:
    return None
  fig, axes = plt.subplots(len(results), len(names), squeeze=False, layout='constrained',
                           figsize=(2.9 * len(names) + 1.2, 2.4 * len(results) + 0.6))
  image = None
  for i, (r, run_name) in enumerate(zip(results, labels)):
    for j, name in enumerate(names):
      ax = axes[i, j]
      g = grids(r).get(name)
      if i == 0:
        metric = (g.get('primary', 'accuracy') if g else 'accuracy').replace('_', ' ')
        ax.set_title(f'{name} ({metric})', fontsize=8)
      if g is None:
        ax.axis('off')
        continue
      acc_DL = np.asarray([_float(row) for row in g[g.get('primary', 'accuracy')]])
      image = ax.imshow(acc_DL, vmin=0, vmax=1, cmap='viridis', aspect='auto',
                        interpolation='nearest')
      if acc_DL.size <= 60:
        for (d, l), v in np.ndenumerate(acc_DL):
          ax.text(l, d, '-' if np.isnan(v) else f'{v:.2f}', ha='center', va='center',
                  fontsize=6, color='white' if np.isnan(v) or v < 0.6 else 'black')
      ax.set_xticks(range(len(g['lengths'])), [str(x) for x in g['lengths']], fontsize=6)
      depths = ['all' if d is None else f'{d:g}' for d in g['depths']]
      ax.set_yticks(range(len(depths)), depths, fontsize=6)
      if i == len(results) - 1:
        ax.set_xlabel('context length', fontsize=7)
      if j == 0:
        ax.set_ylabel('\n'.join(textwrap.wrap(run_name, 28) + ['depth']), fontsize=7)
  if image is not None:
    fig.colorbar(image, ax=axes, fraction=0.02, pad=0.01)
  return save(fig, path, tight=False)  # the shared colorbar spans all axes


def ruler_average(results: Sequence[dict], labels: Sequence[str], path: str,
                  bands: Sequence | None = None) -> str | None:
  picked = [i for i, r in enumerate(results) if r.get('ruler')]
  if not picked:
    return None
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for i in picked:
    lengths, table = ruler.average_table(results[i]['ruler'])
    [line] = ax.plot(lengths, 100 * _float(table['average']), marker='o', label=labels[i])
    _band(ax, line, bands[i] if bands else None, scale=100)
  if bands and any(bands):
    ax.set_title('shaded: 95% interval (Wilson)', fontsize=8)
  _mark_training(ax, [results[i] for i in picked])
  ax.set_xscale('log', base=2)
  ax.set_ylim(-2, 102)
  ax.set_xlabel('context length (tokens); dashed: positions seen in training')
  ax.set_ylabel('RULER average recall (%)')
  legend_beside(ax)
  ax.grid(alpha=0.3)
  return save(fig, path)


def all_figures(results: Sequence[dict], labels: Sequence[str], out_dir: str,
                bands: dict | None = None) -> list[str]:
  """Every figure; ``bands`` (see :func:`ropex.evaluation.reporting.grouped.bands`; default:
  each result's own, :func:`own_bands`): 95% intervals, one entry per result, shaded around
  the perplexity and RULER curves."""
  if bands is None:
    own = [own_bands(r) for r in results]
    bands = {part: [b[part] for b in own] for part in ('perplexity', 'ruler')}
  paths = [accuracy_heatmaps(results, labels, paths_lib.join(out_dir, 'accuracy.png')),
           ruler_average(results, labels, paths_lib.join(out_dir, 'ruler.png'),
                         bands.get('ruler'))]
  keep = [i for i, r in enumerate(results) if 'perplexity' in r]
  if keep:
    rs, ns = [results[i] for i in keep], [labels[i] for i in keep]
    ppl_bands = [bands['perplexity'][i] for i in keep] if bands.get('perplexity') else None
    paths = [perplexity_vs_length(rs, ns, paths_lib.join(out_dir, 'perplexity.png'), ppl_bands),
             loss_by_position(rs, ns, paths_lib.join(out_dir, 'loss_by_position.png'))] + paths
  return [p for p in paths if p]
