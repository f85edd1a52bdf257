"""The one path from a generated task to its score grid (depth x length), for every task family:
the synthetic training tasks (:mod:`ropex.evaluation.tasks`), retrieval (needle, passkey:
:mod:`ropex.evaluation.retrieval`) and the RULER-style tasks (:mod:`ropex.evaluation.ruler`).

A :class:`Task` makes one example ``(tokens_n, answer_ids_n)`` of exactly ``n`` tokens from
``(rng, n, depth)``: ``answer_ids_n[t] = r >= 0`` marks the tokens of expected answer ``r``,
``-2`` unscored text inside the answer region (separators such as ``,``), ``-1`` the prompt.
The answer region starts at the first token that is not ``-1``; everything before it is the
prompt. Example ``i`` of a cell depends on ``(seed, task name, length, i)`` only, so every depth
of a length moves the same needles through the same haystack.

Metrics of a cell (each a number in [0, 1], ``None`` when the cell could not be generated):

- ``string_match_all`` (or ``string_match_part``; tasks with a ``text`` function): RULER's
  metric (:mod:`ropex.evaluation.generation`) on a FREE greedy generation from the prompt,
  bounded at the length of the example's answer region in tokens; the prediction and the
  expected answers are decoded with the task's ``text``, answers are found in any order.
- ``teacher_forced_accuracy``: the fraction of examples whose answer tokens are ALL the model's
  argmax when the correct answer text is fed in (teacher forcing: each answer conditioned on
  the correct previous answers, in the example's fixed order); ``teacher_forced_token_accuracy``
  (per answer token) and ``teacher_forced_recall`` (per expected answer, averaged over examples).
  These are this project's numbers, not RULER's.

``primary`` names the number that tables and figures show: the task's RULER metric when it has
one, else ``teacher_forced_token_accuracy`` (the synthetic training tasks, scored as the
training metrics are).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Callable, Sequence

import numpy as np

from ropex.errors import ConfigError
from ropex.evaluation import generation, rows as rows_lib

TF = ('teacher_forced_accuracy', 'teacher_forced_token_accuracy', 'teacher_forced_recall')
PROMPT, UNSCORED = -1, -2


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  make: Callable[..., tuple[np.ndarray, np.ndarray]]   # (rng, n, depth) -> (tokens, answer_ids)
  has_depth: bool
  text: Callable[[np.ndarray], str] | None = None       # ids -> text; None: teacher-forced only
  metric: str = 'string_match_all'

  @property
  def primary(self) -> str:
    return self.metric if self.text is not None else 'teacher_forced_token_accuracy'

  @property
  def metrics(self) -> tuple[str, ...]:
    return ((self.metric,) if self.text is not None else ()) + TF


def examples(task: Task, length: int, depth: float | None, count: int, seed: int,
             bos_id: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
  """``count`` ``(tokens, answer_ids)`` filling rows of ``length`` tokens (see the module doc)."""
  n = rows_lib.doc_length(length, bos_id)
  salt = zlib.crc32(task.name.encode())
  out = []
  for i in range(count):
    tokens, ids = task.make(np.random.default_rng((seed, salt, length, i)), n, depth)
    if tokens.shape != (n,) or ids.shape != (n,):
      raise ValueError(f'{task.name} made {tokens.shape} tokens, expected {n}')
    out.append((tokens.astype(np.int32), ids.astype(np.int32)))
  return out


def rows(task: Task, length: int, depth: float | None, count: int, seed: int,
         bos_id: int | None) -> dict[str, np.ndarray]:
  """Rows (:func:`ropex.evaluation.rows.from_documents`, answer tokens weighted) plus
  ``answer_ids`` [N, L] aligned with ``targets``."""
  docs = examples(task, length, depth, count, seed, bos_id)
  out = rows_lib.from_documents([(t, ids >= 0) for t, ids in docs], length, bos_id)
  ids_NM = np.full((len(docs), length + 1), PROMPT, np.int32)
  for i, (tokens, ids) in enumerate(docs):
    ids_NM[i, length + 1 - len(tokens):] = ids
  out['answer_ids'] = ids_NM[:, 1:]
  return out


def teacher_forced(correct_NT: np.ndarray, answer_ids_NT: np.ndarray) -> dict:
  """The teacher-forced numbers of one cell (see the module doc)."""
  answer_NT = answer_ids_NT >= 0
  has_N = answer_NT.any(axis=1)
  exact_N = np.all(correct_NT | ~answer_NT, axis=1)[has_N]
  recall_N = [np.mean([correct_T[ids_T == r].all() for r in np.unique(ids_T[ids_T >= 0])])
              for correct_T, ids_T in zip(correct_NT[has_N], answer_ids_NT[has_N])]
  tokens = int(answer_NT.sum())
  return {'teacher_forced_accuracy': float(exact_N.mean()) if exact_N.size else None,
          'teacher_forced_token_accuracy': float(correct_NT[answer_NT].mean()) if tokens else None,
          'teacher_forced_recall': float(np.mean(recall_N)) if recall_N else None,
          'examples': int(has_N.sum()), 'answer_tokens': tokens}


def generation_inputs(rows_: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """``(full_NM, ids_NM, prompt_len_N, budget_N)``: every row's whole token sequence
  (``M = L + 1``) and answer ids, where its answer region starts, and its length."""
  full_NM = np.concatenate([rows_['inputs'][:, :1], rows_['targets']], axis=1)
  N = len(full_NM)
  ids_NM = np.concatenate([np.full((N, 1), PROMPT, np.int32), rows_['answer_ids']], axis=1)
  region_NM = ids_NM != PROMPT
  if not region_NM.any(axis=1).all():
    raise ValueError('every row needs an answer region to be scored by generation')
  prompt_len_N = region_NM.argmax(axis=1).astype(np.int32)
  return full_NM, ids_NM, prompt_len_N, full_NM.shape[1] - prompt_len_N


def generated(scorer, rows_: dict, task: Task) -> tuple[list[str], list[list[str]]]:
  """``(predictions, references)``: the decoded free generation of every row and the decoded
  expected answers."""
  full_NM, ids_NM, prompt_len_N, budget_N = generation_inputs(rows_)
  width = int(prompt_len_N.max())
  tokens_NB = scorer.generate(full_NM[:, :width], prompt_len_N, int(budget_N.max()))
  preds, refs = [], []
  for i in range(len(full_NM)):
    preds.append(generation.postprocess(task.text(tokens_NB[i, :budget_N[i]])))
    ids = ids_NM[i]
    refs.append([task.text(full_NM[i][ids == r]).strip() for r in np.unique(ids[ids >= 0])])
  return preds, refs


def score_cell(scorer, rows_: dict, task: Task) -> dict:
  """Every metric of one cell's rows (see the module doc)."""
  _, correct_NT = scorer.score(rows_)
  cell = teacher_forced(correct_NT, np.asarray(rows_['answer_ids']))
  if task.text is not None:
    preds, refs = generated(scorer, rows_, task)
    fn = generation.METRICS[task.metric]
    cell[task.metric] = float(np.mean([fn(p, r) for p, r in zip(preds, refs)]))
  return cell


