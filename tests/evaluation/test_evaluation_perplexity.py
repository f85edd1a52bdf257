"""Length sweep: exactly the requested lengths; perplexity = exp(weighted mean token loss)."""

import math

import numpy as np
import pytest

from ropex.data import sources
from ropex.evaluation import perplexity, rows as rows_lib, scoring
from ropex.model.config import ModelConfig
from ropex.errors import ConfigError

from evaluation_testlib import dense_token_stats


class SpyScorer:
  """Records the shapes it is asked to score; loss = position, correct = even targets."""

  def __init__(self):
    self.shapes = []

  def score(self, rows):
    self.shapes.append(rows['inputs'].shape)
    loss = rows['positions'].astype(np.float64)
    return loss, rows['targets'] % 2 == 0


def test_sweep_evaluates_exactly_the_requested_lengths():
  asked = []

  def rows_fn(L):
    asked.append(L)
    return rows_lib.synthetic(('copy_offset',), L, 3, (0,), bos_id=1)

  spy = SpyScorer()
  out = perplexity.length_sweep(spy, rows_fn, [24, 12, 40], bucket=8)
  assert asked == [24, 12, 40]
  assert spy.shapes == [(3, 24), (3, 12), (3, 40)]
  assert out['lengths'] == [24, 12, 40] and len(out['perplexity']) == 3
  assert sorted(out['by_position']) == ['12', '24', '40']
  # loss = position: the weighted mean is the mean position of the answer tokens.
  rows = rows_fn(40)
  w = rows['weights']
  want = float((rows['positions'] * w).sum() / w.sum())
  assert out['loss'][2] == pytest.approx(want)
  assert out['perplexity'][2] == pytest.approx(math.exp(want))
  short = perplexity.length_sweep(spy, rows_fn, [6, 12], bucket=8)   # copy_offset needs >= 10
  assert short['perplexity'][0] is None and short['rows'] == [0, 3]
  assert 'copy_offset needs length' in short['errors']['6'] and short['perplexity'][1] > 0
  for bad in ([], [8, 8], [0, 4], [4.5]):
    with pytest.raises(ConfigError):
      perplexity.length_sweep(spy, rows_fn, bad, bucket=8)


def test_perplexity_is_exp_of_mean_token_loss(micro_rope):
  config, params = micro_rope
  scorer = scoring.Scorer(ModelConfig.from_config(config.model), params, attention_chunk=16,
                          loss_chunk=7)
  make = lambda L: rows_lib.synthetic(('copy_offset', 'assoc_recall'), L, 4, (5,), bos_id=1)
  out = perplexity.length_sweep(scorer, make, [20, 40], bucket=16)
  for i, L in enumerate([20, 40]):
    rows = make(L)
    loss_NT, correct_NT = dense_token_stats(config, params, rows)
    w = rows['weights'].astype(np.float64)
    assert w.sum() > 0 and w.sum() < w.size     # answer tokens only
    mean = (loss_NT * w).sum() / w.sum()
    assert out['loss'][i] == pytest.approx(mean, rel=1e-5)
    assert out['perplexity'][i] == pytest.approx(math.exp(mean), rel=1e-5)
    assert out['accuracy'][i] == pytest.approx((correct_NT * w).sum() / w.sum())
    buckets = out['by_position'][str(L)]
    for start, loss in zip(buckets['start'], buckets['loss']):
      sel = (rows['positions'] >= start) & (rows['positions'] < start + 16)
      assert loss == pytest.approx((loss_NT * w)[sel].sum() / w[sel].sum(), rel=1e-5)


def test_synthetic_rows_are_one_example_per_row():
  rows = rows_lib.synthetic(('copy_offset',), 30, 2, (3,), bos_id=1)
  assert rows['inputs'].shape == (2, 30)
  assert (rows['inputs'][:, 0] == 1).all()                # bos, as in training
  np.testing.assert_array_equal(rows['inputs'][:, 1:], rows['targets'][:, :-1])
  # copy_offset (offset 8): every weighted target equals the input 7 positions earlier.
  n, t = np.nonzero(rows['weights'])
  np.testing.assert_array_equal(rows['targets'][n, t], rows['inputs'][n, t - 7])
  assert (rows['segment_ids'] == 1).all()
  np.testing.assert_array_equal(rows['positions'][0], np.arange(30))


def _doc(tokens):
  return sources.Document.from_tokens(np.asarray(tokens, np.int32))


