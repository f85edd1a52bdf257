"""Evaluation rows: numpy dicts ``inputs``/``targets``/``positions``/``segment_ids``/``weights``
[N, L] (the data pipeline's layout), where ``L`` is the context length being evaluated.

- :func:`from_documents`: one document of exactly ``L`` tokens per row; position ``t`` predicts
  token ``t + 1``, and the row's weights come from the document's answer mask (a bos token is
  prepended when the run's data did so, as in training).
- :func:`synthetic` — the run's synthetic task mixture, one example filling each row (so a row of
  length ``L`` is ONE context of ``L`` tokens; training rows held several shorter examples).
- :func:`eval_split` — documents of the run's evaluation split (``ropex.data.sources``, the run's
  tokenizer): ``documents`` mode puts the first ``L + 1`` tokens of one long-enough document in
  each row (every row is one full context of ``L`` tokens); ``stream`` mode concatenates
  documents (with their bos/eos) and cuts rows from the stream, so attention crosses document
  boundaries, as in WikiText / PG-19 style evaluations.
- :func:`same_documents` / :func:`prefixes` — the clean length curve: ``count`` documents
  holding at least ``max(lengths) + 1`` tokens are chosen once, and the rows of every length
  are prefixes of exactly those documents (so short and long rows come from the same text; a
  per-length choice of "documents long enough" would mix length with population).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ropex.data import synthetic as synthetic_tasks
from ropex.errors import ConfigError

TEXT_MODES = ('documents', 'stream')


def from_documents(docs: Sequence[tuple[np.ndarray, np.ndarray]], length: int,
                   bos_id: int | None) -> dict[str, np.ndarray]:
  """Rows from ``(tokens_L, answer_L)`` pairs. Without a bos, a document must hold ``L + 1``
  tokens (the first is context only); with one, ``L`` (bos is input 0)."""
  N = len(docs)
  need = length if bos_id is not None else length + 1
  tokens_NM = np.zeros((N, length + 1), np.int32)
  answer_NM = np.zeros((N, length + 1), bool)
  for i, (tokens, answer) in enumerate(docs):
    if len(tokens) != need or len(answer) != need:
      raise ValueError(f'document {i} has {len(tokens)} tokens; rows of length {length} '
                       f'need {need}')
    tokens_NM[i, length + 1 - need:] = tokens
    answer_NM[i, length + 1 - need:] = answer
    if bos_id is not None:
      tokens_NM[i, 0] = bos_id
  return {
      'inputs': tokens_NM[:, :-1], 'targets': tokens_NM[:, 1:],
      'positions': np.broadcast_to(np.arange(length, dtype=np.int32), (N, length)).copy(),
      'segment_ids': np.ones((N, length), np.int32),
      'weights': answer_NM[:, 1:].astype(np.float32),
  }


def doc_length(length: int, bos_id: int | None) -> int:
  """Tokens a generator must produce for a row of ``length`` (see :func:`from_documents`)."""
  return length if bos_id is not None else length + 1


def synthetic(tasks: Sequence[str], length: int, count: int, seed: Sequence[int],
              bos_id: int | None, all_tokens: bool = False, **task_kw) -> dict[str, np.ndarray]:
  """``count`` rows, row ``i`` one example of ``tasks[i % len(tasks)]`` (keyword arguments
  ``task_kw``); weights are the answer tokens (every token if ``all_tokens``). Row ``i`` depends
  only on ``(*seed, length, i)``."""
  docs = []
  n = doc_length(length, bos_id)
  for i in range(count):
    rng = np.random.default_rng((*seed, length, i))
    tokens, answer = synthetic_tasks.generate(tasks[i % len(tasks)], rng, n, **task_kw)
    docs.append((tokens, np.ones_like(answer) if all_tokens else answer))
  rows = from_documents(docs, length, bos_id)
  task_N = np.arange(count) % len(tasks)
  rows['task_ids'] = np.where(rows['weights'] > 0, task_N[:, None], -1).astype(np.int32)
  return rows


def examples(doc) -> list[tuple[np.ndarray, np.ndarray]]:
  """A ``ropex.data.sources.Document`` as ``(tokens_N, weights_N)`` per example it holds
  (``weights_N[j]``: the weight of token ``j`` as a target; the first token has none)."""
  starts = [0] if doc.starts_S is None else [int(s) for s in doc.starts_S]
  bounds = starts + [len(doc.inputs_P)]
  weights_P = (np.ones(len(doc.targets_P), np.float32) if doc.weights_P is None
               else np.asarray(doc.weights_P, np.float32))
  out = []
  for a, b in zip(bounds[:-1], bounds[1:]):
    if b > a:
      tokens_N = np.append(doc.inputs_P[a:b], doc.targets_P[b - 1]).astype(np.int32)
      out.append((tokens_N, np.concatenate([[0.0], weights_P[a:b]]).astype(np.float32)))
  return out


def eval_split(config, length: int, count: int, mode: str = 'documents',
               max_documents: int = 0) -> dict[str, np.ndarray]:
  """``count`` rows of ``length`` tokens from the run's eval split: :func:`from_source` over
  ``ropex.data.sources.documents(config, 'eval', tokenizer)``."""
  from ropex.data import sources, tokenizers  # pylint: disable=g-import-not-at-top
  docs = sources.documents(config, 'eval', tokenizers.make_tokenizer(config.data))
  return from_source(docs, length, count, mode, max_documents)


def from_source(docs, length: int, count: int, mode: str = 'documents',
                max_documents: int = 0) -> dict[str, np.ndarray]:
  """Rows from ``docs[0], docs[1], ...`` (Documents), in ``mode`` (see the module doc).

  ``documents`` mode keeps only examples of at least ``length + 1`` tokens (so every row is a
  full context of ``length`` tokens); both modes read at most ``max_documents`` (default
  ``100 * count``) documents, so fewer than ``count`` rows (even 0) may come back."""
  if mode not in TEXT_MODES:
    raise ConfigError(f'--text_mode={mode!r} is not allowed; allowed: {", ".join(TEXT_MODES)}')
  budget = int(max_documents) or 100 * int(count)
  need = length + 1
  rows_tokens, rows_weights = [], []
  if mode == 'documents':
    for g in range(budget):
      for tokens_N, weights_N in examples(docs[g]):
        if len(tokens_N) >= need and len(rows_tokens) < count:
          rows_tokens.append(tokens_N[:need])
          rows_weights.append(weights_N[:need])
      if len(rows_tokens) == count:
        break
  else:
    stream_t, stream_w, held, g = [], [], 0, 0
    while held < need * count and g < budget:
      for tokens_N, weights_N in examples(docs[g]):
        stream_t.append(tokens_N)
        stream_w.append(weights_N)
        held += len(tokens_N)
      g += 1
    tokens = np.concatenate(stream_t) if stream_t else np.zeros(0, np.int32)
    weights = np.concatenate(stream_w) if stream_w else np.zeros(0, np.float32)
    for i in range(min(count, len(tokens) // need)):
      rows_tokens.append(tokens[i * need:(i + 1) * need])
      rows_weights.append(weights[i * need:(i + 1) * need])
  N = len(rows_tokens)
  tokens_NM = np.asarray(rows_tokens, np.int32).reshape(N, need)
  weights_NM = np.asarray(rows_weights, np.float32).reshape(N, need)
  return {
      'inputs': tokens_NM[:, :-1], 'targets': tokens_NM[:, 1:],
      'positions': np.broadcast_to(np.arange(length, dtype=np.int32), (N, length)).copy(),
      'segment_ids': np.ones((N, length), np.int32),
      'weights': weights_NM[:, 1:],
  }


def same_documents(docs, min_tokens: int, count: int, max_documents: int = 0) -> dict:
  """The first ``count`` examples of ``docs[0], docs[1], ...`` with at least ``min_tokens``
  tokens (reading at most ``max_documents``, default ``100 * count``, documents):
  ``{'ids': ['g' or 'g.k'], 'tokens': [...], 'weights': [...], 'scanned': documents read}``
  (``g``: the document number, ``k``: the example within it when it holds several)."""
  budget = int(max_documents) or 100 * int(count)
  out = {'ids': [], 'tokens': [], 'weights': [], 'scanned': 0, 'min_tokens': int(min_tokens)}
  for g in range(budget):
    if len(out['ids']) == count:
      break
    held = examples(docs[g])
    out['scanned'] = g + 1
    for k, (tokens_N, weights_N) in enumerate(held):
      if len(tokens_N) >= min_tokens and len(out['ids']) < count:
        out['ids'].append(str(g) if len(held) == 1 else f'{g}.{k}')
        out['tokens'].append(tokens_N[:min_tokens])
        out['weights'].append(weights_N[:min_tokens])
  return out


def prefixes(chosen: dict, length: int) -> dict[str, np.ndarray]:
  """Rows of ``length`` tokens: the first ``length + 1`` tokens of every chosen document
  (:func:`same_documents`), with their ids in ``doc_ids``."""
  need = length + 1
  if need > chosen['min_tokens']:
    raise ValueError(f'length {length} needs documents of {need} tokens; chosen for '
                     f'{chosen["min_tokens"]}')
  N = len(chosen['ids'])
  tokens_NM = np.asarray([t[:need] for t in chosen['tokens']], np.int32).reshape(N, need)
  weights_NM = np.asarray([w[:need] for w in chosen['weights']], np.float32).reshape(N, need)
  return {
      'inputs': tokens_NM[:, :-1], 'targets': tokens_NM[:, 1:],
      'positions': np.broadcast_to(np.arange(length, dtype=np.int32), (N, length)).copy(),
      'segment_ids': np.ones((N, length), np.int32),
      'weights': weights_NM[:, 1:], 'doc_ids': list(chosen['ids']),
  }