def sweep(scorer, tasks: Sequence[Task], lengths: Sequence[int], depths: Sequence[float],
          count: int, seed: int, bos_id: int | None,
          progress: Callable[[str], None] | None = None, label: str = '') -> dict:
  """``{task name: grid}``: every metric as ``[depth][length]`` over ``depths`` (``[None]`` for
  a task without a depth) x ``lengths``, with ``primary``, ``examples`` and ``errors`` (why a
  cell could not be generated: it is ``None``)."""
  out = {}
  for task in tasks:
    task_depths = list(depths) if task.has_depth else [None]
    g = {'lengths': [int(x) for x in lengths], 'depths': task_depths, 'primary': task.primary,
         **{k: [] for k in task.metrics}, 'examples': [], 'errors': {}}
    for depth in task_depths:
      row = {k: [] for k in task.metrics + ('examples',)}
      for length in lengths:
        try:
          cell = score_cell(scorer, rows(task, int(length), depth, count, seed, bos_id), task)
        except ConfigError as e:
          g['errors'][f'{length}@{depth}'] = str(e)
          cell = {'examples': 0}
        for k in row:
          row[k].append(cell.get(k))
        if progress:
          progress(f'{label}{task.name} L={length} depth={depth}: {cell.get(task.primary)}')
      for k, v in row.items():
        g[k].append(v)
    out[task.name] = g
  return out