def test_eval_split_rows_from_documents_and_stream():
  docs = [_doc(np.arange(100, 100 + n)) for n in (5, 12, 7, 30, 11)]
  rows = rows_lib.from_source(docs, 10, 3, 'documents', max_documents=5)
  # only documents with >= 11 tokens, each row its first 11 tokens
  np.testing.assert_array_equal(rows['inputs'][:, 0], [100, 100, 100])
  np.testing.assert_array_equal(rows['targets'][:, -1], [110, 110, 110])
  assert rows['inputs'].shape == (3, 10)
  stream = rows_lib.from_source(docs, 10, 2, 'stream', max_documents=5)
  flat = np.concatenate([np.arange(100, 100 + n) for n in (5, 12, 7, 30, 11)])
  np.testing.assert_array_equal(stream['inputs'][1], flat[11:21])
  np.testing.assert_array_equal(stream['targets'][1], flat[12:22])
  # the first token of each document is not a target (weight 0), everything else is
  starts = np.cumsum([0, 5, 12, 7, 30])
  want_w = np.ones(len(flat))
  want_w[starts] = 0
  np.testing.assert_array_equal(stream['weights'][0], want_w[1:11])
  with pytest.raises(ConfigError):
    rows_lib.from_source(docs, 10, 2, 'pages')


def test_same_documents_at_every_length():
  sizes = (5, 31, 12, 50, 41, 8, 33)
  docs = [_doc(1000 * i + np.arange(n)) for i, n in enumerate(sizes)]
  chosen = rows_lib.same_documents(docs, 31, 3, max_documents=len(docs))
  assert chosen['ids'] == ['1', '3', '4'] and chosen['scanned'] == 5   # >= 31 tokens, first 3
  rows = {L: rows_lib.prefixes(chosen, L) for L in (4, 17, 30)}
  for L, r in rows.items():
    assert r['doc_ids'] == ['1', '3', '4'] and r['inputs'].shape == (3, L)
    np.testing.assert_array_equal(r['inputs'], [1000 * i + np.arange(L) for i in (1, 3, 4)])
    np.testing.assert_array_equal(r['targets'], [1000 * i + 1 + np.arange(L) for i in (1, 3, 4)])
  sweep = perplexity.length_sweep(SpyScorer(), lambda L: rows[L], [30, 4, 17], bucket=8)
  assert sweep['document_ids'] == {'30': ['1', '3', '4'], '4': ['1', '3', '4'],
                                   '17': ['1', '3', '4']}
  assert sweep['rows'] == [3, 3, 3]
  with pytest.raises(ValueError, match='needs documents of 32 tokens'):
    rows_lib.prefixes(chosen, 31)


def test_text_perplexity_reads_the_same_documents_from_any_source(micro_rope, tmp_path):
  from ropex.evaluation import suite   # pylint: disable=g-import-not-at-top
  config, params = micro_rope
  rng = np.random.default_rng(0)
  sizes = [int(n) for n in rng.integers(60, 400, size=12)]
  for i, n in enumerate(sizes):
    (tmp_path / f'd{i:02d}.txt').write_text(''.join(chr(97 + int(c)) for c in
                                                    rng.integers(0, 26, n)))
  spec = f'text:{tmp_path}/*.txt'
  opts = dict(lengths=[64, 200, 128], examples=4, tasks=(), retrieval='none', depths=[0.5],
              data=spec)
  out = suite.evaluate(config, params, suite.Options(**opts))   # a synthetic run, text data
  p = out['perplexity']
  assert p['data'] == spec and p['text_mode'] == 'documents'
  ids = p['document_ids']['200']
  assert ids == p['document_ids']['64'] == p['document_ids']['128'] and len(ids) == 4
  # bos + text >= 201 tokens: documents of >= 200 characters, and there are at least 4
  assert p['documents'] == {'count': 4, 'min_tokens': 201, 'scanned': p['documents']['scanned']}
  assert sum(n >= 200 for n in sizes) >= 4 and p['rows'] == [4, 4, 4]
  for bad, why in (('csv:x', "names the source 'csv'"), ('tfds:wiki', 'needs both'),
                   ('text:', 'is not a known source'), ('synthetic', 'needs a run trained')):
    c = config if bad != 'synthetic' else copy_as_text(config, tmp_path)
    with pytest.raises(ConfigError, match=r"--data=.*" + why + '.*allowed: auto, synthetic, '
                       r'eval, text:GLOB\[:FIELD\] or tfds:NAME:SPLIT'):
      suite.resolve(c, suite.Options(**dict(opts, data=bad)))


def copy_as_text(config, root):
  c = config.copy_and_resolve_references()
  c.data.update(source='text', text_glob=str(root / '*.txt'), eval_fraction=1.0)
  return c


def test_data_spec_forms():
  from ropex.evaluation import data_spec   # pylint: disable=g-import-not-at-top
  assert data_spec.parse('text:data/*.jsonl:inputs,targets') == {
      'kind': 'text', 'glob': 'data/*.jsonl', 'field': 'inputs,targets'}
  assert data_spec.parse('text:gs://b/x/*.jsonl') == {'kind': 'text', 'glob': 'gs://b/x/*.jsonl',
                                                       'field': 'text'}
  assert data_spec.parse('tfds:wikipedia/20230601.en:train[:1%]') == {
      'kind': 'tfds', 'name': 'wikipedia/20230601.en', 'split': 'train[:1%]'}
