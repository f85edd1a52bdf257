"""Vocabulary of the RULER-style tasks (:mod:`ropex.evaluation.ruler`): how words, numbers and
prompt text become the run's tokens, and the haystacks that fill a context.

A :class:`Lexicon` hides the kind of run from the tasks:

- ``text`` (byte or SentencePiece runs): prompts are English text encoded with the run's
  tokenizer; words are pronounceable pseudo-words generated in-process (consonant-vowel
  syllables, :func:`word_list`), numbers are 7-digit decimals, variables 5 capital letters, as
  in RULER. The haystack is either ``noise`` (RULER's repeated "The grass is green. The sky is
  blue. ..." sentences, needles inserted at sentence boundaries) or ``eval`` (the run's own
  evaluation text, concatenated documents cut at a per-example offset; needles inserted after
  a ``.`` or newline token).
- ``symbol`` (synthetic-vocabulary runs): prompts are written in the token space the synthetic
  tasks use (:mod:`ropex.data.synthetic`): a word, number or variable is one content token
  ``w<i>`` (keys and variables from the first half of the ``vocab`` content tokens, numbers
  and list words from the second half, as in ``assoc_recall``), ``<Q>`` is the QUERY marker,
  ``<M>`` the ``assoc_recall`` task marker; template text is dropped. The haystack is FILLER
  tokens (every position a boundary).

Every haystack is exactly the requested number of tokens, with the positions where a needle
may be inserted (its ``boundaries``, always including 0 and the end).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Callable

import numpy as np

from ropex.data import synthetic
from ropex.errors import ConfigError

STYLES = ('text', 'symbol')
HAYSTACKS = ('noise', 'eval')
NOISE = ('The grass is green. The sky is blue. The sun is yellow. Here we go. '
         'There and back again. ')
_CONSONANTS = 'bdfgklmnprstvz'
_VOWELS = 'aeiou'


@functools.lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
  """4900 distinct pseudo-words of two syllables (``'bako'``, ``'tizu'``, ...), then 20000 of
  three, in a fixed order (no file, no package)."""
  syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
  two = [a + b for a, b in itertools.product(syllables, syllables)]
  three = [a + b + c for a, b, c in itertools.islice(
      itertools.product(syllables[::7], syllables, syllables), 20_000)]
  return tuple(two + three)


class SymbolTokenizer:
  """Whitespace-separated symbols -> synthetic token ids: ``w<i>`` -> ``CONTENT + i``, ``<Q>``
  QUERY, ``<M>`` the assoc_recall marker, ``<F>`` FILLER; any other word is template text and
  is dropped."""

  SPECIAL = {'<Q>': synthetic.QUERY, '<M>': synthetic.TASK_MARKER['assoc_recall'],
             '<F>': synthetic.FILLER}

  def __init__(self, vocab: int):
    self.vocab = int(vocab)

  def encode_array(self, text: str) -> np.ndarray:
    ids = []
    for word in text.split():
      word = word.strip('.,:;?')
      if word in self.SPECIAL:
        ids.append(self.SPECIAL[word])
      elif len(word) > 1 and word[0] == 'w' and word[1:].isdigit():
        i = int(word[1:])
        if i >= self.vocab:
          raise ValueError(f'symbol {word} is outside the {self.vocab} content tokens')
        ids.append(synthetic.CONTENT + i)
    return np.asarray(ids, np.int32)

  def decode(self, ids) -> str:
    names = {v: k for k, v in self.SPECIAL.items()}
    return ' '.join(names.get(int(i), f'w{int(i) - synthetic.CONTENT}')
                    if int(i) in names or int(i) >= synthetic.CONTENT else '' for i in ids)

  def match_text(self, ids) -> str:
    """Every id as one bracketed symbol (``<w3><Q><t0>``), so that a substring match (RULER's
    string match) is a match of whole tokens: ``<w1>`` is not found in ``<w12>``."""
    names = {v: k[1:-1] for k, v in self.SPECIAL.items()}
    return ''.join('<' + names.get(int(i), f'w{int(i) - synthetic.CONTENT}'
                                   if int(i) >= synthetic.CONTENT else f't{int(i)}') + '>'
                   for i in ids)


@dataclasses.dataclass
class Haystack:
  tokens_H: np.ndarray     # int32, exactly the length asked
  boundaries: np.ndarray   # sorted insertion points in [0, H], with 0 and H


@dataclasses.dataclass
class Lexicon:
  """Words and text of one run (see the module doc). Build with :func:`for_run`."""
  style: str
  encode: Callable[[str], np.ndarray]
  decode: Callable
  vocab: int = 16                       # symbol style: content tokens
  eval_tokens: np.ndarray | None = None  # text style, haystack='eval': the eval-text stream
  boundary_ids: tuple[int, ...] = ()

  @property
  def haystack(self) -> str:
    return 'noise' if self.eval_tokens is None else 'eval'

  # --- items -------------------------------------------------------------------------------
  def _symbols(self, rng, n: int, half: int) -> list[str]:
    lo, hi = (0, self.vocab // 2) if half == 0 else (self.vocab // 2, self.vocab)
    if n > hi - lo:
      raise ConfigError(f'the task needs {n} distinct symbols but the run has only {hi - lo} '
                        f'(data.synthetic_vocab={self.vocab}); use fewer items or a larger vocab')
    return [f'w{int(i)}' for i in lo + rng.permutation(hi - lo)[:n]]

  def words(self, rng, n: int) -> list[str]:
    """``n`` distinct list words (cwe / fwe)."""
    if self.style == 'symbol':
      return self._symbols(rng, n, 1)
    pool = word_list()
    if n > len(pool):
      raise ConfigError(f'the task needs {n} distinct words; at most {len(pool)} exist')
    return [pool[i] for i in rng.permutation(len(pool))[:n]]

  def list_pool(self) -> int:
    """How many distinct :meth:`list_words` exist."""
    if self.style == 'symbol':
      return self.vocab // 2 * (self.vocab - self.vocab // 2) ** 2
    return len(word_list())

  def list_words(self, rng, n: int) -> list[str]:
    """``n`` distinct words of a word list (cwe / fwe). Symbols: three tokens each, a key-half
    symbol then two value-half symbols (``(vocab/2) * (vocab/2)^2`` words, 512 at vocab 16), so
    that the list can grow with the length and a word starts exactly at its key-half symbol."""
    if self.style != 'symbol':
      return self.words(rng, n)
    half, rest = self.vocab // 2, self.vocab - self.vocab // 2
    total = self.list_pool()
    if n > total:
      raise ConfigError(f'the task needs {n} distinct list words but vocab {self.vocab} makes '
                        f'only {total} (data.synthetic_vocab); use a shorter context')
    out = []
    for i in rng.choice(total, size=n, replace=False):
      a, b, c = int(i) // (rest * rest), int(i) // rest % rest, int(i) % rest
      out.append(f'w{a} w{half + b} w{half + c}')
    return out

  def keys(self, rng, n: int) -> list[str]:
    """``n`` distinct needle keys."""
    if self.style == 'symbol':
      return self._symbols(rng, n, 0)
    return self.words(rng, n)

  def numbers(self, rng, n: int) -> list[str]:
    """``n`` distinct needle values."""
    if self.style == 'symbol':
      return self._symbols(rng, n, 1)
    values: dict[str, None] = {}
    while len(values) < n:
      values.setdefault(str(int(rng.integers(1_000_000, 10_000_000))))
    return list(values)

  def variables(self, rng, n: int) -> list[str]:
    """``n`` distinct variable names (variable tracking)."""
    if self.style == 'symbol':
      return self._symbols(rng, n, 0)
    names: list[str] = []
    while len(names) < n:
      name = ''.join(chr(65 + int(c)) for c in rng.integers(0, 26, size=5))
      if name not in names:
        names.append(name)
    return names

  # --- text --------------------------------------------------------------------------------
  def tokens(self, text: str) -> np.ndarray:
    return np.asarray(self.encode(text), np.int32).reshape(-1)

  def make_haystack(self, rng, size: int) -> Haystack:
    """Exactly ``size`` filler tokens (see the module doc)."""
    if size < 0:
      raise ConfigError(f'the prompt needs {-size} more tokens than the context holds')
    if self.style == 'symbol':
      return Haystack(np.full(size, synthetic.FILLER, np.int32), np.arange(size + 1))
    if self.eval_tokens is None:
      sentences = [self.tokens(s + '. ') for s in NOISE.split('. ') if s.strip()]
      tiles, total = [], 0
      while total < size:
        tiles.append(sentences[len(tiles) % len(sentences)])
        total += len(tiles[-1])
      # the LAST size tokens: a partial sentence first, every sentence end a boundary
      tokens = np.concatenate(tiles)[total - size:] if tiles else np.zeros(0, np.int32)
      ends = np.cumsum([len(t) for t in tiles]) - (total - size)
      return Haystack(tokens.astype(np.int32),
                      np.unique(np.concatenate([[0], ends[ends > 0], [size]])))
    stream = self.eval_tokens
    if len(stream) < size:
      stream = np.resize(stream, size)
    start = int(rng.integers(0, len(stream) - size + 1))
    tokens = stream[start:start + size].astype(np.int32)
    ends = np.flatnonzero(np.isin(tokens, self.boundary_ids)) + 1
    return Haystack(tokens, np.unique(np.concatenate([[0], ends, [size]])))


def for_run(config, haystack: str = 'noise', eval_tokens_max: int = 200_000) -> Lexicon:
  """The lexicon of a run: ``symbol`` for synthetic runs, else ``text`` with the run's tokenizer
  (``haystack='eval'``: the run's eval split, at most ``eval_tokens_max`` tokens of it)."""
  from ropex import data  # pylint: disable=g-import-not-at-top
  if haystack not in HAYSTACKS:
    raise ConfigError(f'--haystack={haystack!r} is not allowed; allowed: {", ".join(HAYSTACKS)}')
  if config.data.source == 'synthetic':
    if haystack != 'noise':
      raise ConfigError('--haystack=eval needs a text run; synthetic runs have no eval text '
                        '(allowed for them: noise)')
    sym = SymbolTokenizer(int(config.data.get('synthetic_vocab', 16)))
    return Lexicon('symbol', sym.encode_array, sym.decode, vocab=sym.vocab)
  tokenizer = data.make_tokenizer(config.data)
  lex = Lexicon('text', tokenizer.encode_array, tokenizer.decode)
  if haystack == 'eval':
    lex.eval_tokens = eval_stream(config, tokenizer, eval_tokens_max)
    lex.boundary_ids = tuple(int(t[-1]) for t in (lex.tokens('.'), lex.tokens('\n')) if len(t))
  return lex


def eval_stream(config, tokenizer, max_tokens: int, max_documents: int = 10_000) -> np.ndarray:
  """The run's eval documents (in the order the eval split reads them), without bos/eos, each
  followed by a newline, up to ``max_tokens`` tokens."""
  from ropex.data import sources  # pylint: disable=g-import-not-at-top
  docs = sources.documents(config, 'eval', tokenizer)
  special = (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
  newline = np.asarray(tokenizer.encode('\n'), np.int32)
  parts, held = [], 0
  for g in range(max_documents):
    doc = docs[g]
    tokens = np.append(doc.inputs_P, doc.targets_P[-1:])
    tokens = np.concatenate([tokens[~np.isin(tokens, special)], newline])
    parts.append(tokens)
    held += len(tokens)
    if held >= max_tokens:
      break
  if not held:
    raise ConfigError('--haystack=eval: the run\'s eval split holds no text')
  return np.concatenate(parts)[:max_tokens].astype(np.int32)
