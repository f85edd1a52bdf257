"""Each synthetic task's answers checked by an independent parser, and the source's task ids."""
import numpy as np
import pytest

from ropex import data
from ropex.data import synthetic
from ropex.errors import ConfigError

LENGTHS = (12, 33, 64, 127, 300)


def _examples(task, **kw):
  """Examples at several lengths (default vocab 16, so long ones exceed the distinct tokens)."""
  rng = np.random.default_rng(7)
  for length in LENGTHS:
    for _ in range(20):
      tokens, answer = synthetic.generate(task, rng, length, **kw)
      assert tokens.dtype == np.int32 and tokens.shape == answer.shape == (length,)
      assert tokens[0] == synthetic.TASK_MARKER[task]
      assert tokens.min() >= 3 and tokens.max() <= synthetic.MAX_ID
      assert answer.any()
      yield tokens, answer


@pytest.mark.parametrize('offset', [1, 8, 9])
def test_copy_offset_answers_equal_the_token_offset_back(offset):
  for tokens, answer in _examples('copy_offset', offset=offset):
    idx = np.flatnonzero(answer)
    np.testing.assert_array_equal(idx, np.arange(1 + offset, len(tokens)))
    np.testing.assert_array_equal(tokens[idx], tokens[idx - offset])


def _context_and_queries(tokens, answer):
  first_query = int(np.argmax(tokens == synthetic.QUERY))
  idx = np.flatnonzero(answer)
  assert np.all(tokens[idx - 2] == synthetic.QUERY)
  assert len(idx) == np.sum(tokens == synthetic.QUERY)
  body = tokens[1:first_query]
  n = int(np.argmax(body == synthetic.FILLER)) if (body == synthetic.FILLER).any() else len(body)
  np.testing.assert_array_equal(body[n:], synthetic.FILLER)  # filler only between context, queries
  np.testing.assert_array_equal(tokens[first_query::3], synthetic.QUERY)  # queries run to the end
  assert (len(tokens) - first_query) % 3 == 0
  return list(body[:n]), idx


@pytest.mark.parametrize('depth', [None, 0.0, 1.0])
def test_prev_token_answers_the_token_before_the_queried_one(depth):
  for tokens, answer in _examples('prev_token', depth=depth):
    context, idx = _context_and_queries(tokens, answer)
    assert len(set(context)) == len(context)
    where = [context.index(tokens[i - 1]) for i in idx]
    for i, j in zip(idx, where):
      assert j >= 1 and tokens[i] == context[j - 1]
    if depth is None:  # distinct items of one parity (no answer is ever queried)
      assert len(set(where)) == len(where) and len({j % 2 for j in where}) == 1
      assert not set(tokens[idx]) & set(tokens[idx - 1])  # answers vs queried items
    else:
      assert where == [1 if depth == 0 else len(context) - 1]


@pytest.mark.parametrize('depth', [None, 0.5])
def test_assoc_recall_answers_the_value_of_the_queried_key(depth):
  for tokens, answer in _examples('assoc_recall', depth=depth):
    context, idx = _context_and_queries(tokens, answer)
    keys, values = context[0::2], context[1::2]
    assert len(set(keys)) == len(keys) == len(values)
    assert not set(keys) & set(values)
    for i in idx:
      assert tokens[i] == values[keys.index(tokens[i - 1])]
    if depth is not None:
      assert [keys.index(tokens[i - 1]) for i in idx] == [round(0.5 * (len(keys) - 1))]


@pytest.mark.parametrize('vocab', [16, 64])
def test_induction_answers_continue_a_bigram_seen_once_before(vocab):
  for tokens, answer in _examples('induction', vocab=vocab):
    idx = np.flatnonzero(answer)
    np.testing.assert_array_equal(idx, np.arange(idx[0], len(tokens)))  # the sequence's end
    span = len(idx) + 1
    for i in idx:
      prev = np.flatnonzero(tokens[:i - 1] == tokens[i - 1])
      assert len(prev) == 1 if span < vocab else len(prev) >= 1
      assert any(tokens[p + 1] == tokens[i] for p in prev)
    assert tokens.max() < synthetic.CONTENT + vocab


def test_induction_gap_and_span_are_respected():
  rng = np.random.default_rng(0)
  tokens, answer = synthetic.generate('induction', rng, 40, span=6, gap=5)
  np.testing.assert_array_equal(tokens[-6:], tokens[-6 - 5 - 6:-5 - 6])
  assert answer.sum() == 5


def test_bad_task_and_kwargs_raise_config_errors():
  rng = np.random.default_rng(0)
  with pytest.raises(ConfigError, match='copy_offset, prev_token'):
    synthetic.generate('sorting', rng, 32)
  with pytest.raises(ConfigError, match='offset'):
    synthetic.generate('copy_offset', rng, 8, offset=8)
  with pytest.raises(ConfigError, match='vocab'):
    synthetic.generate('prev_token', rng, 64, vocab=500)


@pytest.mark.parametrize('bos,eos', [(True, True), (False, False), (False, True)])
def test_synthetic_rows_carry_task_ids_on_checked_answers(small_config, bos, eos):
  c = small_config(add_bos=bos, add_eos=eos)
  names = data.task_names(c)
  assert names == tuple(c.data.tasks)
  batch = next(data.make_iterator(c))
  seen = set()
  marker_task = {v: k for k, v in synthetic.TASK_MARKER.items()}
  for r in range(batch['inputs'].shape[0]):
    seg, inp, tgt, w, tid = (batch[k][r] for k in ('segment_ids', 'inputs', 'targets', 'weights',
                                                   'task_ids'))
    assert seg.min() >= 1  # synthetic rows are fully packed
    for s in range(1, seg.max() + 1):
      m = np.flatnonzero(seg == s)
      doc = np.concatenate([inp[m], tgt[m[-1:]]])  # the example's tokens
      assert (doc[0] == 1) == bos and (doc[-1] == 2) == eos
      task = marker_task[doc[int(bos)]]
      t = names.index(task)
      seen.add(task)
      ans = m[tid[m] >= 0]
      assert len(ans) and np.all(tid[ans] == t)
      np.testing.assert_array_equal(w[m], (tid[m] >= 0).astype(np.float32))
      body = doc[int(bos):len(doc) - int(eos)]
      k = ans - m[0] + 1 - int(bos)  # answer positions within the task's own tokens
      if task == 'copy_offset':
        np.testing.assert_array_equal(k, np.arange(9, len(body)))
        np.testing.assert_array_equal(body[k], body[k - 8])
      if task in ('prev_token', 'assoc_recall'):
        np.testing.assert_array_equal(body[k - 2], synthetic.QUERY)
  assert seen == set(names)
