"""Retrieval over length x depth: a needle in the synthetic token space, and the text passkey.

``needle`` (for models trained on the synthetic tasks; the ``assoc_recall`` format)::

  M [FILLER*] k_1 v_1 ... k_P v_P  QUERY k* v*

Key/value pairs fill the context; the needle pair ``(k*, v*)`` is pair number
``1 + round(depth * (P - 3))``: depth 0 is just after the first pair, depth 1 just before the
last, so the first and the last pair are always distractors. Keys and values come from
disjoint halves of the ``vocab`` content tokens (the run's ``data.synthetic_vocab``), as in
``assoc_recall``. The needle key occurs nowhere else (distractor keys: the other keys, drawn
with replacement). The values are drawn from the same distribution as the answer and carry no
information about it: ``P`` is a multiple of the ``V_v = vocab - vocab // 2`` value tokens
(FILLER pads the rest) and every value occurs exactly ``c = P / V_v`` times, in a random order;
``v*`` is the value of the needle pair. Cheap heuristics, exactly: a uniform guess over the
values scores ``1 / V_v``; copying the first value, the last value, or the most frequent value
(all are tied; ties go to the first) scores ``(c - 1) / (P - 1)`` (just below ``1 / V_v``).
Known limit: the needle key is the only key that occurs once, so "answer the value of the
rarest key" solves it without reading the question (``niah_single`` of the RULER suite has no
such shortcut).

``passkey`` (for models trained on text; Mohtashami & Jaggi, 2023): an instruction, a haystack
of repeated filler sentences, the needle sentence ``The pass key is 71432. Remember it. 71432
is the pass key.`` inserted at the sentence boundary nearest to ``depth`` of the haystack (the
haystack starts with a partial sentence so that it has exactly the tokens needed), then
``What is the pass key? The pass key is`` followed by the answer `` 71432``, all tokenized with
the run's tokenizer and cut to exactly the context length. It is the literature's test and is
kept as such, but it does NOT measure retrieval among distractors: the key is the only number
in the prompt, so copying the only number scores 1.0 (use the RULER ``niah_*`` tasks).

Both are :class:`ropex.evaluation.grid.Task` s scored with RULER's ``string_match_all`` on a
free generation (one answer) and the teacher-forced numbers (:mod:`ropex.evaluation.grid`).
"""

from __future__ import annotations

import numpy as np

from ropex.data import synthetic
from ropex.evaluation import grid, words
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
  if not 4 <= vocab <= synthetic.MAX_VOCAB:
    raise ConfigError(f'needle vocab={vocab!r} must be in [4, {synthetic.MAX_VOCAB}]')
  n_values = vocab - vocab // 2
  P = (length - 4) // 2 // n_values * n_values
  if P < max(3, n_values):
    raise ConfigError(f'needle needs length >= {4 + 2 * max(3, n_values)} at vocab {vocab} '
                      f'(every value at least once, and distractors on both sides); got {length}')
  perm = rng.permutation(vocab)
  keys, value_tokens = perm[:vocab // 2], np.sort(perm[vocab // 2:])
  values_P = value_tokens[rng.permutation(np.repeat(np.arange(n_values), P // n_values))]
  keys_P = keys[1:][rng.integers(0, len(keys) - 1, size=P)]
  # the needle is pair j0's value (drawn before the depth matters), moved to pair j by a swap:
  # every depth moves the same needle through the same pairs
  j0, j = int(rng.integers(0, P)), 1 + int(round(depth * (P - 3)))
  keys_P[[j0, j]], values_P[[j0, j]] = keys_P[[j, j0]], values_P[[j, j0]]
  keys_P[j] = keys[0]
  pairs = np.stack([keys_P, values_P], axis=1).reshape(-1) + synthetic.CONTENT
  head = [synthetic.TASK_MARKER['assoc_recall']] + [synthetic.FILLER] * (length - 4 - 2 * P)
  tail = [synthetic.QUERY, synthetic.CONTENT + keys[0], synthetic.CONTENT + values_P[j]]
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


def task(kind: str, tokenizer=None, vocab: int = 16) -> grid.Task:
  """``kind`` as a :class:`ropex.evaluation.grid.Task` (``passkey`` needs the run's
  ``tokenizer``)."""
  if kind not in KINDS:
    raise ConfigError(f'--retrieval names {kind!r}; allowed: {", ".join(KINDS)}, auto, none')

  def make(rng, n, depth):
    if kind == 'needle':
      tokens, answer = needle_example(rng, n, depth, vocab)
    else:
      tokens, answer = passkey_example(tokenizer, rng, n, depth)[:2]
    return tokens, np.where(answer, 0, grid.PROMPT).astype(np.int32)

  text = (words.SymbolTokenizer(vocab).match_text if kind == 'needle'
          else lambda ids: tokenizer.decode([int(i) for i in ids]))
  return grid.Task(kind, make, has_depth=True, text=text)
