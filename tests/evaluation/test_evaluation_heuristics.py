"""Cheap heuristics score what the task docs state, at every length: the tasks measure retrieval.

Each heuristic reads the prompt only (never the question's key) and writes as many items as
there are answers; it is scored through the evaluation's own generation path
(:func:`ropex.evaluation.grid.score_cell`, RULER's string_match_all). The stated level is
computed here from the task's definition (counts read off the prompt where the list length is
what fills the context); the measured mean must lie within 4 binomial standard errors of it
(a per-example score in [0, 1] with mean p has variance <= p (1 - p)), exactly equal when the
stated level is 0 or 1. Multi-answer needle tasks are measured with the depth drawn uniformly
per example (their stated level is over depths: the question-blind symmetry argument).
"""

from collections import Counter
from math import comb
import re

import numpy as np
import pytest

from ropex.data import synthetic, tokenizers
from ropex.evaluation import grid, retrieval, ruler, words

V = 16                       # symbol vocabulary: keys w0..w7, values w8..w15
HALF = V // 2
C = synthetic.CONTENT
BYTES = tokenizers.ByteTokenizer()
N = 300                      # examples per (task, length)
LENGTHS = (512, 1024)        # symbol style
TEXT_LENGTHS = (1100, 2600)  # text style (byte tokenizer)


def sym_lex():
  sym = words.SymbolTokenizer(V)
  return words.Lexicon('symbol', sym.encode_array, sym.decode, vocab=V)


def text_lex():
  return words.Lexicon('text', BYTES.encode_array, BYTES.decode)


def is_key(t):
  return C <= t < C + HALF


def is_value(t):
  return C + HALF <= t < C + V


class Heuristic:
  """A "model" whose generation is ``fn(prompt tokens, rng) -> tokens``; teacher forcing is
  not what is measured here."""

  def __init__(self, fn, seed=0):
    self.fn, self.rng = fn, np.random.default_rng(seed)

  def score(self, rows):
    return np.zeros(rows['inputs'].shape), np.zeros(rows['inputs'].shape, bool)

  def generate(self, prompts, lengths, max_new):
    out = np.zeros((len(prompts), max_new), np.int32)
    for i, (p, n) in enumerate(zip(prompts, lengths)):
      made = np.asarray(self.fn(p[:n], self.rng), np.int32)[:max_new]
      out[i, :len(made)] = made
    return out


def random_depth(task):
  """The task with its depth drawn uniformly per example."""
  return grid.Task(task.name, lambda rng, n, depth: task.make(rng, n, float(rng.random())),
                   task.has_depth, task.text, task.metric)


def measure(task, fn, length, depth=0.5, n=N):
  rows = grid.rows(task, length, depth, n, seed=11, bos_id=1)
  return grid.score_cell(Heuristic(fn), rows, task)['string_match_all'], rows


def assert_at(measured, stated, n=N):
  if stated in (0.0, 1.0):
    assert measured == stated
  else:
    assert abs(measured - stated) <= 4 * np.sqrt(stated * (1 - stated) / n), (measured, stated)


def distinct(items):
  return list(dict.fromkeys(items))


def most_frequent(items, m):
  counts = Counter(items)
  return sorted(distinct(items), key=lambda x: -counts[x])[:m]   # stable: ties by first seen


# --- symbol-style needle tasks --------------------------------------------------------------

def values_of(p):
  return [int(t) for t in p if is_value(t)]


SYMBOL_VALUE_HEURISTICS = {
    'uniform': lambda m: lambda p, rng: C + HALF + rng.integers(0, V - HALF, size=m),
    'first': lambda m: lambda p, rng: distinct(values_of(p))[:m],
    'last': lambda m: lambda p, rng: distinct(values_of(p)[::-1])[:m],
    'most_frequent': lambda m: lambda p, rng: most_frequent(values_of(p), m),
}


@pytest.mark.parametrize('name', ['niah_single', 'niah_multikey'])
@pytest.mark.parametrize('heuristic', list(SYMBOL_VALUE_HEURISTICS))
def test_symbol_single_needle(name, heuristic):
  """K = 8 needles, all 8 values once each, the first and last needle distractors: copying the
  first / last / most frequent (all tied: the first) value scores 0 at every depth; a uniform
  guess over the value symbols 1 / 8."""
  stated = 1 / (V - HALF) if heuristic == 'uniform' else 0.0
  for L in LENGTHS:
    for depth in (0.0, 1.0):
      got, _ = measure(ruler.task(sym_lex(), name), SYMBOL_VALUE_HEURISTICS[heuristic](1), L,
                       depth)
      assert_at(got, stated)


