"""Released weights at a URL (``gs://bucket/Qwen3-0.6B``, any scheme :mod:`ropex.paths` serves):
staged into a local folder, then read exactly as a local path.

safetensors and GGUF are memory-mapped, which needs a local file, so :func:`stage` copies the
files the format needs through ``etils.epath``, file by file, and says so in one log line (what,
how many bytes, to where):

* a Hugging Face folder: ``config.json``, ``*.safetensors`` (+ ``*.safetensors.index.json``),
  the tokenizer files and ``generation_config.json`` (nothing else in the folder);
* a ``.gguf`` file: that file;
* an official Gemma Flax (orbax) folder: the whole folder, with ``tokenizer.model`` from the
  folder above (Kaggle's layout) when it lies there.

The copy lives in one temporary folder per process (``ropex-weights-*`` under ``$TMPDIR``),
kept while the process runs — the tokenizer is read lazily and its file must stay readable
while the model is used — and removed when it exits. A URL is staged once per process
(:func:`read_model`, :func:`load_model` and an entry point's own checks share the copy).
The records keep the URL: ``Imported.source['path']`` names it, never the copy.
Every failure to read the URL (missing, no credentials, no network) is one
:class:`ConfigError` naming the flag or field ``what`` and the URL.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile

from ropex import inputs
from ropex import paths
from ropex.errors import ConfigError

HF_FILES = ('config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer.model',
            'tokenizer_config.json', 'special_tokens_map.json')
FLAX_MARKERS = ('_METADATA', 'checkpoint', 'manifest.ocdbt', '_CHECKPOINT_METADATA')
ALLOWED = ('a Hugging Face folder (config.json + *.safetensors), a .gguf file or an official '
           'Gemma Flax checkpoint folder, readable with your credentials')

_staged: dict[str, str] = {}   # URL -> its local copy, for this process
_root: list[str] = []          # the process's temporary folder, created on first use


def stage(url: str, what: str = '--model') -> str:
  """The local copy of the released weights at ``url`` (copied on first call)."""
  key = url.rstrip('/')
  if key not in _staged:
    src = paths.path(key, what)
    with inputs.reading(what, url, ALLOWED):
      files = _files(src, url, what)
      dest = os.path.join(_cache_root(), f'{len(_staged)}-{src.name}')
      size = sum(f.stat().length for f, _ in files)
      logging.warning('ropex: copying %d files (%d bytes: %s) of %s to %s to read them', len(
          files), size, ', '.join(sorted({rel.split('/')[-1] for _, rel in files})[:8]) + (
              ', ...' if len(files) > 8 else ''), url, dest)
      for f, rel in files:
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with f.open('rb') as r, open(target, 'wb') as w:
          shutil.copyfileobj(r, w, 16 << 20)
    _staged[key] = os.path.join(dest, src.name) if key.endswith('.gguf') else dest
  return _staged[key]


def _files(src, url: str, what: str) -> list:
  """(epath file, path relative to the copy) for each file the format needs."""
  if url.endswith('.gguf'):
    if not src.is_file():
      raise ConfigError(f'{what}={url!r} does not exist; allowed: {ALLOWED}')
    return [(src, src.name)]
  if not src.is_dir():
    raise ConfigError(f'{what}={url!r} does not exist (or is not a folder); allowed: {ALLOWED}')
  names = {f.name: f for f in src.iterdir()}
  if 'config.json' in names and any(n.endswith('.safetensors') for n in names):
    return [(f, n) for n, f in sorted(names.items())
            if n in HF_FILES or n.endswith(('.safetensors', '.safetensors.index.json'))]
  if any(n in names for n in FLAX_MARKERS):
    files = [(f, str(f.relative_to(src))) for f in sorted(src.rglob('*')) if f.is_file()]
    parent_tokenizer = src.parent / 'tokenizer.model'
    if 'tokenizer.model' not in names and parent_tokenizer.is_file():
      files.append((parent_tokenizer, 'tokenizer.model'))
    return files
  raise ConfigError(f'{what}={url!r} is neither a Hugging Face checkpoint folder '
                    '(config.json + *.safetensors), an official Gemma Flax checkpoint nor a '
                    '.gguf file')


def _cache_root() -> str:
  if not _root:
    _root.append(tempfile.mkdtemp(prefix='ropex-weights-'))
    atexit.register(shutil.rmtree, _root[0], True)
  return _root[0]
