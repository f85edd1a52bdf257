"""TFDS (mocked) and local text sources: every document appears, decoded exactly, once an epoch."""
import json
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ropex import data
from ropex.errors import ConfigError


def _byte_ids(text):
  return [b + 3 for b in text.encode('utf-8')]


def _rows_as_docs(config, n_rows, split='train'):
  """Unpacked rows -> the byte-token documents they hold (bos/eos stripped), in g order."""
  it = data.make_iterator(config, split)
  docs = []
  while len(docs) < n_rows:
    b = next(it)
    for r in range(b['inputs'].shape[0]):
      n = int((b['segment_ids'][r] > 0).sum())
      toks = list(b['inputs'][r, :n]) + [b['targets'][r, n - 1]]
      assert toks[0] == 1 and toks[-1] == 2, 'bos ... eos'
      assert n < config.train.seq_len, 'test documents must fit in a row'
      docs.append(toks[1:-1])
  return docs[:n_rows]


@pytest.mark.parametrize('field', ['text', 'title,text'])
def test_tfds_source_reads_records_in_order_without_shuffle(small_config, field):
  c = small_config(source='tfds', tfds_name='wikipedia/20230601.en', text_field=field,
                   shuffle=False, pack=False)
  with tfds.testing.mock_data(num_examples=5):
    records = tfds.data_source('wikipedia/20230601.en', split='train')
    want = ['\n'.join(records[i][f] for f in field.split(',')) for i in range(5)]
    got = _rows_as_docs(c, 12)
  for g, toks in enumerate(got):
    assert toks == _byte_ids(want[g % 5])


def test_tfds_source_shuffles_each_epoch_as_a_permutation(small_config):
  c = small_config(source='tfds', pack=False, shuffle=True)
  with tfds.testing.mock_data(num_examples=16):
    records = tfds.data_source('wikipedia/20230601.en', split='train')
    want = sorted(_byte_ids(records[i]['text']) for i in range(16))
    got = _rows_as_docs(c, 32)
  assert sorted(got[:16]) == want and sorted(got[16:]) == want
  assert got[:16] != got[16:] and got[:16] != [_byte_ids(records[i]['text']) for i in range(16)]


def test_tfds_source_is_packed_and_resumable(small_config):
  c = small_config(source='tfds', pack=True)
  with tfds.testing.mock_data(num_examples=20):
    it = data.make_iterator(c)
    next(it)
    state = it.get_state()
    rest = [next(it) for _ in range(3)]
    again = data.make_iterator(c)
    again.set_state(state)
    for a, b in zip(rest, [next(again) for _ in range(3)]):
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert rest[0]['segment_ids'].max() >= 2  # short mock articles share rows


def _all_docs(corpus):
  txt = [(corpus / f'doc{i}.txt').read_text() for i in range(6)]
  lines = [json.loads(l) for l in (corpus / 'part.jsonl').read_text().splitlines()]
  return txt, lines


@pytest.mark.parametrize('kind', ['txt', 'jsonl'])
def test_text_files_split_train_eval_by_document_hash(small_config, text_corpus, tmp_path_factory,
                                                      kind):
  txt, lines = _all_docs(text_corpus)
  if kind == 'txt':
    c = small_config(source='text', text_glob=str(text_corpus / '*.txt'), eval_fraction=0.3)
    everything = sorted(_byte_ids(t) for t in txt)
  else:
    c = small_config(source='text', text_glob=str(text_corpus / '*.jsonl'),
                     text_field='inputs,targets', eval_fraction=0.3)
    everything = sorted(_byte_ids(r['inputs'] + '\n' + r['targets']) for r in lines)
  c.data.update(pack=False, shuffle=True)
  c.train.seq_len = 600
  n = len(everything)
  splits = {}
  for split in ('train', 'eval'):
    first = _rows_as_docs(c, 40, split)
    m = len({tuple(d) for d in first})
    splits[split] = sorted(first[:m])
    assert sorted(first[m:2 * m]) == splits[split]  # whole epochs of the split
  assert 0 < len(splits['eval']) < n
  assert sorted(splits['train'] + splits['eval']) == everything
  # moving the files elsewhere keeps every document in its split
  moved = tmp_path_factory.mktemp('moved')
  for f in text_corpus.iterdir():
    shutil.copy(f, moved / f.name)
  c.data.text_glob = str(moved / f'*.{kind}')
  assert sorted(_rows_as_docs(c, len(splits['eval']), 'eval')) == splits['eval']


def test_text_files_split_at_blank_lines(small_config, tmp_path):
  (tmp_path / 'big.txt').write_text('first doc\nline two\n\n\n  \nsecond doc\n\nthird\n')
  c = small_config(source='text', text_glob=str(tmp_path / '*.txt'), eval_fraction=0.0,
                   text_split_blank_lines=True, shuffle=False, pack=False)
  got = _rows_as_docs(c, 3)
  assert got == [_byte_ids('first doc\nline two'), _byte_ids('second doc'), _byte_ids('third\n')]
  c.data.text_split_blank_lines = False
  assert _rows_as_docs(c, 1) == [_byte_ids((tmp_path / 'big.txt').read_text())]


def test_unknown_tfds_dataset_is_a_config_error(small_config):
  c = small_config(source='tfds', tfds_name='no_such_dataset_ropex')
  with pytest.raises(ConfigError, match=r'data\.tfds_name=.no_such_dataset_ropex'):
    data.make_iterator(c)


def test_unprepared_tfds_dataset_is_a_clear_error_and_nothing_is_downloaded(tmp_path):
  from ropex.config import defaults as config_base
  from ropex import data
  from ropex.errors import ConfigError
  c = config_base.base_config('tiny')
  c.data.source, c.data.tfds_data_dir = 'tfds', str(tmp_path / 'tfds')
  with pytest.raises(ConfigError, match='is not prepared there .*tfds build wikipedia'):
    next(data.make_iterator(c, 'train'))
  assert not (tmp_path / 'tfds').exists()