@pytest.mark.parametrize('name', ['niah_multivalue', 'niah_multiquery'])
@pytest.mark.parametrize('heuristic', list(SYMBOL_VALUE_HEURISTICS))
def test_symbol_multi_needle(name, heuristic):
  """4 answers among K = 8 needles (8 distinct values): four uniform value guesses find an
  answer with probability 1 - (7/8)^4; four distinct copied values include the first-needle
  guard (never asked) and 3 of the 6 exchangeable others, so 3 * 4/6 / 4 = 1/2 of the answers
  (over uniform depth)."""
  stated = 1 - (1 - 1 / (V - HALF)) ** 4 if heuristic == 'uniform' else 3 / 6
  for L in LENGTHS:
    got, _ = measure(random_depth(ruler.task(sym_lex(), name)),
                     SYMBOL_VALUE_HEURISTICS[heuristic](4), L)
    assert_at(got, stated)


def variables_of(p):
  return [int(t) for t in p if is_key(t)]


@pytest.mark.parametrize('heuristic', ['uniform', 'first', 'last', 'most_frequent'])
def test_symbol_variable_tracking(heuristic):
  """Two chains of 4 variables (8 key symbols): a question-blind answer of 4 distinct variables
  holds 1/2 of the asked chain's on average (the chains are exchangeable over uniform depth);
  4 uniform guesses over the 8 variable symbols find one with probability 1 - (7/8)^4."""
  fns = {'uniform': lambda p, rng: C + rng.integers(0, HALF, size=4),
         'first': lambda p, rng: distinct(variables_of(p))[:4],
         'last': lambda p, rng: distinct(variables_of(p)[::-1])[:4],
         'most_frequent': lambda p, rng: most_frequent(variables_of(p), 4)}
  stated = 1 - (7 / 8) ** 4 if heuristic == 'uniform' else 0.5
  for L in LENGTHS:
    got, _ = measure(random_depth(ruler.task(sym_lex(), 'vt')), fns[heuristic], L)
    assert_at(got, stated)


# --- symbol-style word lists ----------------------------------------------------------------

def list_items(p):
  """The three-symbol words of a symbol list, in order (a key symbol starts each)."""
  return [tuple(int(x) for x in p[i:i + 3]) for i in range(len(p) - 2)
          if is_key(p[i]) and is_value(p[i + 1]) and is_value(p[i + 2])]


def hypergeometric_hit(total, copies, draws):
  """P(at least one of ``copies`` marked items among the first ``draws`` of ``total``)."""
  return 1 - comb(total - copies, draws) / comb(total, draws)


def word_heuristics(m):
  flat = lambda items: [t for w in items for t in w]

  def uniform(p, rng):
    d = distinct(list_items(p))
    return flat([d[i] for i in rng.choice(len(d), m, replace=False)])

  return {'uniform': uniform,
          'first': lambda p, rng: flat(list_items(p)[:m]),
          'last': lambda p, rng: flat(list_items(p)[-m:]),
          'most_frequent': lambda p, rng: flat(most_frequent(list_items(p), m))}


def list_stats(rows):
  """Per example: the item counts of its word list (read off the prompt)."""
  full, _, prompt_len, _ = grid.generation_inputs(rows)
  return [Counter(list_items(f[:n])) for f, n in zip(full, prompt_len)]


@pytest.mark.parametrize('heuristic', ['uniform', 'first', 'last', 'most_frequent'])
def test_symbol_common_words(heuristic):
  """RULER's settings below 4096 tokens: 10 words x 6, U words x 1, U growing with the length.
  Ten words drawn from the D = 10 + U distinct ones hold 10 / D of the answers; the first (or
  last) ten items hold each common word with the hypergeometric probability
  1 - C(N - 6, 10) / C(N, 10), N = 60 + U; the ten most frequent words ARE the answer (the
  task measures counting), so that heuristic scores 1."""
  task = ruler.task(sym_lex(), 'cwe')
  sizes = []
  for L in LENGTHS:
    got, rows = measure(task, word_heuristics(10)[heuristic], L, depth=None)
    stats = list_stats(rows)
    sizes.append(np.mean([len(s) for s in stats]))
    assert all(sorted(s.values())[-10:] == [6] * 10 for s in stats)
    if heuristic == 'uniform':
      stated = np.mean([10 / len(s) for s in stats])
    elif heuristic == 'most_frequent':
      stated = 1.0
    else:
      stated = np.mean([hypergeometric_hit(sum(s.values()), 6, 10) for s in stats])
    assert_at(got, stated)
  assert sizes[1] > 2 * sizes[0]           # the list grows with the length (110 -> 280 words)


@pytest.mark.parametrize('heuristic', ['uniform', 'first', 'last', 'most_frequent'])
def test_symbol_frequent_words(heuristic):
  """Zipf counts int(N k^-2 / zeta(2)), rank 1 the noise symbol: three of the D words present
  hold 3 / D of the answers; the first (last) three items hold answer r with probability
  1 - C(N' - c_r, 3) / C(N', 3); the three most frequent words are the answer."""
  task = ruler.task(sym_lex(), 'fwe')
  for L in LENGTHS:
    got, rows = measure(task, word_heuristics(3)[heuristic], L, depth=None)
    stats = list_stats(rows)
    if heuristic == 'uniform':
      stated = np.mean([3 / len(s) for s in stats])
    elif heuristic == 'most_frequent':
      stated = 1.0
    else:
      stated = np.mean([np.mean([hypergeometric_hit(sum(s.values()), c, 3)
                                 for _, c in s.most_common(3)]) for s in stats])
    assert_at(got, stated)


