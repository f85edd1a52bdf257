"""Needle and passkey generators, checked by parsing their output independently."""

import numpy as np
import pytest

from ropex.data import synthetic, tokenizers
from ropex.evaluation import grid, retrieval, rows as rows_lib
from ropex.errors import ConfigError


@pytest.mark.parametrize('length,depth', [(20, 0.0), (31, 0.5), (200, 1.0), (101, 0.25)])
def test_needle_example(length, depth):
  rng = np.random.default_rng(7)
  tokens, answer = retrieval.needle_example(rng, length, depth, vocab=16)
  assert tokens.shape == answer.shape == (length,)
  assert tokens[0] == synthetic.TASK_MARKER['assoc_recall']
  assert list(np.flatnonzero(answer)) == [length - 1]
  assert tokens[-3] == synthetic.QUERY
  key, value = tokens[-2], tokens[-1]
  body = tokens[1:-3]
  P = (length - 4) // 2 // 8 * 8                           # a multiple of the 8 values
  assert (body[:len(body) - 2 * P] == synthetic.FILLER).all()
  body = body[len(body) - 2 * P:]
  keys, values = body[0::2], body[1::2]
  assert ((keys >= synthetic.CONTENT) & (keys < synthetic.CONTENT + 16)).all()
  assert not set(keys) & set(values)                      # disjoint halves
  assert sorted(np.unique(values, return_counts=True)[1]) == [P // 8] * 8   # balanced values
  hits = np.flatnonzero(keys == key)
  assert len(hits) == 1                                   # the needle key is unique
  assert values[hits[0]] == value
  assert hits[0] == 1 + round(depth * (P - 3))            # at the depth, never first or last


def test_needle_rows_move_only_the_needle_between_depths():
  make = lambda L, d: grid.rows(retrieval.task('needle'), L, d, 2, seed=0, bos_id=1)
  a, b = make(40, 0.0), make(40, 1.0)
  assert a['inputs'].shape == (2, 40) and (a['inputs'][:, 0] == 1).all()
  np.testing.assert_array_equal(a['targets'][:, -1], b['targets'][:, -1])   # same needle
  np.testing.assert_array_equal(a['inputs'][:, -2:], b['inputs'][:, -2:])   # same question
  assert (a['weights'].sum(1) == 1).all()
  # the same pairs: only the needle pair and the pair it swapped with change places
  differ = np.flatnonzero((a['inputs'] != b['inputs']).any(0))
  assert 0 < len(differ) <= 4


@pytest.mark.parametrize('depth', [0.0, 0.5, 1.0])
def test_passkey_example(depth):
  tok = tokenizers.ByteTokenizer()
  length = 400
  tokens, answer, key = retrieval.passkey_example(tok, np.random.default_rng(3), length, depth)
  assert tokens.shape == answer.shape == (length,) and len(key) == 5 and key.isdigit()
  text = tok.decode(tokens)
  assert len(text.encode()) == length                      # byte tokenizer: 1 token per byte
  assert tok.decode(tokens[answer]) == ' ' + key
  assert text.startswith(retrieval.PASSKEY_INTRO)
  assert text.endswith(retrieval.PASSKEY_QUESTION + ' ' + key)
  needle = f'The pass key is {key}. Remember it. {key} is the pass key. '
  assert text.count(needle) == 1 and text.count(key) == 3
  hay_start = len(retrieval.PASSKEY_INTRO)
  hay_end = len(text) - len(retrieval.PASSKEY_QUESTION) - len(key) - 1
  at = text.index(needle) - hay_start
  room = hay_end - hay_start - len(needle)
  assert abs(at - depth * room) <= max(len(s) for s in retrieval.PASSKEY_FILLER)
  before = text[hay_start:hay_start + at]
  assert before == '' or before.endswith('. ')            # inserted at a sentence boundary


def test_passkey_rows_and_errors():
  tok = tokenizers.ByteTokenizer()
  make = lambda L, d: grid.rows(retrieval.task('passkey', tok), L, d, 2, seed=1,
                                bos_id=tok.bos_id)
  rows = make(300, 0.5)
  assert rows['inputs'].shape == (2, 300) and (rows['weights'].sum(1) == 5 + 1).all()
  assert rows_lib.doc_length(300, tok.bos_id) == 300
  with pytest.raises(ConfigError, match='passkey needs length'):
    make(50, 0.5)
  with pytest.raises(ConfigError):
    retrieval.needle_example(np.random.default_rng(0), 20, 1.5)
  with pytest.raises(ConfigError, match='needle needs length'):
    retrieval.needle_example(np.random.default_rng(0), 19, 0.5)
  with pytest.raises(ConfigError, match='--retrieval names'):
    retrieval.task('haystack')
