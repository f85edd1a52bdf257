"""Markdown tables of several evaluation results, one row per result (no seed groups; those
are :mod:`ropex.evaluation.reporting.grouped`): perplexity by context length, then one table
per retrieval kind / task with its number at each length averaged over depths (the full
length x depth grids are in the JSON files and the heatmaps), then RULER's tables.

Every number carries its 95% interval: perplexity ``± h`` (the loss's Student-t interval over
units, through ``exp`` by the delta method) with the units behind it, proportions ``[low,
high]`` (Wilson). See :mod:`ropex.evaluation.reporting.values`.
"""

from __future__ import annotations

from typing import Sequence

from ropex.evaluation import ruler
from ropex.evaluation.reporting import values

INTERVALS = ('Intervals: 95%. Perplexity: ± the loss\'s Student-t interval over units '
             '(documents, rows or examples; ratio estimator), through exp (delta method); '
             'accuracies: [Wilson bounds] over the examples of a cell.')


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
  return '\n'.join(lines)


def length_header(lengths, train_positions: int) -> list[str]:
  return [f'{L}' + (' *' if L > train_positions else '') for L in lengths]


def units_text(counts: Sequence[int]) -> str:
  counts = sorted({int(c) for c in counts if c})
  if not counts:
    return '–'
  return str(counts[0]) if len(counts) == 1 else f'{counts[0]}–{counts[-1]}'


def perplexity_table(results: Sequence[dict], labels: Sequence[str], trained: int) -> list[str]:
  with_ppl = [(r, name) for r, name in zip(results, labels) if 'perplexity' in r]
  if not with_ppl:
    return []
  lengths = sorted({L for r, _ in with_ppl for L in r['perplexity']['lengths']})
  data = ', '.join(sorted({r['perplexity']['data'] for r, _ in with_ppl}))
  rows = []
  for r, name in with_ppl:
    rows.append([name, values.describe_pe(r), str(r['run']['step'])] +
                [values.perplexity_text(values.loss_at(r, L)) for L in lengths] +
                [units_text(r['perplexity']['rows'])])
  return [f'Perplexity by context length ({data} data; * = beyond the {trained} positions '
          'seen in training; units: rows scored per length)', '',
          table(['run', 'PE', 'step'] + length_header(lengths, trained) + ['units'], rows)]


def grid_tables(results: Sequence[dict], labels: Sequence[str], trained: int) -> list[str]:
  out = []
  names = list(dict.fromkeys(n for r in results for n in values.grids(r)
                             if not n.startswith('ruler: ')))   # RULER: its own tables
  for name in names:
    lengths = sorted({L for r in results for L in values.grids(r).get(name, {})
                      .get('lengths', [])})
    at = values.grid_at(name)
    rows = [[run_name] + [values.proportion_text(at(r, L)) for L in lengths]
            for r, run_name in zip(results, labels)]
    metric = values.primary(next(values.grids(r)[name] for r in results
                                 if name in values.grids(r))).replace('_', ' ')
    out += ['', f'{name}: {metric} (mean over depths) [95% Wilson interval]', '',
            table(['run'] + length_header(lengths, trained), rows)]
  return out


def ruler_average(results: Sequence[dict], labels: Sequence[str], trained: int) -> list[str]:
  picked = [(r, name) for r, name in zip(results, labels) if r.get('ruler')]
  if not picked:
    return []
  lengths = sorted({L for r, _ in picked for g in r['ruler'].values() for L in g['lengths']})
  rows = [[name] + [values.proportion_text(values.ruler_at(r, L)) for L in lengths]
          for r, name in picked]
  return ['', 'RULER average recall (fraction, mean over tasks) [95% Wilson interval, n = '
          'tasks x examples]', '', table(['run'] + length_header(lengths, trained), rows)]


def markdown(results: Sequence[dict], labels: Sequence[str]) -> str:
  trained = min(r['run']['train_positions'] for r in results)
  out = perplexity_table(results, labels, trained)
  out += grid_tables(results, labels, trained)
  out += ruler_average(results, labels, trained)
  per_task = ruler.markdown(results, labels, trained)
  if per_task:
    out += ['', per_task]
  return '\n'.join([INTERVALS, ''] + out).strip('\n') + '\n'
