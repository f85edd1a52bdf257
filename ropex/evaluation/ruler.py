"""The RULER-style suite: its tasks (:mod:`ropex.evaluation.ruler_tasks`) as
:class:`ropex.evaluation.grid.Task` s, and RULER's per-length average table.

Scoring (:mod:`ropex.evaluation.grid`): RULER's ``string_match_all`` on a free greedy generation
from the prompt (bounded at the length of the expected answer in tokens), the expected answers
found in any order, as RULER scores these tasks (``scripts/eval/synthetic/constants.py``: niah,
variable_tracking, common_words_extraction and freq_words_extraction all use
``string_match_all``). Decoding: the run's tokenizer (text style) or one bracketed symbol per
token (symbol style, so that ``<w1>`` is not found inside ``<w12>``). The teacher-forced numbers
are kept beside it under their own names. Depth-free tasks (``cwe``, ``fwe``) have the depth
axis ``[None]``.

The table (:func:`average_table`): for every task its primary score at each length averaged over
depths, and the ``average`` row over tasks — RULER's per-length score. A cell whose examples do
not fit the length (a long template with a byte tokenizer at a short length) is ``None``,
with the reason in the grid's ``errors``; an average over tasks is ``None`` unless every task
has a number at that length (as in RULER, where every task runs at every length).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from ropex.evaluation import grid, ruler_tasks, words
from ropex.evaluation.words import Lexicon

TASKS = tuple(ruler_tasks.TASKS)


def match_text(lex: Lexicon):
  """ids -> the text RULER's string match compares (see the module doc)."""
  if lex.style == 'symbol':
    return words.SymbolTokenizer(lex.vocab).match_text
  return lambda ids: lex.decode([int(i) for i in ids])


def task(lex: Lexicon, name: str, **task_kw) -> grid.Task:
  """RULER task ``name`` of the run whose words are ``lex`` (keyword arguments ``task_kw``)."""
  ruler_tasks.check([name])
  make = functools.partial(ruler_tasks.TASKS[name], lex, **task_kw)
  return grid.Task(name, lambda rng, n, depth: make(rng, n, depth), ruler_tasks.has_depth(name),
                   text=match_text(lex), metric='string_match_all')


def tasks(lex: Lexicon, names: Sequence[str]) -> list[grid.Task]:
  return [task(lex, name) for name in ruler_tasks.check(names)]


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def task_means(g: dict) -> list[float | None]:
  """A task's primary score at each length, averaged over its depths."""
  return [_mean(column) for column in zip(*g[g.get('primary', 'recall')])]


def average_table(ruler: dict) -> tuple[list[int], dict[str, list[float | None]]]:
  """``(lengths, {task: primary score per length, ..., 'average': mean over tasks})``."""
  lengths = sorted({L for g in ruler.values() for L in g['lengths']})
  table = {}
  for name, g in ruler.items():
    by_length = dict(zip(g['lengths'], task_means(g)))
    table[name] = [by_length.get(L) for L in lengths]
  table['average'] = [None if any(row[i] is None for row in table.values())
                      else float(np.mean([row[i] for row in table.values()]))
                      for i in range(len(lengths))] if table else []
  return lengths, table


def _metric(results: dict) -> str:
  """The metric of a result's RULER grids (``recall``: teacher-forced, files before 2026-12)."""
  return ' / '.join(dict.fromkeys(g.get('primary', 'recall') for g in results['ruler'].values()))


def _pct(v) -> str:
  return '–' if v is None else f'{100 * v:.1f}'


def markdown(results: Sequence[dict], labels: Sequence[str], trained: int) -> str:
  """One RULER table per run (tasks x lengths, score in %) and the average of every run."""
  with_ruler = [(r, name) for r, name in zip(results, labels) if r.get('ruler')]
  if not with_ruler:
    return ''
  lengths = sorted({L for r, _ in with_ruler for g in r['ruler'].values() for L in g['lengths']})
  header = [f'{L}' + (' *' if L > trained else '') for L in lengths]

  def table(head, rows_):
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    return '\n'.join(lines + ['| ' + ' | '.join(row) + ' |' for row in rows_])

  avg_rows, out = [], []
  for r, name in with_ruler:
    ls, t = average_table(r['ruler'])
    cols = {L: i for i, L in enumerate(ls)}
    cell = lambda row, L: _pct(row[cols[L]]) if L in cols else '–'
    avg_rows.append([name] + [cell(t['average'], L) for L in lengths])
    out += ['', f'RULER ({name}): {_metric(r)} % per task (mean over depths)', '',
            table(['task'] + header, [[k] + [cell(v, L) for L in lengths]
                                      for k, v in t.items()])]
  metric = ' / '.join(dict.fromkeys(_metric(r) for r, _ in with_ruler))
  head = [f'RULER average ({metric} %, mean over tasks; * = beyond the positions seen in '
          'training)', '', table(['run'] + header, avg_rows)]
  return '\n'.join(head + out) + '\n'