# --- retrieval needle -----------------------------------------------------------------------

def pair_values(p):
  """The value of every pair of a needle prompt (``bos M FILLER* k v ... k v QUERY k*``; keys
  and values are random halves of the symbols per example, so the pair structure tells them
  apart)."""
  body = [int(t) for t in p[2:-2] if t != synthetic.FILLER]
  return body[1::2]


@pytest.mark.parametrize('heuristic', ['uniform', 'first', 'last', 'most_frequent'])
def test_needle(heuristic):
  """P pairs, every value exactly c = P / 8 times: the first / last / most frequent (tied:
  first) value is the answer with probability (c - 1) / (P - 1) at every depth; a uniform
  guess among the 8 values 1 / 8."""
  fns = {'uniform': lambda p, rng: [rng.choice(distinct(pair_values(p)))],
         'first': lambda p, rng: pair_values(p)[:1],
         'last': lambda p, rng: pair_values(p)[-1:],
         'most_frequent': lambda p, rng: most_frequent(pair_values(p), 1)}
  for L in LENGTHS:
    P = (L - 4) // 2 // 8 * 8
    stated = 1 / 8 if heuristic == 'uniform' else (P / 8 - 1) / (P - 1)
    for depth in (0.0, 1.0):
      got, _ = measure(retrieval.task('needle', vocab=V), fns[heuristic], L, depth)
      assert_at(got, stated)


# --- text style -----------------------------------------------------------------------------

def text_items(pattern, prompt_tokens):
  body = BYTES.decode(prompt_tokens)
  return re.findall(pattern, body[:body.rindex('\n')])   # the haystack, not the question


def as_list(items, sep=','):
  return BYTES.encode_array((sep + ' ').join([''] + items)[len(sep):]) if items else []


NUMBER = r'\b\d{7}\b'
TEXT_NUMBER_HEURISTICS = {
    'uniform': lambda m: lambda p, rng: as_list([str(x) for x in rng.integers(10**6, 10**7, m)]),
    'first': lambda m: lambda p, rng: as_list(distinct(text_items(NUMBER, p))[:m]),
    'last': lambda m: lambda p, rng: as_list(distinct(text_items(NUMBER, p)[::-1])[:m]),
    'most_frequent': lambda m: lambda p, rng: as_list(most_frequent(text_items(NUMBER, p), m)),
}


@pytest.mark.parametrize('name', ['niah_single', 'niah_multikey'])
@pytest.mark.parametrize('heuristic', list(TEXT_NUMBER_HEURISTICS))
def test_text_single_needle(name, heuristic):
  """Distinct 7-digit values, distractor needles first and last: every heuristic scores 0 (a
  uniform 7-digit guess: 1 in 9 million)."""
  for L in TEXT_LENGTHS:
    for depth in (0.0, 1.0):
      got, _ = measure(ruler.task(text_lex(), name), TEXT_NUMBER_HEURISTICS[heuristic](1), L,
                       depth, n=60)
      assert got == 0.0


@pytest.mark.parametrize('heuristic', ['first', 'last', 'most_frequent'])
def test_text_variable_tracking(heuristic):
  """Two chains of five 5-letter variables: a question-blind answer of 5 of them holds 1/2."""
  var = r'\b[A-Z]{5}\b'
  fns = {'first': lambda p, rng: as_list(distinct(text_items(var, p))[:5], sep=''),
         'last': lambda p, rng: as_list(distinct(text_items(var, p)[::-1])[:5], sep=''),
         'most_frequent': lambda p, rng: as_list(most_frequent(text_items(var, p), 5), sep='')}
  got, _ = measure(random_depth(ruler.task(text_lex(), 'vt')), fns[heuristic], 1100)
  assert_at(got, 0.5)


def test_passkey_is_solved_by_copying_its_only_number():
  """Stated in the docs: the passkey test does not measure retrieval among distractors."""
  task = retrieval.task('passkey', tokenizer=BYTES)
  copy = lambda p, rng: BYTES.encode_array(' ' + re.findall(r'\d{5}', BYTES.decode(p))[0])
  for L in (300, 2000):
    assert measure(task, copy, L, 0.5, n=30)[0] == 1.0


@pytest.mark.parametrize('name', ['niah_multivalue', 'niah_multiquery'])
@pytest.mark.parametrize('heuristic', ['first', 'last', 'most_frequent'])
def test_text_multi_needle(name, heuristic):
  """K = 8 needles at 1100 bytes, 4 asked: four distinct copied numbers hold 3 / (K - 2) = 1/2
  of the answers over uniform depth (the first or last one is a guard)."""
  got, _ = measure(random_depth(ruler.task(text_lex(), name)),
                   TEXT_NUMBER_HEURISTICS[heuristic](4), 1100)
  assert_at(got, 3 / 6)
