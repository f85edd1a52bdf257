"""The RULER-style tasks (Hsieh et al., 2024, "RULER: What's the real context size of your
long-context language models?", github.com/NVIDIA/RULER), generated offline for any run
(:mod:`ropex.evaluation.words`), built so that they measure retrieval: every prompt holds
distractors of the same form as the answer, and the haystacks and word lists grow with the
length.

Every task is ``(lex, rng, n, depth, **kw) -> (tokens_n int32, answer_ids_n int32)``: exactly
``n`` tokens; ``answer_ids_n[t] = r`` marks the tokens of expected answer ``r``, ``-2``
unscored separators between answers, ``-1`` the prompt (:mod:`ropex.evaluation.grid`). A prompt
is ``intro, haystack with the task's segments inserted, question, answers``; the haystack fills
exactly the room the rest leaves. Each segment sits at the haystack boundary nearest to a
fraction of the haystack: the asked one at ``depth`` (0: the start, 1: just before the
question), the others at fractions drawn from ``rng`` (so one ``rng`` gives the same example at
every depth with only that segment moved); segments at one boundary are ordered at random.
GUARDS: in the needle tasks one distractor always comes first and one last, so the asked
needle is never the first or the last one, at any depth.

Needles (``niah_*``) have distinct keys and distinct values, all drawn from one distribution:
``K`` needles in all, ``K = vocab // 2`` in the symbol style (every key symbol once; 8 at
vocab 16) and ``max(8, n // 256)`` in the text style (8 up to 2048 tokens, 16 at 4096).

- ``niah_single``: ``K`` needles "One of the special magic numbers for KEY is: VALUE." (RULER's
  wording) in the haystack; the question asks one key, the answer is its value. (RULER's
  ``niah_single_1`` has no distractor, so copying the only number solves it; this is RULER's
  ``niah_multikey_1`` form with ``K`` needles.)
- ``niah_multikey``: RULER's ``niah_multikey_2``: the haystack IS needles (as many as fit,
  distinct keys), one asked. In the symbol style the key symbols are already all used by
  ``niah_single``, so there it is the same task as ``niah_single``.
- ``niah_multivalue``: one key with ``values`` (4) needles among ``K`` (the others: distractor
  keys); the answers are its 4 values.
- ``niah_multiquery``: ``queries`` (4) of the ``K`` keys asked; the answers are their values.
- ``vt`` (variable tracking): two chains "VAR X1 = 12345. VAR X2 = X1. ..." of ``hops`` (4; 3 in
  the symbol style at vocab 16, whose 8 key symbols hold two chains of 4) assignments after the
  first, with distinct values and variables; the question names one chain's value, the answers
  are its ``hops + 1`` variables. ``depth`` places that chain's first statement, its other
  statements follow at fractions drawn after it; the distractor chain is drawn the same way
  from a uniform first fraction. (RULER's ``vt`` has one chain, so copying every variable
  solves it.)
- ``cwe`` (common words, RULER's ``common_words_extraction.py`` settings): a numbered list where
  ``num_cw`` (10) words appear ``freq_cw`` times and as many other words as fit appear
  ``freq_ucw`` times, in random order, with RULER's choice: 30 / 3 from 4096 tokens up, 6 / 1
  below; the answers are the 10 common words. No depth. A context that holds fewer than 40
  uncommon words is refused (the cell is ``None``, with the reason): with few of them, ten words
  copied from the list would mostly be the answer.
- ``fwe`` (frequent words, RULER's ``freq_words_extraction.py``): a vocabulary of
  ``max(5, n // 50)`` words; word of rank ``k`` appears ``int(N k^-alpha / zeta(alpha))``
  times (``alpha`` 2), ``N`` as large as fits, in random order; rank 1 is a noise word
  (RULER's ``...``); the answers are ranks 2, 3 and 4. No depth.

In the ``symbol`` style (synthetic runs) template text is dropped: a needle is ``key value``, a
statement ``var value``, the question ``<Q> key`` (multi-query: ``<Q> k1 k2 k3 k4``; vt:
``<Q> value``), list words are three symbols (:meth:`Lexicon.list_words`), the fwe noise word is
``<F>``, the intro is the ``assoc_recall`` marker. The answers follow the question directly.

Shortcuts, stated: each task's score for the cheap heuristics (uniform guess, copy the first /
last / most frequent value-like item) is in ``docs/evaluation.md`` and measured by
``tests/evaluation/test_evaluation_heuristics.py``.
"""

