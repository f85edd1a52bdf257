"""Training a SentencePiece tokenizer on local text files (``python -m ropex.tokenizer``).

``.txt`` files are read line by line; ``.jsonl`` files contribute ``text_field`` (comma-
separated fields are joined with a newline) of every record. The model uses Gemma's special ids
(pad 0, eos 1, bos 2, unk 3), so it plugs into ``data.tokenizer='sentencepiece'``.
"""

from __future__ import annotations

import io
import json
import os
from typing import Iterator, Sequence

from absl import logging
import sentencepiece as spm

from ropex import paths
from ropex.data import text_files
from ropex.errors import ConfigError


def lines(files: Sequence[str], fields: Sequence[str]) -> Iterator[str]:
  """Non-empty lines of the files (records' fields for .jsonl)."""
  for path in files:
    with paths.path(path).open('rb') as f:  # local or gs://
      for raw in (line.decode('utf-8', errors='replace') for line in f):
        if path.endswith('.jsonl'):
          if not raw.strip():
            continue
          record = json.loads(raw)
          raw = '\n'.join(str(record[k]) for k in fields)
        for line in raw.splitlines():
          if line.strip():
            yield line


def _ancestors(path: str):
  while True:
    yield path
    parent = os.path.dirname(path)
    if parent == path:
      return
    path = parent


def train(pattern: str, vocab_size: int, output: str, model_type: str = 'unigram',
          text_field: str = 'text', character_coverage: float = 0.9995,
          max_sentences: int = 2_000_000, seed: int = 0) -> str:
  """Trains and writes ``output`` (must end in .model); returns its path."""
  if not output.endswith('.model'):
    raise ConfigError(f'--output={output!r} must end in .model')
  url = paths.is_url(output)
  if url:
    paths.path(output, '--output')  # a scheme or backend that cannot be used stops here
  parent = None if url else os.path.dirname(os.path.abspath(output))
  blocking = parent and next(
      (p for p in _ancestors(parent) if os.path.exists(p) and not os.path.isdir(p)), None)
  if blocking:
    raise ConfigError(f'--output={output!r} lies under {blocking!r}, which is a file; give a '
                      'path in a directory')
  files = text_files.matching_files(pattern, '--input')
  fields = [f.strip() for f in text_field.split(',') if f.strip()]
  text_files.check_corpus(files, fields, '--input', '--text_field')
  spm.set_random_generator_seed(seed)
  if url:  # the model is serialised in memory and written through epath (no .vocab file)
    model = io.BytesIO()
    destination = {'model_writer': model}
  else:
    os.makedirs(parent, exist_ok=True)
    destination = {'model_prefix': output[:-len('.model')]}
  spm.SentencePieceTrainer.train(
      sentence_iterator=lines(files, fields), **destination,
      vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, byte_fallback=True,
      input_sentence_size=max_sentences, shuffle_input_sentence=True,
      hard_vocab_limit=False, minloglevel=2, num_threads=os.cpu_count() or 1)
  if url:
    paths.path(output).write_bytes(model.getvalue())
  logging.info('wrote %s (%d files)', output, len(files))
  return output
