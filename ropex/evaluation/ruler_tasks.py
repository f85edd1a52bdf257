"""The RULER-style tasks (Hsieh et al., 2024, "RULER: What's the real context size of your
long-context language models?"), generated offline for any run (:mod:`ropex.evaluation.words`).

Every task is ``(lex, rng, n, depth, **kw) -> (tokens_n int32, answer_ids_n int32)``:
exactly ``n`` tokens; ``answer_ids_n[t] = r`` marks the tokens of expected answer ``r``
(``-1`` elsewhere). A prompt is ``intro, haystack with the task's segments inserted, question,
answers``; the haystack fills exactly the room the rest leaves. ``depth`` (0: the start of the
haystack, 1: just before the question) places the segment the question is about at the
haystack boundary nearest to that fraction; other segments sit at boundaries drawn from
``rng``, so the same ``rng`` gives the same example at every depth with only that segment moved.

- ``niah_single``: one needle "One of the special magic numbers for KEY is: VALUE." (RULER's
  wording); the answer is VALUE.
- ``niah_multikey``: ``needles`` (4) needles with distinct keys; the question asks for the one
  at ``depth``.
- ``niah_multivalue``: ``values`` (4) needles with the same key and distinct values; the answers
  are all of them, in context order (the first at ``depth``).
- ``niah_multiquery``: ``queries`` (4) needles with distinct keys, all asked; answers in the
  question's order (its first key at ``depth``).
- ``vt`` (variable tracking): "VAR X1 = 12345. VAR X2 = X1. ..." — a chain of ``hops`` (4)
  assignments after the first; the answers are the ``hops + 1`` variable names in chain order.
  ``depth`` places the first statement; the rest follow at boundaries drawn after it.
- ``cwe`` (common words): a numbered list where ``common`` (4) words appear ``common_freq`` (4)
  times each and as many other words as fit appear ``uncommon_freq`` (1) times each; answers:
  the common words, in order of first appearance. No depth: the list ends just before the
  question (filler, if any, comes before it).
- ``fwe`` (frequent words): words drawn from a Zipf law (``alpha`` 2, as RULER) over as many
  words as fit; answers: the three most frequent, most frequent first (examples are redrawn
  until the top four counts are distinct). No depth.

In the ``symbol`` style (synthetic runs) template text is dropped: a needle is ``key value``,
a statement ``var value``, the question ``<Q> key`` (multi-query: ``<Q> key`` before each
answer), the list plain words; the intro is the ``assoc_recall`` marker.
"""

from __future__ import annotations

import collections
from typing import Callable, Sequence

import numpy as np

from ropex.evaluation.words import Lexicon
from ropex.errors import ConfigError

NIAH_INTRO = ('Some special magic numbers are hidden within the following text. Make sure to '
              'memorize it. I will quiz you about the numbers afterwards.\n')
NIAH_NEEDLE = 'One of the special magic numbers for {key} is: {value}. '
NIAH_ONE = ('\nWhat is the special magic number for {key} mentioned in the provided text? The '
            'special magic number for {key} mentioned in the provided text is')
NIAH_ALL = ('\nWhat are all the special magic numbers for {key} mentioned in the provided text? '
            'The special magic numbers for {key} mentioned in the provided text are')
VT_INTRO = 'Memorize and track the chain(s) of variable assignment hidden in the following text.\n'
VT_STATEMENT = 'VAR {name} = {value}. '
VT_QUESTION = ('\nQuestion: Find all variables that are assigned the value {value} in the text '
               'above. Answer: According to the chain(s) of variable assignment in the text '
               'above, {n} variables are assigned the value {value}, they are:')
CWE_INTRO = ('Below is a numbered list of words. In these words, some appear more often than '
             'others. Memorize the ones that appear most often.\n')
CWE_QUESTION = ('\nQuestion: What are the {n} most common words in the above list? Answer: The '
                'top {n} words that appear most often in the list are:')
FWE_INTRO = ('Read the following coded text and track the frequency of each coded word. Find the '
             'three most frequently appeared coded words.\n')
FWE_QUESTION = ('\nQuestion: Do not provide any explanation. What are the three most frequently '
                'appeared words in the above coded text? Answer: According to the coded text '
                'above, the three most frequently appeared words are:')

Answer = tuple[str, str]   # (unscored text before the answer, the answer text)


def _check_depth(depth: float | None) -> float:
  if depth is None or not 0.0 <= float(depth) <= 1.0:
    raise ConfigError(f'--depths has {depth!r}; allowed: numbers in [0, 1]')
  return float(depth)


def _spread(b: np.ndarray, H: int, depth: float, k: int, rng) -> np.ndarray:
  """Segment 0 at the boundary nearest ``depth * H``, the other ``k - 1`` at random ones."""
  first = b[np.argmin(np.abs(b - depth * H))]
  return np.concatenate([[first], b[rng.integers(0, len(b), size=k - 1)]])


