"""Text corpora (local, or ``gs://`` and any other ``etils.epath`` URL) as a random-access
source of documents.

``data.text_glob`` matches ``.txt`` and/or ``.jsonl`` files (``**`` recurses, locally only):

- ``.txt``: one document per file; with ``data.text_split_blank_lines=True`` each file is split
  into documents at blank lines (for corpora stored as one big file).
- ``.jsonl``: one document per non-empty line, a JSON object; ``data.text_field`` names the field,
  or several comma-separated fields joined with a newline (FlanV2: ``inputs,targets``).

The train/eval split is a deterministic hash of each document's identity (file name without its
directory, and the document's ordinal in the file): a document is held out when its hash, as a
fraction of 2**64, is below ``data.eval_fraction``. Moving the files or adding files therefore
never moves a document between splits. Only byte offsets are kept in memory; documents are read
from disk on access.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np

from ropex import paths
from ropex.errors import ConfigError

EXTENSIONS = ('.txt', '.jsonl')
_BLANK_LINES = re.compile(rb'\n[ \t\r]*\n[ \t\r\n]*')
_CHUNK = 1 << 26


def matching_files(pattern: str, flag: str = 'data.text_glob') -> list[str]:
  files = paths.glob(pattern, flag)
  if not files:
    raise ConfigError(f'{flag}={pattern!r} matches no files; give a glob of .txt or '
                      '.jsonl files')
  bad = [f for f in files if not f.endswith(EXTENSIONS)]
  if bad:
    raise ConfigError(f'{flag}={pattern!r} matches {bad[0]!r}; allowed extensions: '
                      f'{", ".join(EXTENSIONS)}')
  return files


def check_corpus(files, fields, glob_flag: str = 'data.text_glob',
                 field_flag: str = 'data.text_field') -> None:
  """Reads every file once, before anything is written: each .jsonl line must be a JSON object
  with every field in ``fields``, and the corpus must hold some non-blank text. A ConfigError
  names the file and line."""
  text_found = False
  for path in files:
    with _open(path) as f:
      if not path.endswith('.jsonl'):
        text_found = text_found or any(chunk.strip() for chunk in iter(lambda: f.read(1 << 20), b''))
        continue
      for number, raw in enumerate(f, 1):
        if not raw.strip():
          continue
        try:
          record = json.loads(raw)
        except ValueError:
          raise ConfigError(f'{path} line {number} is not a JSON object; every non-blank line '
                            f'of a .jsonl file in {glob_flag} must be one') from None
        missing = [k for k in fields if not isinstance(record, dict) or k not in record]
        if missing:
          raise ConfigError(f'{path} line {number} has no field {missing[0]!r}; set '
                            f'{field_flag} to fields every record has')
        text_found = text_found or any(str(record[k]).strip() for k in fields)
  if not text_found:
    raise ConfigError(f'{glob_flag} matches only empty files ({", ".join(files[:3])}); give a '
                      'corpus with text')


def _line_spans(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(start, end) byte offsets of the non-blank lines of a file, read in chunks."""
  newlines, size = [], _size(path)
  with _open(path) as f:
    offset = 0
    while chunk := f.read(_CHUNK):
      newlines.append(offset + np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10))
      offset += len(chunk)
  ends = np.concatenate(newlines + [np.array([size])]) if newlines else np.array([size])
  starts = np.concatenate([[0], ends[:-1] + 1])
  keep = ends > starts
  return starts[keep].astype(np.int64), ends[keep].astype(np.int64)


def _paragraph_spans(path: str) -> tuple[np.ndarray, np.ndarray]:
  with _open(path) as f:
    data = f.read()
  bounds = [0]
  for m in _BLANK_LINES.finditer(data):
    bounds += [m.start(), m.end()]
  bounds.append(len(data))
  spans = [(s, e) for s, e in zip(bounds[::2], bounds[1::2]) if data[s:e].strip()]
  arr = np.array(spans, np.int64).reshape(-1, 2)
  return arr[:, 0], arr[:, 1]


def _open(path: str):
  return paths.path(path).open('rb')


def _size(path: str) -> int:
  return int(paths.path(path).stat().length)


def in_eval_split(key: str, eval_fraction: float) -> bool:
  h = int.from_bytes(hashlib.blake2b(key.encode('utf-8'), digest_size=8).digest(), 'little')
  return h / 2.0**64 < eval_fraction


class TextFiles:
  """Documents (str for .txt, dict for .jsonl) of one split; ``len`` and ``[i]``."""

  def __init__(self, pattern: str, split: str, eval_fraction: float, fields: tuple[str, ...],
               split_blank_lines: bool = False):
    self.files = matching_files(pattern)
    self.fields = fields
    check_corpus(self.files, fields)  # problems surface before the workdir is touched
    file_ids, starts, ends = [], [], []
    for i, path in enumerate(self.files):
      if path.endswith('.jsonl'):
        s, e = _line_spans(path)
      elif split_blank_lines:
        s, e = _paragraph_spans(path)
      else:
        s, e = np.array([0], np.int64), np.array([_size(path)], np.int64)
      name = os.path.basename(path)
      held_out = np.array([in_eval_split(f'{name}:{j}', eval_fraction) for j in range(len(s))],
                          bool)
      keep = held_out if split == 'eval' else ~held_out
      file_ids.append(np.full(int(keep.sum()), i, np.int32))
      starts.append(s[keep])
      ends.append(e[keep])
    self._file = np.concatenate(file_ids)
    self._start = np.concatenate(starts)
    self._end = np.concatenate(ends)

  def __len__(self) -> int:
    return len(self._file)

  def __getitem__(self, i: int):
    path = self.files[self._file[i]]
    with _open(path) as f:
      f.seek(int(self._start[i]))
      raw = f.read(int(self._end[i] - self._start[i]))
    if not path.endswith('.jsonl'):
      return raw.decode('utf-8', errors='replace')
    try:
      return json.loads(raw)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: byte {int(self._start[i])}: not a JSON line ({e})') from None
