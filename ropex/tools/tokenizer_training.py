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

from ropex import inputs, paths
from ropex.data import text_files
from ropex.errors import ConfigError


def lines(files: Sequence[str], fields: Sequence[str]) -> Iterator[str]:
  """Non-empty lines of the files (records' fields for .jsonl)."""
  for path in files:
    with paths.path(path).open('rb') as f:  # local or gs://
      for raw in (line.decode('utf-8', errors='replace') for line in f):  # checked: check_text
        if path.endswith('.jsonl'):
          if not raw.strip():
            continue
          record = json.loads(raw)
          raw = '\n'.join(str(record[k]) for k in fields)
        for line in raw.splitlines():
          if line.strip():
            yield line


_SNIFF_BYTES = 1 << 20


def check_text(files: Sequence[str], flag: str = '--input') -> None:
  """ConfigError naming the first file whose first MiB is not UTF-8 text (a binary file given
  as a corpus: NUL bytes, or bytes that do not decode)."""
  for path in files:
    with inputs.reading(f'{flag} file', path, 'UTF-8 text (.txt, .jsonl)'):
      with paths.path(path).open('rb') as f:
        head = f.read(_SNIFF_BYTES)
      if b'\0' in head:
        raise ConfigError(f'{flag} file={path!r} holds NUL bytes: it is binary, not text; '
                          'allowed: UTF-8 text (.txt, .jsonl)')
      cut = len(head) == _SNIFF_BYTES   # a character may be cut at the end of the sample
      try:
        head.decode('utf-8')
      except UnicodeDecodeError as e:
        if not (cut and e.start >= len(head) - 3):
          raise


def pieces(path: str) -> int:
  """The number of pieces of the SentencePiece model at ``path`` (local or a URL)."""
  return spm.SentencePieceProcessor(model_proto=paths.path(path).read_bytes()).GetPieceSize()


def _missing_dirs(path: str) -> list[str]:
  """The folders ``os.makedirs(path)`` would create, outermost first."""
  missing = []
  while path and not os.path.exists(path):
    missing.append(path)
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing[::-1]


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
  check_text(files)
  text_files.check_corpus(files, fields, '--input', '--text_field')
  if not url:
    inputs.output(parent, '--output folder')
  spm.set_random_generator_seed(seed)
  created = [] if url else _missing_dirs(parent)
  if url:  # the model is serialised in memory and written through epath (no .vocab file)
    model = io.BytesIO()
    destination = {'model_writer': model}
  else:
    os.makedirs(parent, exist_ok=True)
    destination = {'model_prefix': output[:-len('.model')]}
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines(files, fields), **destination,
        vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, byte_fallback=True,
        input_sentence_size=max_sentences, shuffle_input_sentence=True,
        hard_vocab_limit=False, minloglevel=2, num_threads=os.cpu_count() or 1)
  except RuntimeError as e:  # SentencePiece's trainer reports every problem as RuntimeError
    for folder in reversed(created):   # nothing is left behind
      os.rmdir(folder)
    raise ConfigError(f'--input={pattern!r}: SentencePiece could not train on it '
                      f'({" ".join(str(e).split())[:200]}); allowed: a UTF-8 text corpus '
                      f'(.txt, .jsonl)') from None
  if url:
    paths.path(output).write_bytes(model.getvalue())
  logging.info('wrote %s (%d files)', output, len(files))
  return output