def _chain(b: np.ndarray, H: int, depth: float, k: int, rng) -> np.ndarray:
  """Segment 0 at ``depth``, the others at random boundaries after it, in segment order."""
  first = b[np.argmin(np.abs(b - depth * H))]
  later = b[b >= first]
  return np.sort(np.concatenate([[first], later[rng.integers(0, len(later), size=k - 1)]]))


def compose(lex: Lexicon, rng, n: int, intro: str, segments: Sequence[str], depth: float,
            question: str, answers: Callable[[Sequence[int]], Sequence[Answer]],
            place=_spread) -> tuple[np.ndarray, np.ndarray]:
  """``intro``, a haystack with the ``segments`` inserted where ``place`` puts them,
  ``question``, then ``answers(order)`` (``order``: the segments in context order; each
  answer's prefix is unscored, and the answers' total length must not depend on ``order``).
  Exactly ``n`` tokens."""
  intro_t, question_t = lex.tokens(intro), lex.tokens(question)
  seg_t = [lex.tokens(s) for s in segments]
  sizing = [lex.tokens(t) for pair in answers(range(len(segments))) for t in pair]
  fixed = len(intro_t) + len(question_t) + sum(map(len, seg_t + sizing))
  if fixed > n:
    raise ConfigError(f'this task needs at least {fixed} tokens with this tokenizer; the '
                      f'context has {n}')
  hay = lex.make_haystack(rng, n - fixed)
  at = place(hay.boundaries, len(hay.tokens_H), depth, len(seg_t), rng)
  order = [int(i) for i in np.argsort(at, kind='stable')]
  pieces, cut = [intro_t], 0
  for i in order:
    pieces += [hay.tokens_H[cut:at[i]], seg_t[i]]
    cut = at[i]
  pieces += [hay.tokens_H[cut:], question_t]
  ids = [np.full(sum(map(len, pieces)), -1, np.int32)]
  for r, (p, a) in enumerate(answers(order)):
    p_t, a_t = lex.tokens(p), lex.tokens(a)
    pieces += [p_t, a_t]
    ids += [np.full(len(p_t), -1, np.int32), np.full(len(a_t), r, np.int32)]
  tokens, answer_ids = np.concatenate(pieces).astype(np.int32), np.concatenate(ids)
  if len(tokens) != n:
    raise ValueError(f'composed {len(tokens)} tokens, expected {n} (answers whose length '
                     'depends on their order?)')
  return tokens, answer_ids


def _sym(lex: Lexicon) -> bool:
  return lex.style == 'symbol'


def _intro(lex, text: str) -> str:
  return '<M>' if _sym(lex) else text


def _needle(lex, key, value) -> str:
  return f'{key} {value} ' if _sym(lex) else NIAH_NEEDLE.format(key=key, value=value)


def _listed(lex, values: Sequence[str], sep: str = ',') -> list[Answer]:
  """Answers as RULER writes them: `` a, b, c`` (``sep`` between); symbols: ``a b c``."""
  if _sym(lex):
    return [('', v) for v in values]
  return [('' if i == 0 else sep, ' ' + v) for i, v in enumerate(values)]


def _fixed(answers: list[Answer]) -> Callable[[Sequence[int]], list[Answer]]:
  return lambda order: answers


def niah_single(lex, rng, n, depth):
  key, value = lex.keys(rng, 1)[0], lex.numbers(rng, 1)[0]
  question = f'<Q> {key}' if _sym(lex) else NIAH_ONE.format(key=key)
  return compose(lex, rng, n, _intro(lex, NIAH_INTRO), [_needle(lex, key, value)],
                 _check_depth(depth), question, _fixed(_listed(lex, [value])))


def niah_multikey(lex, rng, n, depth, needles: int = 4):
  keys, values = lex.keys(rng, needles), lex.numbers(rng, needles)
  question = f'<Q> {keys[0]}' if _sym(lex) else NIAH_ONE.format(key=keys[0])
  return compose(lex, rng, n, _intro(lex, NIAH_INTRO),
                 [_needle(lex, k, v) for k, v in zip(keys, values)], _check_depth(depth),
                 question, _fixed(_listed(lex, [values[0]])))


def niah_multivalue(lex, rng, n, depth, values: int = 4):
  key, vals = lex.keys(rng, 1)[0], lex.numbers(rng, values)
  question = f'<Q> {key}' if _sym(lex) else NIAH_ALL.format(key=key)
  return compose(lex, rng, n, _intro(lex, NIAH_INTRO), [_needle(lex, key, v) for v in vals],
                 _check_depth(depth), question,
                 lambda order: _listed(lex, [vals[i] for i in order]))


def niah_multiquery(lex, rng, n, depth, queries: int = 4):
  keys, values = lex.keys(rng, queries), lex.numbers(rng, queries)
  if _sym(lex):
    question = f'<Q> {keys[0]}'
    answers = [('' if i == 0 else f'<Q> {k}', v) for i, (k, v) in enumerate(zip(keys, values))]
  else:
    question = NIAH_ALL.format(key=', '.join(keys[:-1]) + ' and ' + keys[-1])
    answers = _listed(lex, values)
  return compose(lex, rng, n, _intro(lex, NIAH_INTRO),
                 [_needle(lex, k, v) for k, v in zip(keys, values)], _check_depth(depth),
                 question, _fixed(answers))


