"""Evaluation results of runs that differ only by seed, as one entry with intervals
(``ropex.evaluate compare`` when some results share a seed group).

A group is the results whose ``run.group`` (the config without seeds, see
:mod:`ropex.evaluation.intervals`) and evaluation-time overrides are equal. Every number a
table shows — perplexity at a length, a grid's accuracy at a length averaged over depths, the
RULER average at a length — is computed per seed, then reduced to the mean ± the half-width of
the 95% Student-t interval over the seeds. A cell within noise of the best group at that
length (Welch's t-test, p >= 0.05; best = lowest perplexity / highest accuracy) is marked ``≈``.
Figures use :func:`mean_result` (per-seed values averaged) with the intervals as bands.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Callable, Sequence

import numpy as np

from ropex.evaluation import compare, figures, intervals, ruler, suite

NOISE_MARK = '≈'


def group_indices(results: Sequence[dict]) -> list[list[int]]:
  """Indices of results in one seed group: same ``run.group`` and overrides, and pairwise
  different seeds (results without a ``group``, or two evaluations of the same seed: each on
  its own)."""
  keys = [json.dumps([r['run'].get('group', f'#{i}'), r.get('overrides', {})], sort_keys=True,
                     default=str) for i, r in enumerate(results)]
  out = []
  for idx in intervals.groups(keys):
    seeds = [json.dumps(results[i]['run'].get('seeds'), sort_keys=True) for i in idx]
    out += [idx] if len(set(seeds)) == len(seeds) else [[i] for i in idx]
  return sorted(out)


def group_label(results: Sequence[dict]) -> str:
  base = re.sub(r'_s\d+$', '', results[0]['run']['name'])
  label = suite.label(dict(results[0], run=dict(results[0]['run'], name=base)))
  return label + (f' (n={len(results)} seeds)' if len(results) > 1 else '')


# --- per-seed numbers ----------------------------------------------------------------------
def perplexity_at(r: dict, L: int):
  p = r.get('perplexity')
  return dict(zip(p['lengths'], p['perplexity'])).get(L) if p else None


def grid_at(name: str) -> Callable[[dict, int], float | None]:
  def value(r: dict, L: int):
    g = figures.grids(r).get(name)
    return dict(zip(g['lengths'], compare.mean_over_depths(g))).get(L) if g else None
  return value


def ruler_at(r: dict, L: int):
  if not r.get('ruler'):
    return None
  lengths, table = ruler.average_table(r['ruler'])
  return dict(zip(lengths, table['average'])).get(L)


def cells(groups: Sequence[Sequence[dict]], value, lengths, lower_is_better: bool):
  """``[[interval or None per length] per group]`` and the within-noise marks (same shape)."""
  ivals = [[intervals.mean_interval([value(r, L) for r in g]) for L in lengths] for g in groups]
  marks = [[False] * len(lengths) for _ in groups]
  for j, L in enumerate(lengths):
    scored = [(i, row[j]) for i, row in enumerate(ivals) if row[j] is not None]
    if len(scored) < 2:
      continue
    best = (min if lower_is_better else max)(scored, key=lambda t: t[1].mean)[0]
    for i, _ in scored:
      test = intervals.welch([value(r, L) for r in groups[i]], [value(r, L) for r in groups[best]])
      marks[i][j] = i != best and test is not None and test.within_noise
  return ivals, marks


def _text(interval, mark: bool, digits: int) -> str:
  if interval is None:
    return '–'
  return interval.text(digits) + (f' (n={interval.n})' if interval.n > 1 else '') + (
      f' {NOISE_MARK}' if mark else '')


def _table(title, labels, lengths, trained, ivals, marks, digits) -> list[str]:
  header = ['run'] + [f'{L}' + (' *' if L > trained else '') for L in lengths]
  lines = ['', title, '', '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for name, row, mrow in zip(labels, ivals, marks):
    lines.append('| ' + ' | '.join([name] + [_text(v, m, digits) for v, m in zip(row, mrow)])
                 + ' |')
  return lines


def markdown(results: Sequence[dict]) -> tuple[str, list[list[dict]], list[str]]:
  """(tables, groups, group labels)."""
  groups = [[results[i] for i in idx] for idx in group_indices(results)]
  labels = [group_label(g) for g in groups]
  trained = min(r['run']['train_positions'] for r in results)
  out = [f'Runs that differ only by seed: mean ± half-width of the 95% Student-t interval over '
         f'the seeds (n = seeds); {NOISE_MARK}: within noise of the best run at that length '
         "(Welch's t-test, p >= 0.05). * = beyond the positions seen in training."]
  ppl_lengths = sorted({L for r in results if 'perplexity' in r
                        for L in r['perplexity']['lengths']})
  if ppl_lengths:
    ivals, marks = cells(groups, perplexity_at, ppl_lengths, lower_is_better=True)
    out += _table('Perplexity by context length', labels, ppl_lengths, trained, ivals, marks, 3)
  names = list(dict.fromkeys(n for r in results for n in figures.grids(r)
                             if not n.startswith('ruler: ')))
  for name in names:
    lengths = sorted({L for r in results for L in figures.grids(r).get(name, {})
                      .get('lengths', [])})
    ivals, marks = cells(groups, grid_at(name), lengths, lower_is_better=False)
    out += _table(f'{name} (mean over depths)', labels, lengths, trained, ivals, marks, 2)
  ruler_lengths = sorted({L for r in results for g in (r.get('ruler') or {}).values()
                          for L in g['lengths']})
  if ruler_lengths:
    ivals, marks = cells(groups, ruler_at, ruler_lengths, lower_is_better=False)
    out += _table('RULER average recall (fraction, mean over tasks)', labels, ruler_lengths,
                  trained, ivals, marks, 2)
  return '\n'.join(out) + '\n', groups, labels


def _mean_list(lists):
  rows = [[np.nan if v is None else v for v in values] for values in lists]
  if len({len(r) for r in rows}) != 1:
    return lists[0]
  with np.errstate(all='ignore'):
    mean = np.nanmean(np.asarray(rows, np.float64), axis=0) if rows[0] else np.zeros(0)
  return [None if np.isnan(v) else float(v) for v in np.atleast_1d(mean)]


def mean_result(group: Sequence[dict]) -> dict:
  """The first result with every number of the figures averaged over the group's seeds."""
  out = copy.deepcopy(group[0])
  if len(group) == 1:
    return out
  if 'perplexity' in out and all('perplexity' in r for r in group):
    for key in ('perplexity', 'loss'):
      out['perplexity'][key] = _mean_list([r['perplexity'][key] for r in group])
    for L, b in out['perplexity']['by_position'].items():
      b['loss'] = _mean_list([r['perplexity']['by_position'][L]['loss'] for r in group])
  for part in ('retrieval', 'tasks', 'ruler'):
    for name, g in (out.get(part) or {}).items():
      key = compare.primary(g)
      g[key] = [_mean_list([r[part][name][key][d] for r in group if name in r.get(part, {})])
                for d in range(len(g[key]))]
  return out


def bands(groups: Sequence[Sequence[dict]]) -> dict:
  """``{'perplexity': [(lengths, low, high) or None per group], 'ruler': [...]}``."""
  out = {'perplexity': [], 'ruler': []}
  for g in groups:
    for part, value in (('perplexity', perplexity_at), ('ruler', ruler_at)):
      if len(g) < 2:
        out[part].append(None)
        continue
      if part == 'perplexity':
        lengths = sorted({L for r in g if 'perplexity' in r for L in r['perplexity']['lengths']})
      else:
        lengths = sorted({L for r in g for t in (r.get('ruler') or {}).values()
                          for L in t['lengths']})
      ivals = [intervals.mean_interval([value(r, L) for r in g]) for L in lengths]
      keep = [(L, iv) for L, iv in zip(lengths, ivals) if iv is not None and iv.low is not None]
      out[part].append(([L for L, _ in keep], [iv.low for _, iv in keep],
                        [iv.high for _, iv in keep]) if keep else None)
  return out
