"""Evaluation results of runs that differ only by seed, as one entry with intervals
(``ropex.evaluate compare`` / ``ropex.study`` when some results share a seed group).

A group is the results whose ``run.group`` (the config without seeds, see
:mod:`ropex.evaluation.intervals`) and evaluation-time overrides are equal. Every number a
table shows is computed per seed, then combined with both sources of variance
(:mod:`ropex.evaluation.sampling`):

- loss / perplexity at a length: the mean over seeds of the per-seed loss; when every seed
  was scored on the same rows (equal content digests), ``SE^2 = s^2 / k + SE_units^2`` (the
  spread over the ``k`` seeds plus the rows' sampling error, which the seeds share: the ratio
  SE of the seed-averaged per-unit losses), Welch–Satterthwaite df; otherwise ``s^2 / k``
  (``k - 1`` df), whose spread already holds each seed's sampling error. Shown as
  perplexity ``exp(mean loss) ± exp(mean loss) h`` (a geometric mean of the seeds'
  perplexities).
- accuracies, RULER recall: the mean over seeds with a Wilson interval at the effective count
  (:func:`ropex.evaluation.sampling.proportion`: within-run bound plus ``s^2 / k``), inside
  [0, 1].

A cell within noise of the best group at that length (best = lowest loss / highest accuracy,
picked after the fact, so the ``m`` comparisons with it are Holm-adjusted,
:func:`ropex.evaluation.intervals.holm`; test: :func:`ropex.evaluation.intervals.estimate_test`)
is marked ``≈``. Figures use :func:`mean_result` with :func:`bands`.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Callable, Sequence

import numpy as np

from ropex.evaluation import intervals, ruler, sampling
from ropex.evaluation.reporting import tables, values
from ropex.evaluation.sampling import Estimate

NOISE_MARK = '≈'
HEAD = ('Runs that differ only by seed: the mean over the seeds (n = seeds) with its 95% '
        'interval, combining the spread over seeds and the rows\' sampling error; perplexity: '
        '± (Student-t / Welch–Satterthwaite, through exp); accuracies: [Wilson bounds at the '
        f'effective count]. {NOISE_MARK}: within noise of the best run at that length (a '
        "t-test on the two estimates, Holm-adjusted over the column's comparisons with the "
        'best, adjusted p >= 0.05). * = beyond the positions seen in training.')


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
  label = values.label(dict(results[0], run=dict(results[0]['run'], name=base)))
  return label + (f' (n={len(results)} seeds)' if len(results) > 1 else '')


# --- one number of a group, with its interval ----------------------------------------------
def shared_units(group: Sequence[dict], L: int) -> Estimate | None:
  """The ratio estimate of the seed-averaged per-unit losses when every seed was scored on
  the same rows at ``L`` (else None)."""
  us = [values.units(r, L) for r in group]
  if any(u is None for u in us) or len({tuple(u['digest']) for u in us}) != 1:
    return None
  return sampling.ratio(np.mean([u['loss'] for u in us], axis=0), us[0]['weight'])


def loss_at(group: Sequence[dict], L: int) -> Estimate | None:
  if len(group) == 1:
    return values.loss_at(group[0], L)
  per_seed = [values.loss_at(r, L) for r in group]
  return sampling.combine_seeds([None if e is None else e.value for e in per_seed],
                                shared_units(group, L))


def proportion_at(value: Callable, count: Callable) -> Callable:
  def at(group: Sequence[dict], L: int) -> Estimate | None:
    counts = [count(r, L) for r in group]
    return sampling.proportion([value(r, L) for r in group], min(counts) if counts else 0)
  return at


def cells(groups, at: Callable, lengths, lower_is_better: bool):
  """``[[Estimate or None per length] per group]`` and the within-noise marks (same shape)."""
  ests = [[at(g, L) for L in lengths] for g in groups]
  marks = [[False] * len(lengths) for _ in groups]
  for j in range(len(lengths)):
    scored = [(i, row[j]) for i, row in enumerate(ests) if row[j] is not None]
    if len(scored) < 2:
      continue
    best, best_est = (min if lower_is_better else max)(scored, key=lambda t: t[1].value)
    tests = [(i, intervals.estimate_test(e, best_est)) for i, e in scored if i != best]
    tests = [(i, p) for i, p in tests if p is not None]
    for (i, _), adjusted in zip(tests, intervals.holm([p for _, p in tests])):
      marks[i][j] = adjusted >= intervals.ALPHA
  return ests, marks


def _text(est: Estimate | None, mark: bool, show: Callable) -> str:
  if est is None:
    return '–'
  return show(est) + (f' {NOISE_MARK}' if mark else '')


def _table(title, labels, lengths, trained, ests, marks, show) -> list[str]:
  header = ['run'] + tables.length_header(lengths, trained)
  rows = [[name] + [_text(e, m, show) for e, m in zip(row, mrow)]
          for name, row, mrow in zip(labels, ests, marks)]
  return ['', title, '', tables.table(header, rows)]


def markdown(results: Sequence[dict]) -> tuple[str, list[list[dict]], list[str]]:
  """(tables, groups, group labels)."""
  groups = [[results[i] for i in idx] for idx in group_indices(results)]
  labels = [group_label(g) for g in groups]
  trained = min(r['run']['train_positions'] for r in results)
  out = [HEAD]
  ppl_lengths = sorted({L for r in results if 'perplexity' in r
                        for L in r['perplexity']['lengths']})
  if ppl_lengths:
    ests, marks = cells(groups, loss_at, ppl_lengths, lower_is_better=True)
    out += _table('Perplexity by context length', labels, ppl_lengths, trained, ests, marks,
                  values.perplexity_text)
  names = list(dict.fromkeys(n for r in results for n in values.grids(r)
                             if not n.startswith('ruler: ')))
  for name in names:
    lengths = sorted({L for r in results for L in values.grids(r).get(name, {})
                      .get('lengths', [])})
    at = proportion_at(values.grid_value(name), values.grid_examples(name))
    ests, marks = cells(groups, at, lengths, lower_is_better=False)
    out += _table(f'{name} (mean over depths)', labels, lengths, trained, ests, marks,
                  values.proportion_text)
  ruler_lengths = sorted({L for r in results for g in (r.get('ruler') or {}).values()
                          for L in g['lengths']})
  if ruler_lengths:
    at = proportion_at(values.ruler_value, values.ruler_examples)
    ests, marks = cells(groups, at, ruler_lengths, lower_is_better=False)
    out += _table('RULER average recall (fraction, mean over tasks)', labels, ruler_lengths,
                  trained, ests, marks, values.proportion_text)
  return '\n'.join(out) + '\n', groups, labels


# --- figures -------------------------------------------------------------------------------
def _mean_list(lists):
  rows = [[np.nan if v is None else v for v in vals] for vals in lists]
  if len({len(r) for r in rows}) != 1:
    return lists[0]
  with np.errstate(all='ignore'):
    mean = np.nanmean(np.asarray(rows, np.float64), axis=0) if rows[0] else np.zeros(0)
  return [None if np.isnan(v) else float(v) for v in np.atleast_1d(mean)]


def mean_result(group: Sequence[dict]) -> dict:
  """The first result with every number of the figures averaged over the group's seeds
  (perplexity: ``exp`` of the mean loss, as in the tables)."""
  out = copy.deepcopy(group[0])
  if len(group) == 1:
    return out
  if 'perplexity' in out and all('perplexity' in r for r in group):
    p = out['perplexity']
    p['loss'] = _mean_list([r['perplexity']['loss'] for r in group])
    p['perplexity'] = [None if v is None else (math.exp(v) if v < 700 else float('inf'))
                       for v in p['loss']]
    p.pop('units', None)   # per-seed; the mean has none
    for L, b in p['by_position'].items():
      b['loss'] = _mean_list([r['perplexity']['by_position'][L]['loss'] for r in group])
      b.pop('se', None)
  for part in ('retrieval', 'tasks', 'ruler'):
    for name, g in (out.get(part) or {}).items():
      key = values.primary(g)
      g[key] = [_mean_list([r[part][name][key][d] for r in group if name in r.get(part, {})])
                for d in range(len(g[key]))]
  return out


def bands(groups: Sequence[Sequence[dict]]) -> dict:
  """``{'perplexity': [(lengths, low, high) or None per group], 'ruler': [...]}``: the
  tables' 95% intervals (one seed: the run's own)."""
  out = {'perplexity': [], 'ruler': []}
  ruler_group = proportion_at(values.ruler_value, values.ruler_examples)
  for g in groups:
    ppl_lengths = sorted({L for r in g if 'perplexity' in r for L in r['perplexity']['lengths']})
    ruler_lengths = sorted({L for r in g if r.get('ruler')
                            for L in ruler.average_table(r['ruler'])[0]})
    for part, lengths, at, band in (
        ('perplexity', ppl_lengths, loss_at, values.perplexity_band),
        ('ruler', ruler_lengths, ruler_group, lambda e: (e.low, e.high))):
      keep = [(L, at(g, L)) for L in lengths]
      keep = [(L, band(e)) for L, e in keep if e is not None and e.low is not None]
      out[part].append(([L for L, _ in keep], [b[0] for _, b in keep],
                        [b[1] for _, b in keep]) if keep else None)
  return out
