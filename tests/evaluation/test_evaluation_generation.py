"""Free greedy generation (ropex.evaluation.generation) and RULER's string-match metrics."""

import jax.numpy as jnp
import numpy as np
import pytest

from ropex import model as model_lib
from ropex.data import synthetic
from ropex.evaluation import generation, grid, retrieval, scoring, tasks, words
from ropex.model.config import ModelConfig

from evaluation_testlib import copier

C = synthetic.CONTENT


def test_greedy_decode_equals_argmax_of_a_dense_forward(micro_rope):
  """Every generated token is the argmax of the dense logits (``Transformer.__call__``, one
  causal forward over prompt + generation) at the position before it: the definition of greedy
  decoding. Chunked attention (rows of 19 > 8 tokens), two batches, unequal prompt lengths."""
  config, params = micro_rope
  scorer = scoring.Scorer(ModelConfig.from_config(config.model), params, attention_chunk=8,
                          tokens_per_batch=48)                   # 2 rows per batch: 2 batches
  rng = np.random.default_rng(0)
  prompts = rng.integers(3, 250, size=(3, 13)).astype(np.int32)
  lengths = np.array([13, 5, 9], np.int32)
  got = scorer.generate(prompts, lengths, 6)
  assert got.shape == (3, 6)
  seq = np.zeros((3, 19), np.int32)
  for i, n in enumerate(lengths):
    seq[i, :n], seq[i, n:n + 6] = prompts[i, :n], got[i]
  cfg = ModelConfig.from_config(config.model)
  logits = np.asarray(model_lib.Transformer(cfg).apply({'params': params}, jnp.asarray(seq)))
  for i, n in enumerate(lengths):
    np.testing.assert_array_equal(logits[i, n - 1:n + 5].argmax(-1), got[i])
  assert len({tuple(r) for r in got}) > 1     # not a constant output


def test_copier_generation_continues_the_period():
  """A model that copies the token 7 back generates the copy_offset block (period 8 counting
  the marker offset) exactly, from prompts of different lengths."""
  config, params = copier(7)
  scorer = scoring.Scorer(ModelConfig.from_config(config.model), params, attention_chunk=0)
  rows = grid.rows(tasks.task('copy_offset'), 40, None, 3, seed=2, bos_id=1)
  full = np.concatenate([rows['inputs'][:, :1], rows['targets']], axis=1)
  lengths = np.array([12, 20, 29], np.int32)
  got = scorer.generate(full, lengths, 11)
  for i, n in enumerate(lengths):
    np.testing.assert_array_equal(got[i], full[i, n:n + 11])


def test_needle_by_generation_matches_the_rule():
  """The copier of the token 2 back answers ``Q k*`` with the last pair's value; the last pair
  is always a distractor, so it is right exactly when that value equals the needle's."""
  config, params = copier(2)
  scorer = scoring.Scorer(ModelConfig.from_config(config.model), params, attention_chunk=64)
  task = retrieval.task('needle', vocab=4)
  for depth in (0.0, 1.0):
    rows = grid.rows(task, 40, depth, 12, seed=3, bos_id=1)
    cell = grid.score_cell(scorer, rows, task)
    last_value, answer = rows['inputs'][:, -3], rows['targets'][:, -1]
    assert cell['string_match_all'] == pytest.approx(np.mean(last_value == answer))
    assert cell['teacher_forced_accuracy'] == pytest.approx(np.mean(last_value == answer))


def test_string_match_all_and_part_are_rulers():
  """Hand-made cases, values worked out from RULER's definitions (constants.py): the fraction
  (all) or any (part) of the references that occur in the prediction, case-insensitive,
  averaged over examples, x 100, rounded to 2 decimals."""
  preds = ['The numbers are 123 and 456.', 'nothing here', 'ABC, xyz']
  refs = [['123', '456', '789'], ['1'], ['xyz', 'abc']]
  assert generation.string_match_all(preds, refs) == round((2 / 3 + 0 + 1) / 3 * 100, 2) == 55.56
  assert generation.string_match_part(preds, refs) == round((1 + 0 + 1) / 3 * 100, 2) == 66.67
  assert generation.match_all('456, 123', ['123', '456']) == 1.0       # order is free
  assert generation.match_all('12345', ['234']) == 1.0                 # a substring counts
  assert generation.match_part('x', ['y', 'z']) == 0.0
  assert generation.string_match_all(['a b', 'c'], [['a', 'b'], ['c', 'd']]) == 75.0
  assert generation.postprocess('  7\x01 8\t ') == '7\n 8'


def test_symbol_match_text_matches_whole_tokens():
  sym = words.SymbolTokenizer(16)
  pred = sym.match_text([C + 12, synthetic.QUERY, 0])
  assert pred == '<w12><Q><t0>'
  assert generation.match_all(pred, [sym.match_text([C + 1])]) == 0.0   # <w1> is not in <w12>
  assert generation.match_all(pred, [sym.match_text([C + 12])]) == 1.0
