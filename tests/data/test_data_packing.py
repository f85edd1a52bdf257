"""Packing invariants, process-count invariance and exact resume of the row streams."""
import json

import numpy as np
import pytest

from ropex import data
from ropex.data import packing
from ropex.data.sources import Document


def _doc_tokens(g):
  """Document g: tokens g*1000, g*1000+1, ...; lengths from 2 to 150 (some longer than a row)."""
  n = 2 + (g * 37) % 149
  return np.arange(g * 1000, g * 1000 + n, dtype=np.int32)


class _Docs:
  def __getitem__(self, g):
    return Document.from_tokens(_doc_tokens(g))


def _batches(it, n):
  return [next(it) for _ in range(n)]


@pytest.mark.parametrize('reset', [True, False])
def test_packed_rows_reproduce_each_streams_documents(reset):
  B, L, steps = 4, 64, 12
  it = packing.PackedBatches(_Docs(), B, L, 0, B, pack=True, reset_positions=reset)
  batches = _batches(it, steps)
  for r in range(B):
    pieces = []
    for b in batches:
      seg, inp, tgt, pos, w = (b[k][r] for k in ('segment_ids', 'inputs', 'targets', 'positions',
                                                 'weights'))
      live = seg > 0
      # padding only at the end of a row, segment ids 1, 2, ... in order
      np.testing.assert_array_equal(live, np.arange(L) < live.sum())
      np.testing.assert_array_equal(np.diff(seg[live]) >= 0, True)
      assert set(np.unique(seg[live])) == set(range(1, seg.max() + 1))
      np.testing.assert_array_equal(tgt[live], inp[live] + 1)  # next token of the same document
      np.testing.assert_array_equal(w, live.astype(np.float32))
      np.testing.assert_array_equal(b['task_ids'][r], -1)
      np.testing.assert_array_equal(inp[~live], 0)
      for s in range(1, seg.max() + 1):
        m = seg == s
        assert len(np.unique(inp[m] // 1000)) == 1  # a segment never mixes documents
        expect = np.arange(m.sum()) if reset else np.flatnonzero(m)
        np.testing.assert_array_equal(pos[m], expect)
        pieces.append(inp[m])
    # the concatenated pieces are the stream's documents g = k*B + r, in order, with nothing lost
    got = np.concatenate(pieces)
    n_docs = len(np.unique(got // 1000))
    want = np.concatenate([_doc_tokens(k * B + r)[:-1] for k in range(n_docs)])
    np.testing.assert_array_equal(got, want[:len(got)])
    assert len(got) > len(want) - len(_doc_tokens((n_docs - 1) * B + r))


def test_documents_that_fit_are_not_split_and_long_ones_are():
  it = packing.PackedBatches(_Docs(), 2, 64, 0, 2)
  for b in _batches(it, 20):
    for r in range(2):
      seg, inp = b['segment_ids'][r], b['inputs'][r]
      for s in range(1, seg.max() + 1):
        toks = inp[seg == s]
        g = int(toks[0]) // 1000
        full = len(_doc_tokens(g)) - 1
        if full <= 64:  # a document that fits in a row appears whole
          np.testing.assert_array_equal(toks, _doc_tokens(g)[:-1])


def test_unpacked_rows_hold_one_truncated_document():
  B, L = 3, 64
  it = packing.PackedBatches(_Docs(), B, L, 0, B, pack=False)
  for k, b in enumerate(_batches(it, 5)):
    for r in range(B):
      toks = _doc_tokens(k * B + r)
      n = min(len(toks) - 1, L)
      np.testing.assert_array_equal(b['inputs'][r, :n], toks[:n])
      np.testing.assert_array_equal(b['targets'][r, :n], toks[1:n + 1])
      np.testing.assert_array_equal(b['segment_ids'][r], (np.arange(L) < n).astype(np.int32))
      np.testing.assert_array_equal(b['inputs'][r, n:], 0)


def _global(config, split, process_count, steps):
  its = [data.make_iterator(config, split, p, process_count) for p in range(process_count)]
  out = []
  for _ in range(steps):
    parts = [next(it) for it in its]
    out.append({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
  return out


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize('source', ['synthetic', 'text'])
def test_global_batch_is_independent_of_process_count(source, text_corpus, small_config):
  c = small_config()
  if source == 'text':
    c.data.update(source='text', text_glob=str(text_corpus / '*.txt'), eval_fraction=0.2)
  ref = _global(c, 'train', 1, 4)
  assert ref[0]['inputs'].shape == (8, 64)
  for count in (2, 4, 8):
    _assert_same(_global(c, 'train', count, 4), ref)


@pytest.mark.parametrize('prefetch', [0, 3])
@pytest.mark.parametrize('source', ['synthetic', 'text_jsonl'])
def test_resume_is_exact(source, prefetch, text_corpus, small_config):
  c = small_config(prefetch=prefetch, pack=True)
  if source == 'text_jsonl':
    c.data.update(source='text', text_glob=str(text_corpus / '*.jsonl'), text_field='text',
                  eval_fraction=0.2)
  for split in ('train', 'eval'):
    it = data.make_iterator(c, split, 1, 2)
    _batches(it, 3)
    state = json.loads(json.dumps(it.get_state()))
    rest = _batches(it, 4)
    fresh = data.make_iterator(c, split, 1, 2)
    fresh.set_state(state)
    _assert_same(_batches(fresh, 4), rest)


def test_state_of_another_layout_is_rejected(small_config):
  c = small_config()
  state = data.make_iterator(c, 'train', 0, 2).get_state()
  with pytest.raises(ValueError, match='first_stream'):
    data.make_iterator(c, 'train', 1, 2).set_state(state)


def test_train_and_eval_differ_and_worker_threads_change_nothing(small_config):
  c = small_config()
  train, ev = _global(c, 'train', 1, 2), _global(c, 'eval', 1, 2)
  assert not np.array_equal(train[0]['inputs'], ev[0]['inputs'])
  c.data.worker_count = 3
  _assert_same(_global(c, 'train', 1, 2), train)
