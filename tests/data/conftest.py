"""Shared helpers for the data tests: small configs built from the real base config."""
import json

import pytest

from ropex.config import defaults as config_base


def _small_config(**data_overrides):
  c = config_base.base_config('tiny')
  c.train.batch_size, c.train.seq_len = 8, 64
  c.data.prefetch = 0
  c.data.update(data_overrides)
  return c


@pytest.fixture
def small_config():
  """``small_config(**data_overrides)``: the tiny config with batch 8, seq_len 64, no prefetch."""
  return _small_config


@pytest.fixture
def text_corpus(tmp_path):
  """Six .txt documents (one per file) and twelve .jsonl records, deterministic content."""
  for i in range(6):
    (tmp_path / f'doc{i}.txt').write_text(f'Document {i}: ' + 'abcdefghij ' * (3 + 7 * i))
  with open(tmp_path / 'part.jsonl', 'w') as f:
    for i in range(12):
      f.write(json.dumps({'inputs': f'question {i}?', 'targets': f'answer {i}' * (1 + i % 5),
                          'text': f'record {i} ' * (2 + i)}) + '\n')
  return tmp_path
