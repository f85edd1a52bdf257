"""Retrieval over length x depth: a needle in the synthetic token space, and the text passkey.

``needle`` (for models trained on the synthetic tasks; the ``assoc_recall`` format)::

  M_assoc [FILLER] k_1 v_1 ... k_P v_P  QUERY k* v*

``P`` key/value pairs fill the context; the needle pair ``(k*, v*)`` is pair number
``round(depth * (P - 1))`` (depth 0: the start of the context, 1: just before the query) and
its key occurs nowhere else. As in ``assoc_recall``, keys and values come from disjoint halves
of the ``vocab`` content tokens (the run's ``data.synthetic_vocab``); distractor keys are the
other keys, drawn with replacement. The answer is the single token ``v*`` (chance: 2 / vocab).

``passkey`` (for models trained on text; Mohtashami & Jaggi, 2023): an instruction, a haystack
of repeated filler sentences, the needle sentence ``The pass key is 71432. Remember it. 71432
is the pass key.`` inserted at the sentence boundary nearest to ``depth`` of the haystack (the
haystack starts with a partial sentence so that it has exactly the tokens needed), then
``What is the pass key? The pass key is`` followed by the answer `` 71432``, all tokenized with
the run's tokenizer and cut to exactly the context length. The answer tokens are scored.

Examples depend on ``(seed, kind, length, index)`` only, so every depth of a length moves the
same needle through the same haystack. Scoring: :mod:`ropex.evaluation.grid`.
"""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import numpy as np

from ropex.data import synthetic
from ropex.evaluation import grid, rows as rows_lib
from ropex.errors import ConfigError

KINDS = ('needle', 'passkey')
PASSKEY_INTRO = ('There is an important piece of information hidden inside a lot of irrelevant '
                 'text. Find it and memorize it. I will quiz you about it.\n')
PASSKEY_FILLER = ('The grass is green. ', 'The sky is blue. ', 'The sun is yellow. ',
                  'Here we go. ', 'There and back again. ')
PASSKEY_NEEDLE = 'The pass key is {key}. Remember it. {key} is the pass key. '
PASSKEY_QUESTION = '\nWhat is the pass key? The pass key is'
PASSKEY_ANSWER = ' {key}'


def _depth(depth: float) -> float:
  if not 0.0 <= depth <= 1.0:
    raise ConfigError(f'--depths has {depth!r}; allowed: numbers in [0, 1]')
  return float(depth)


def needle_example(rng: np.random.Generator, length: int, depth: float, vocab: int = 16):
  """``(tokens_L int32, answer_L bool)``; see the module doc."""
  depth = _depth(depth)
  if length < 6:
    raise ConfigError(f'needle needs length >= 6 (a pair and the query), got {length}')
  if not 4 <= vocab <= synthetic.MAX_VOCAB:
    raise ConfigError(f'needle vocab={vocab!r} must be in [4, {synthetic.MAX_VOCAB}]')
  P = (length - 4) // 2
  perm = rng.permutation(vocab)
  keys, value_tokens = perm[:vocab // 2], perm[vocab // 2:]
  key, value = int(keys[0]), int(value_tokens[rng.integers(len(value_tokens))])
  keys_P = keys[1:][rng.integers(0, len(keys) - 1, size=P)]
  values_P = value_tokens[rng.integers(0, len(value_tokens), size=P)]
  j = int(round(depth * (P - 1)))
  keys_P[j], values_P[j] = key, value
  pairs = np.stack([keys_P, values_P], axis=1).reshape(-1) + synthetic.CONTENT
  head = [synthetic.TASK_MARKER['assoc_recall']] + [synthetic.FILLER] * ((length - 4) % 2)
  tail = [synthetic.QUERY, synthetic.CONTENT + key, synthetic.CONTENT + value]
  tokens = np.concatenate([head, pairs, tail]).astype(np.int32)
  answer = np.zeros(length, bool)
  answer[-1] = True
  return tokens, answer


def passkey_example(tokenizer, rng: np.random.Generator, length: int, depth: float,
                    digits: int = 5):
  """``(tokens_L int32, answer_L bool, key str)``; see the module doc."""
  depth = _depth(depth)
  key = str(int(rng.integers(10 ** (digits - 1), 10 ** digits)))
  enc = lambda text: np.asarray(tokenizer.encode(text), np.int32)
  intro, needle = enc(PASSKEY_INTRO), enc(PASSKEY_NEEDLE.format(key=key))
  question, answer = enc(PASSKEY_QUESTION), enc(PASSKEY_ANSWER.format(key=key))
  room = length - len(intro) - len(needle) - len(question) - len(answer)
  if room < 0:
    raise ConfigError(f'passkey needs length >= {length - room} tokens with this tokenizer, '
                      f'got {length}')
  sentences, total = [], 0
  while total < room:
    sentence = enc(PASSKEY_FILLER[len(sentences) % len(PASSKEY_FILLER)])
    sentences.append(sentence)
    total += len(sentence)
  # The haystack is the LAST ``room`` tokens of the tiled sentences (a partial sentence at its
  # start), so both of its ends and every sentence end are clean insertion points.
  hay = np.concatenate(sentences)[total - room:] if sentences else np.zeros(0, np.int32)
  bounds = np.maximum(np.cumsum([0] + [len(s) for s in sentences]) - (total - room), 0)
  cut = int(bounds[np.argmin(np.abs(bounds - depth * room))])
  tokens = np.concatenate([intro, hay[:cut], needle, hay[cut:], question, answer])
  mask = np.zeros(length, bool)
  mask[length - len(answer):] = True
  return tokens.astype(np.int32), mask, key


def retrieval_rows_fn(kind: str, count: int, seed: int, bos_id: int | None, tokenizer=None,
                      vocab: int = 16):
  """``(length, depth) -> rows`` of ``count`` examples of ``kind``."""
  if kind not in KINDS:
    raise ConfigError(f'--retrieval names {kind!r}; allowed: {", ".join(KINDS)}, auto, none')
  salt = zlib.crc32(kind.encode())

  def rows_fn(length: int, depth: float):
    n = rows_lib.doc_length(length, bos_id)
    docs = []
    for i in range(count):
      rng = np.random.default_rng((seed, salt, length, i))
      if kind == 'needle':
        docs.append(needle_example(rng, n, depth, vocab))
      else:
        docs.append(passkey_example(tokenizer, rng, n, depth)[:2])
    return rows_lib.from_documents(docs, length, bos_id)

  return rows_fn


def retrieval_sweep(scorer, kinds: Sequence[str], lengths: Sequence[int],
                    depths: Sequence[float], count: int, seed: int, bos_id: int | None,
                    tokenizer=None, vocab: int = 16,
                    progress: Callable[[str], None] | None = None) -> dict:
  """``{kind: accuracy grid}`` over depths x lengths."""
  return {kind: grid.accuracy_grid(scorer, retrieval_rows_fn(kind, count, seed, bos_id,
                                                             tokenizer, vocab),
                                   lengths, [_depth(d) for d in depths], progress, name=kind)
          for kind in kinds}
