"""The RULER-style suite: its tasks (:mod:`ropex.evaluation.ruler_tasks`) swept over length x
depth and scored as RULER scores them, with RULER's per-length average table.

Scoring. RULER's metric for these tasks is string-match recall: per example, the fraction of
the expected answers found in the model's output, averaged over examples (x 100 in its tables).
Here the model is teacher-forced through the answer text (RULER's answer prefix is the end
of the question) and an expected answer counts as found when every one of its tokens is the
model's argmax — what greedy decoding would write (answers come in a fixed order: see the
tasks). Cells are :func:`ropex.evaluation.grid.accuracy_grid` grids whose primary number is
``recall`` (in [0, 1]). Depth-free tasks (``cwe``, ``fwe``) have the depth axis ``[None]``.

The table (:func:`average_table`): for every task its recall at each length averaged over
depths, and the ``average`` row over tasks — RULER's per-length score. A cell whose examples do
not fit the length (a long template with a byte tokenizer at a short length) is ``None``,
with the reason in the grid's ``errors``; an average over tasks is ``None`` unless every task
has a number at that length (as in RULER, where every task runs at every length).
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import numpy as np

from ropex.evaluation import grid, rows as rows_lib, ruler_tasks
from ropex.evaluation.words import Lexicon

TASKS = tuple(ruler_tasks.TASKS)


def examples(lex: Lexicon, name: str, length: int, depth: float | None, count: int, seed: int,
             bos_id: int | None, **task_kw) -> list[tuple[np.ndarray, np.ndarray]]:
  """``count`` ``(tokens, answer_ids)`` of ``name`` filling rows of ``length`` tokens; example
  ``i`` depends on ``(seed, name, length, i)`` only (not on the depth)."""
  ruler_tasks.check([name])
  n = rows_lib.doc_length(length, bos_id)
  salt = zlib.crc32(name.encode())
  out = []
  for i in range(count):
    rng = np.random.default_rng((seed, salt, length, i))
    out.append(ruler_tasks.TASKS[name](lex, rng, n, depth, **task_kw))
  return out


def rows(lex: Lexicon, name: str, length: int, depth: float | None, count: int, seed: int,
         bos_id: int | None, **task_kw) -> dict[str, np.ndarray]:
  """Rows (:func:`ropex.evaluation.rows.from_documents`) plus ``answer_ids`` [N, L]: the
  expected answer each target token belongs to (-1: not scored)."""
  docs = examples(lex, name, length, depth, count, seed, bos_id, **task_kw)
  out = rows_lib.from_documents([(t, ids >= 0) for t, ids in docs], length, bos_id)
  ids_NM = np.full((len(docs), length + 1), -1, np.int32)
  for i, (tokens, ids) in enumerate(docs):
    ids_NM[i, length + 1 - len(tokens):] = ids
  out['answer_ids'] = ids_NM[:, 1:]
  return out


def sweep(scorer, lex: Lexicon, names: Sequence[str], lengths: Sequence[int],
          depths: Sequence[float], count: int, seed: int, bos_id: int | None,
          progress: Callable[[str], None] | None = None) -> dict:
  """``{task: grid}`` (primary ``recall``) over depths x lengths (``[None]`` for depth-free
  tasks)."""
  out = {}
  for name in ruler_tasks.check(names):
    task_depths = list(depths) if ruler_tasks.has_depth(name) else [None]
    rows_fn = lambda L, d, name=name: rows(lex, name, L, d, count, seed, bos_id)
    out[name] = grid.accuracy_grid(scorer, rows_fn, lengths, task_depths, progress,
                                   name=f'ruler {name}', primary='recall')
    out[name]['lexicon'] = {'style': lex.style, 'haystack': lex.haystack}
  return out


def _mean(values) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def task_means(g: dict) -> list[float | None]:
  """A task's recall at each length, averaged over its depths."""
  return [_mean(column) for column in zip(*g['recall'])]


def average_table(ruler: dict) -> tuple[list[int], dict[str, list[float | None]]]:
  """``(lengths, {task: recall per length, ..., 'average': mean over tasks})``."""
  lengths = sorted({L for g in ruler.values() for L in g['lengths']})
  table = {}
  for name, g in ruler.items():
    by_length = dict(zip(g['lengths'], task_means(g)))
    table[name] = [by_length.get(L) for L in lengths]
  table['average'] = [None if any(row[i] is None for row in table.values())
                      else float(np.mean([row[i] for row in table.values()]))
                      for i in range(len(lengths))] if table else []
  return lengths, table


def _pct(v) -> str:
  return '–' if v is None else f'{100 * v:.1f}'


def markdown(results: Sequence[dict], labels: Sequence[str], trained: int) -> str:
  """One RULER table per run (tasks x lengths, recall in %) and the average of every run."""
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
    out += ['', f'RULER ({name}): recall % per task (mean over depths)', '',
            table(['task'] + header, [[k] + [cell(v, L) for L in lengths]
                                      for k, v in t.items()])]
  head = ['RULER average (recall %, mean over tasks; * = beyond the positions seen in '
          'training)', '', table(['run'] + header, avg_rows)]
  return '\n'.join(head + out) + '\n'