def vt(lex, rng, n, depth, hops: int = 4):
  names, value = lex.variables(rng, hops + 1), lex.numbers(rng, 1)[0]
  sources = [value] + names[:-1]
  if _sym(lex):
    statements = [f'{a} {b} ' for a, b in zip(names, sources)]
    question = f'<Q> {value}'
  else:
    statements = [VT_STATEMENT.format(name=a, value=b) for a, b in zip(names, sources)]
    question = VT_QUESTION.format(value=value, n=hops + 1)
  return compose(lex, rng, n, _intro(lex, VT_INTRO), statements, _check_depth(depth), question,
                 _fixed(_listed(lex, names, sep='')), place=_chain)


def _item(lex, i: int, word: str, numbered: bool) -> str:
  if _sym(lex):
    return f'{word} '
  return f'{i + 1}. {word} ' if numbered else f'{word} '


def _pool(lex) -> int:
  """Distinct list words available: the value half of the symbols, or 4000 pseudo-words."""
  return lex.vocab - lex.vocab // 2 if _sym(lex) else 4000


def cwe(lex, rng, n, depth=None, common: int = 4, common_freq: int = 4, uncommon_freq: int = 1):
  del depth   # the list always ends just before the question
  if common_freq <= uncommon_freq:
    raise ConfigError(f'cwe common_freq={common_freq} must exceed uncommon_freq={uncommon_freq}')
  pool = lex.words(rng, _pool(lex))
  common_w, rare_w = pool[:common], pool[common:]
  question = '<Q>' if _sym(lex) else CWE_QUESTION.format(n=common)
  intro = _intro(lex, CWE_INTRO)
  answers_len = sum(len(lex.tokens(t)) for pair in _listed(lex, common_w) for t in pair)
  room = n - len(lex.tokens(intro)) - len(lex.tokens(question)) - answers_len
  # item costs at the widest numbering (5 digits), so the list fits whatever its order
  cost = lambda w: len(lex.tokens(_item(lex, 99_998, w, True)))
  need = common_freq * sum(cost(w) for w in common_w)
  rare_cum = np.cumsum([uncommon_freq * cost(w) for w in rare_w])
  n_rare = int(np.searchsorted(rare_cum, room - need, side='right'))
  items = [w for w in common_w for _ in range(common_freq)]
  items += [w for w in rare_w[:n_rare] for _ in range(uncommon_freq)]
  items = [items[i] for i in rng.permutation(len(items))]
  seen = list(dict.fromkeys(w for w in items if w in common_w))
  listing = ''.join(_item(lex, i, w, True) for i, w in enumerate(items))
  return compose(lex, rng, n, intro, [listing], 1.0, question, _fixed(_listed(lex, seen)))


def fwe(lex, rng, n, depth=None, alpha: float = 2.0, distinct: int = 100, tries: int = 100):
  del depth   # the text always ends just before the question
  question = '<Q>' if _sym(lex) else FWE_QUESTION
  intro = _intro(lex, FWE_INTRO)
  m = min(_pool(lex), int(distinct))
  pool = lex.words(rng, m)
  cost = max(len(lex.tokens(_item(lex, 0, w, False))) for w in pool)
  answers_len = 3 * max(len(lex.tokens(' ' + w)) for w in pool)
  count = (n - len(lex.tokens(intro)) - len(lex.tokens(question)) - answers_len) // cost
  p_M = 1.0 / np.arange(1, m + 1) ** alpha
  p_M /= p_M.sum()
  for _ in range(tries):
    draws = rng.choice(m, size=max(count, 0), p=p_M)
    counts = collections.Counter(draws.tolist()).most_common(4)
    if len(counts) == 4 and counts[0][1] > counts[1][1] > counts[2][1] > counts[3][1]:
      break
  else:
    raise ConfigError(f'fwe: no example with four distinct top counts fits {n} tokens; use a '
                      'longer context')
  top = [pool[w] for w, _ in counts[:3]]
  listing = ''.join(_item(lex, 0, pool[w], False) for w in draws)
  return compose(lex, rng, n, intro, [listing], 1.0, question,
                 _fixed(_listed(lex, top, sep='')))


TASKS: dict[str, Callable] = {
    'niah_single': niah_single, 'niah_multikey': niah_multikey,
    'niah_multivalue': niah_multivalue, 'niah_multiquery': niah_multiquery,
    'vt': vt, 'cwe': cwe, 'fwe': fwe,
}
DEPTHLESS = ('cwe', 'fwe')


def check(names: Sequence[str]) -> tuple[str, ...]:
  for name in names:
    if name not in TASKS:
      raise ConfigError(f'--ruler names {name!r}; allowed: {", ".join(TASKS)}, all, none')
  return tuple(names)


def has_depth(name: str) -> bool:
  return check([name]) and name not in DEPTHLESS