from __future__ import annotations

import collections
from typing import Callable, Sequence

import numpy as np
from scipy import special

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
UNSCORED = -2
MIN_RARE = 4      # cwe: uncommon words per common word, at least


def _check_depth(depth: float | None) -> float:
  if depth is None or not 0.0 <= float(depth) <= 1.0:
    raise ConfigError(f'--depths has {depth!r}; allowed: numbers in [0, 1]')
  return float(depth)


def compose(lex: Lexicon, rng, n: int, intro: str, segments: Sequence[str],
            fractions: Sequence[float], question: str,
            answers: Callable[[Sequence[int]], Sequence[Answer]],
            ranks: Sequence[int] | None = None, keys: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
  """``intro``, a haystack with segment ``i`` at the boundary nearest to ``fractions[i]`` of
  it, ``question``, then ``answers(order)`` (``order``: the segments in context order; each
  answer's prefix is unscored; the answers' total length must not depend on ``order``).
  Segments at one boundary go by ``ranks`` (-1 first, 1 last), then by the rows of ``keys``
  (default: random). Exactly ``n`` tokens."""
  intro_t, question_t = lex.tokens(intro), lex.tokens(question)
  seg_t = [lex.tokens(s) for s in segments]
  sizing = [lex.tokens(t) for pair in answers(range(len(segments))) for t in pair]
  fixed = len(intro_t) + len(question_t) + sum(map(len, seg_t + sizing))
  if fixed > n:
    raise ConfigError(f'this task needs at least {fixed} tokens with this tokenizer; the '
                      f'context has {n}')
  hay = lex.make_haystack(rng, n - fixed)
  H, b = len(hay.tokens_H), hay.boundaries
  at = b[np.argmin(np.abs(b[None, :] - np.asarray(fractions)[:, None] * H), axis=1)]
  at = at.astype(np.int64)
  S = len(seg_t)
  ranks = np.zeros(S) if ranks is None else np.asarray(ranks)
  keys = rng.random((S, 1)) if keys is None else np.asarray(keys).reshape(S, -1)
  order = [int(i) for i in np.lexsort((*keys.T[::-1], ranks, at))]
  pieces, cut = [intro_t], 0
  for i in order:
    pieces += [hay.tokens_H[cut:at[i]], seg_t[i]]
    cut = at[i]
  pieces += [hay.tokens_H[cut:], question_t]
  ids = [np.full(sum(map(len, pieces)), -1, np.int32)]
  for r, (p, a) in enumerate(answers(order)):
    p_t, a_t = lex.tokens(p), lex.tokens(a)
    pieces += [p_t, a_t]
    ids += [np.full(len(p_t), UNSCORED, np.int32), np.full(len(a_t), r, np.int32)]
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


def needle_count(lex: Lexicon, n: int) -> int:
  """``K``: needles in a niah prompt of ``n`` tokens (see the module doc)."""
  return lex.vocab // 2 if _sym(lex) else max(8, n // 256)


def _niah(lex, rng, n, depth, pairs, asked: Sequence[int], question: str, answers):
  """Needles ``pairs`` (key, value): ``asked[0]`` at ``depth``, the first two others the
  guards (first and last), the rest at random fractions."""
  depth = _check_depth(depth)
  others = [i for i in range(len(pairs)) if i not in asked]
  if len(others) < 2:
    raise ConfigError(f'the needle tasks need two distractor needles besides the {len(asked)} '
                      f'asked; this run allows {len(pairs)} needles in all (for symbols: '
                      f'data.synthetic_vocab={lex.vocab}, key symbols = vocab / 2)')
  fractions, ranks = rng.random(len(pairs)), np.zeros(len(pairs))
  fractions[asked[0]] = depth
  fractions[others[0]], ranks[others[0]] = 0.0, -1
  fractions[others[1]], ranks[others[1]] = 1.0, 1
  return compose(lex, rng, n, _intro(lex, NIAH_INTRO), [_needle(lex, k, v) for k, v in pairs],
                 fractions, question, answers, ranks)


def niah_single(lex, rng, n, depth, needles: int | None = None):
  K = needles or needle_count(lex, n)
  keys, values = lex.keys(rng, K), lex.numbers(rng, K)
  question = f'<Q> {keys[0]}' if _sym(lex) else NIAH_ONE.format(key=keys[0])
  return _niah(lex, rng, n, depth, list(zip(keys, values)), [0], question,
               _fixed(_listed(lex, [values[0]])))


def niah_multikey(lex, rng, n, depth):
  """The haystack is needles (text style; symbols: :func:`niah_single`)."""
  if _sym(lex):
    return niah_single(lex, rng, n, depth)
  most = max(3, n // 8)     # every needle is longer than 8 tokens
  keys, values = lex.keys(rng, most), lex.numbers(rng, most)
  question = NIAH_ONE.format(key=keys[0])
  answer = _listed(lex, [values[0]])
  fixed = sum(len(lex.tokens(t)) for t in (NIAH_INTRO, question, *answer[0]))
  costs = np.cumsum([len(lex.tokens(_needle(lex, k, v))) for k, v in zip(keys, values)])
  K = max(3, int(np.searchsorted(costs, n - fixed, side='right')))
  return _niah(lex, rng, n, depth, list(zip(keys[:K], values[:K])), [0], question,
               _fixed(answer))


def niah_multivalue(lex, rng, n, depth, values: int = 4):
  K = max(needle_count(lex, n), values + 2)
  keys, vals = lex.keys(rng, K - values + 1), lex.numbers(rng, K)
  pairs = [(keys[0], v) for v in vals[:values]] + list(zip(keys[1:], vals[values:]))
  question = f'<Q> {keys[0]}' if _sym(lex) else NIAH_ALL.format(key=keys[0])
  return _niah(lex, rng, n, depth, pairs, list(range(values)), question,
               lambda order: _listed(lex, [vals[i] for i in order if i < values]))


def niah_multiquery(lex, rng, n, depth, queries: int = 4):
  K = max(needle_count(lex, n), queries + 2)
  keys, vals = lex.keys(rng, K), lex.numbers(rng, K)
  if _sym(lex):
    question = '<Q> ' + ' '.join(keys[:queries])
  else:
    question = NIAH_ALL.format(key=', '.join(keys[:queries - 1]) + ' and ' + keys[queries - 1])
  return _niah(lex, rng, n, depth, list(zip(keys, vals)), list(range(queries)), question,
               _fixed(_listed(lex, vals[:queries])))


def vt(lex, rng, n, depth, hops: int | None = None, chains: int = 2):
  h = hops if hops is not None else (min(4, lex.vocab // 2 // chains - 1) if _sym(lex) else 4)
  if h < 1:
    raise ConfigError(f'vt needs at least one hop; vocab {lex.vocab} holds {lex.vocab // 2} '
                      f'variable symbols for {chains} chains (data.synthetic_vocab)')
  names, values = lex.variables(rng, chains * (h + 1)), lex.numbers(rng, chains)
  chain_keys = rng.random(chains)
  statements, fractions, keys = [], [], []
  for c in range(chains):
    chain = names[c * (h + 1):(c + 1) * (h + 1)]
    first = _check_depth(depth) if c == 0 else float(rng.random())
    fractions += [first] + list(np.sort(first + (1 - first) * rng.random(h)))
    for i, (a, b) in enumerate(zip(chain, [values[c]] + chain[:-1])):
      statements.append(f'{a} {b} ' if _sym(lex) else VT_STATEMENT.format(name=a, value=b))
      keys.append((chain_keys[c], i))
  question = (f'<Q> {values[0]}' if _sym(lex)
              else VT_QUESTION.format(value=values[0], n=h + 1))
  return compose(lex, rng, n, _intro(lex, VT_INTRO), statements, fractions, question,
                 _fixed(_listed(lex, names[:h + 1], sep='')), keys=np.asarray(keys))


def _item(lex, i: int, word: str, numbered: bool) -> str:
  if _sym(lex):
    return f'{word} '
  return f'{i + 1}. {word} ' if numbered else f'{word} '


def cwe(lex, rng, n, depth=None, num_cw: int = 10, freq_cw: int | None = None,
        freq_ucw: int | None = None):
  del depth   # the list always ends just before the question
  freq_cw = freq_cw or (30 if n >= 4096 else 6)      # RULER: 30 / 3 from 4096 tokens, else 6 / 1
  freq_ucw = freq_ucw or (3 if n >= 4096 else 1)
  if freq_cw <= freq_ucw:
    raise ConfigError(f'cwe freq_cw={freq_cw} must exceed freq_ucw={freq_ucw}')
  question = '<Q>' if _sym(lex) else CWE_QUESTION.format(n=num_cw)
  intro = _intro(lex, CWE_INTRO)
  # at most every list token a rare word of two tokens: an upper bound of the words to draw
  upper = max(0, n - len(lex.tokens(intro)) - len(lex.tokens(question))) // (2 * freq_ucw)
  words = lex.list_words(rng, num_cw + min(upper, lex.list_pool() - num_cw))
  common_w, rare_w = words[:num_cw], words[num_cw:]
  answers_len = sum(len(lex.tokens(t)) for pair in _listed(lex, common_w) for t in pair)
  room = n - len(lex.tokens(intro)) - len(lex.tokens(question)) - answers_len
  # item costs at the widest numbering (5 digits), so the list fits whatever its order
  cost = lambda w: len(lex.tokens(_item(lex, 99_998, w, True)))
  need = freq_cw * sum(cost(w) for w in common_w)
  rare_cum = np.cumsum([freq_ucw * cost(w) for w in rare_w])
  n_rare = int(np.searchsorted(rare_cum, room - need, side='right'))
  if n_rare < MIN_RARE * num_cw:   # else copying any ten listed words would be near the answer
    raise ConfigError(f'cwe: {n} tokens hold {n_rare} uncommon words besides the {num_cw} common '
                      f'ones x {freq_cw} (RULER\'s setting at this length); at least '
                      f'{MIN_RARE * num_cw} are needed: use a longer context')
  items = [w for w in common_w for _ in range(freq_cw)]
  items += [w for w in rare_w[:n_rare] for _ in range(freq_ucw)]
  items = [items[i] for i in rng.permutation(len(items))]
  seen = list(dict.fromkeys(w for w in items if w in common_w))
  listing = ''.join(_item(lex, i, w, True) for i, w in enumerate(items))
  return compose(lex, rng, n, intro, [listing], [1.0], question, _fixed(_listed(lex, seen)))


def fwe_counts(N: int, words: int, alpha: float) -> np.ndarray:
  """RULER's word counts: ``int(N k^-alpha / zeta(alpha))`` for ranks ``k = 1..words``."""
  return (N * np.arange(1, words + 1) ** -alpha / special.zeta(alpha)).astype(int)


def fwe(lex, rng, n, depth=None, alpha: float = 2.0):
  del depth   # the text always ends just before the question
  question = '<Q>' if _sym(lex) else FWE_QUESTION
  intro = _intro(lex, FWE_INTRO)
  W = max(5, n // 50)                               # RULER: vocab_size = max_seq_length // 50
  pool = ['<F>' if _sym(lex) else '...'] + lex.list_words(rng, W - 1)
  cost_W = np.asarray([len(lex.tokens(_item(lex, 0, w, False))) for w in pool])
  answers = _listed(lex, pool[1:4], sep='')
  room = n - sum(len(lex.tokens(t)) for t in (intro, question, *(x for a in answers for x in a)))
  lo, hi = 0, 2 * max(room, 0) + 10                 # the largest N whose text fits
  while lo < hi:
    mid = (lo + hi + 1) // 2
    lo, hi = (mid, hi) if fwe_counts(mid, W, alpha) @ cost_W <= room else (lo, mid - 1)
  counts = fwe_counts(lo, W, alpha)
  if not counts[1] > counts[2] > counts[3] > counts[4]:
    raise ConfigError(f'fwe: {n} tokens hold too few words for three distinct top counts; '
                      'use a longer context')
  draws = rng.permutation(np.repeat(np.arange(W), counts))
  listing = ''.join(_item(lex, 0, pool[w], False) for w in draws)
  return compose(lex, rng, n, intro, [listing], [1.0], question, _fixed(answers))


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
