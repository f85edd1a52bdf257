"""Synthetic diagnostic tasks for positional-encoding research, generated from a seed.

Every task is a function ``(rng, length, **kw) -> (tokens_L int32, answer_L bool)``; call it
through :func:`generate`. ``answer_L[i]`` marks tokens that are determined by the earlier tokens
(the model is scored on predicting them from position ``i - 1``). Tokens live in their own small
id range above the special ids (0 pad, 1-2 bos/eos for both the byte and the Gemma tokenizers):

  ids 3..6  task markers (first token of every example, so the model knows the task)
  id  7     QUERY marker, id 8 FILLER (pads the context up to the queries; never an answer)
  ids 16..  content tokens: ``CONTENT + [0, vocab)``, ``vocab <= MAX_VOCAB`` (largest id 207)

Every task takes ``vocab`` (content tokens, default 16; the synthetic source passes
``data.synthetic_vocab``: evaluate a trained model with the vocab it was trained on). With the
defaults (examples of 14-20 tokens, vocab 16) the tiny preset with RoPE learns all four tasks to
>= 98% answer accuracy in 300 steps at lr 3e-3; NoPE stays at ~45-65%.

Tasks and their keyword arguments (all optional):

- ``copy_offset`` — ``M a_1..a_k a_1..a_k a_1..`` (a random block of ``offset`` tokens repeated
  cyclically; tokens drawn with replacement). Every token after the first block equals the token
  exactly ``offset`` positions back: a fixed relative offset, solvable by one positional head
  (an induction head is ambiguous where the block repeats a token). kw: ``offset=8``.
- ``prev_token`` — ``M x_1..x_n FILLER* (Q x_j x_{j-1})*``: distinct context tokens, then queries
  of distinct items in random order, all at context indices of one parity (so no answer token
  is ever a queried item, and the query order carries no positional shortcut): after ``Q x_j`` the answer is the token that precedes ``x_j`` in the context (content
  match, then a one-position positional step). kw: ``context`` (n, default ~a quarter of the
  length, at most ``vocab``), ``depth`` (in [0, 1]: a single query, of the item at that fraction
  of the context; default: as many queries as fit). Longer examples add FILLER between the
  context and the queries, so ``length`` sweeps the lookup distance.
- ``assoc_recall`` — ``M k_1 v_1 .. k_n v_n FILLER* (Q k_j v_j)*``: distinct keys, random values;
  after ``Q k_j`` the answer is ``v_j`` (content matching at a distance). kw: ``pairs`` (n, default
  ~a quarter of the length, at most ``vocab / 2``; values never equal a key), ``depth`` (as
  above).
- ``induction`` — ``M f.. s_1..s_m g.. s_1..s_m``: a random span appears, random filler, then the
  span again; tokens 2..m of the second occurrence are answers (each continues a bigram seen
  earlier, at an example-dependent distance, so a fixed offset does not solve it). Span tokens
  are distinct from each other and from the filler when ``m < vocab``. kw: ``span`` (m, default
  random in [length/4, length/2]), ``gap`` (filler tokens between the occurrences, default
  random).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ropex.errors import ConfigError

TASK_MARKER = {'copy_offset': 3, 'prev_token': 4, 'assoc_recall': 5, 'induction': 6}
QUERY = 7
FILLER = 8
CONTENT = 16
MAX_VOCAB = 192
MAX_ID = CONTENT + MAX_VOCAB - 1
MIN_LENGTH = 12   # shortest example every task can produce with its default kwargs

Task = Callable[..., tuple[np.ndarray, np.ndarray]]


def _content(vocab: int) -> int:
  if not 2 <= vocab <= MAX_VOCAB:
    raise ConfigError(f'synthetic vocab={vocab!r} must be in [2, {MAX_VOCAB}]')
  return vocab


def _depth_index(n_items: int, depth: float, low: int = 0) -> np.ndarray:
  """The one item index in [low, n_items) at fraction ``depth`` of the context."""
  if not 0.0 <= depth <= 1.0:
    raise ConfigError(f'synthetic depth={depth!r} must be in [0, 1]')
  return np.array([low + int(round(depth * (n_items - 1 - low)))])


def copy_offset(rng, length: int, offset: int = 8, vocab: int = 16):
  _content(vocab)
  if length < offset + 2:
    raise ConfigError(f'copy_offset needs length >= offset + 2 = {offset + 2}, got {length}')
  block = CONTENT + rng.integers(0, vocab, size=offset)
  tokens = np.empty(length, np.int32)
  tokens[0] = TASK_MARKER['copy_offset']
  tokens[1:] = np.resize(block, length - 1)
  answer = np.zeros(length, bool)
  answer[1 + offset:] = True
  return tokens, answer


def _queries(length: int, head: np.ndarray, n_queries: int, items: np.ndarray,
             answers: np.ndarray):
  """``head``, FILLER up to ``length``, then ``(QUERY, item, answer)`` triples at the end (so the
  query-to-context distance grows with ``length``)."""
  tokens = np.full(length, FILLER, np.int32)
  tokens[:len(head)] = head
  answer = np.zeros(length, bool)
  start = length - 3 * n_queries
  triples = tokens[start:].reshape(n_queries, 3)
  triples[:, 0], triples[:, 1], triples[:, 2] = QUERY, items, answers
  answer[start + 2::3] = True
  return tokens, answer


def prev_token(rng, length: int, context: int | None = None, depth: float | None = None,
               vocab: int = 16):
  _content(vocab)
  n = context if context is not None else min(vocab, max(2, (length + 2) // 4))
  if not 2 <= n <= vocab or length < n + 4:
    raise ConfigError(f'prev_token needs 2 <= context <= vocab ({vocab}) and length >= '
                      f'context + 4; got context={n}, length={length}')
  ctx = CONTENT + rng.permutation(vocab)[:n]
  if depth is None:  # distinct same-parity items in random order: no answer is ever queried
    pool = np.arange(1 + int(rng.integers(0, 2)) if n > 2 else 1, n, 2)
    idx = rng.permutation(pool)[:min(len(pool), (length - 1 - n) // 3)]
  else:
    idx = _depth_index(n, depth, low=1)
  head = np.concatenate([[TASK_MARKER['prev_token']], ctx])
  return _queries(length, head, len(idx), ctx[idx], ctx[idx - 1])


def assoc_recall(rng, length: int, pairs: int | None = None, depth: float | None = None,
                 vocab: int = 16):
  _content(vocab)
  n = pairs if pairs is not None else min(vocab // 2, max(1, (length - 1) // 4))
  if not 1 <= n <= vocab // 2 or length < 2 * n + 4:
    raise ConfigError(f'assoc_recall needs 1 <= pairs <= vocab / 2 ({vocab // 2}) and length >= '
                      f'2 * pairs + 4; got pairs={n}, length={length}')
  perm = CONTENT + rng.permutation(vocab)
  keys, values = perm[:n], perm[n:][rng.integers(0, vocab - n, size=n)]
  if depth is None:
    idx = rng.integers(0, n, size=(length - 1 - 2 * n) // 3)
  else:
    idx = _depth_index(n, depth)
  head = np.empty(1 + 2 * n, np.int32)
  head[0], head[1::2], head[2::2] = TASK_MARKER['assoc_recall'], keys, values
  return _queries(length, head, len(idx), keys[idx], values[idx])


def induction(rng, length: int, span: int | None = None, gap: int | None = None,
              vocab: int = 16):
  _content(vocab)
  room = length - 1
  m = span if span is not None else int(rng.integers(max(2, room // 4), max(3, room // 2 + 1)))
  if m < 2 or 2 * m > room:
    raise ConfigError(f'induction needs 2 <= span <= (length - 1) / 2; got span={m}, '
                      f'length={length}')
  free = room - 2 * m
  b = gap if gap is not None else int(rng.integers(0, free + 1))
  if not 0 <= b <= free:
    raise ConfigError(f'induction gap={b} must be in [0, {free}] for span={m}, length={length}')
  if m < vocab:
    perm = rng.permutation(vocab)
    spans, rest = perm[:m], perm[m:]
    filler = rest[rng.integers(0, len(rest), size=free)]
  else:
    spans = rng.integers(0, vocab, size=m)
    filler = rng.integers(0, vocab, size=free)
  a = free - b
  tokens = np.concatenate([[TASK_MARKER['induction']], CONTENT + filler[:a], CONTENT + spans,
                           CONTENT + filler[a:], CONTENT + spans]).astype(np.int32)
  answer = np.zeros(length, bool)
  answer[length - m + 1:] = True
  return tokens, answer


TASKS: dict[str, Task] = {
    'copy_offset': copy_offset, 'prev_token': prev_token, 'assoc_recall': assoc_recall,
    'induction': induction,
}


def generate(task: str, rng: np.random.Generator, length: int, **kw):
  """One example of ``task``: ``(tokens_L int32, answer_L bool)``; kwargs per task above."""
  if task not in TASKS:
    raise ConfigError(f'synthetic task {task!r} is not known; allowed: {", ".join(TASKS)}')
  tokens, answer = TASKS[task](rng, int(length), **kw)
  assert tokens.shape == (length,) and answer.shape == (length,), (task, tokens.shape, length)
  return tokens.astype(np.int32), answer
