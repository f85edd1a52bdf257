"""Released weights at a URL (``gs://bucket/Qwen3-0.6B``, any scheme :mod:`ropex.paths` serves):
staged into a local folder, then read exactly as a local path.

safetensors and GGUF are memory-mapped, which needs a local file, so :func:`stage` copies the
files the format needs through ``etils.epath``, file by file, and says so in one log line (what,
how many bytes, to where):

* a Hugging Face folder: ``config.json``, ``*.safetensors`` (+ ``*.safetensors.index.json``),
  the tokenizer files and ``generation_config.json`` (nothing else in the folder);
* a ``.gguf`` file: that file;
* an official Gemma Flax (orbax) folder: the whole folder;
* from the folder above a folder, as locally: its ``tokenizer.model`` / ``tokenizer.json`` when
  the folder has neither, and (Flax) its config sidecar when the folder has none.

Reading the model's configuration alone (:func:`ropex.model.io.read_model`, ``describe``:
:func:`stage_config`) copies a Hugging Face folder's ``config.json`` and nothing else; a
``.gguf`` and a Flax folder are staged whole even then (the GGUF header is read from the file;
a Flax checkpoint's shapes are in orbax's metadata, stored among the arrays).

The copy lives in one temporary folder per process (``ropex-weights-*`` under ``$TMPDIR``),
kept while the process runs — the tokenizer is read lazily and its file must stay readable
while the model is used — and removed when it exits. A URL is staged once per process
(:func:`ropex.model.io.load_model` and an entry point's own checks share the copy).
The records keep the URL: ``Imported.source['path']`` and ``Imported.tokenizer_source`` name
it, never the copy (:func:`url_of`); a run's ``data.tokenizer_path`` naming the URL reads the
copy (:func:`local_file`).
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
from ropex.model.io.gemma_flax_config import SIDECARS

HF_FILES = ('config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer.model',
            'tokenizer_config.json', 'special_tokens_map.json')
FLAX_MARKERS = ('_METADATA', 'checkpoint', 'manifest.ocdbt', '_CHECKPOINT_METADATA')
TOKENIZERS = ('tokenizer.model', 'tokenizer.json')
ALLOWED = ('a Hugging Face folder (config.json + *.safetensors), a .gguf file or an official '
           'Gemma Flax checkpoint folder, readable with your credentials')

_staged: dict[tuple[str, bool], tuple[str, str]] = {}   # (URL, config only) -> (format, copy)
_folders: list[tuple[str, str]] = []   # (URL of the folder above, the copy's folder)
_root: list[str] = []          # the process's temporary folder, created on first use


def stage(url: str, what: str = '--model') -> str:
  """The local copy of the released weights at ``url`` (copied on first call)."""
  key = url.rstrip('/')
  if (key, False) not in _staged:
    _staged[key, False] = _copy(key, url, what, config_only=False)
  return _staged[key, False][1]


def stage_config(url: str, what: str = '--model') -> tuple[str, str]:
  """(format, local path) for reading the model's configuration alone (``describe``): a Hugging
  Face folder's ``config.json`` is copied, its weights are not; a ``.gguf`` (its header is read
  from the file) and a Flax folder (its shapes are in the checkpoint's own metadata, stored
  among the arrays) are staged whole, as :func:`stage` does. A URL already staged whole is not
  copied again."""
  key = url.rstrip('/')
  for config_only in (False, True):
    if (key, config_only) in _staged:
      return _staged[key, config_only]
  _staged[key, True] = _copy(key, url, what, config_only=True)
  return _staged[key, True]


def _copy(key: str, url: str, what: str, config_only: bool) -> tuple[str, str]:
  """(format, local copy) of the files :func:`_files` names (``config_only``: a Hugging Face
  folder's config.json alone), in a new folder of the process's temporary folder."""
  src = paths.path(key, what)
  with inputs.reading(what, url, ALLOWED):
    fmt, files = _files(src, url, what)
    if config_only and fmt == 'huggingface':
      files = [(f, rel) for f, rel in files if rel == f'{src.name}/config.json']
    dest = os.path.join(_cache_root(), str(len(_staged)))
    size = sum(f.stat().length for f, _ in files)
    logging.warning('ropex: copying %d files (%d bytes: %s) of %s to %s to read them', len(
        files), size, ', '.join(sorted({rel.split('/')[-1] for _, rel in files})[:8]) + (
            ', ...' if len(files) > 8 else ''), url, dest)
    for f, rel in files:
      target = os.path.join(dest, rel)
      os.makedirs(os.path.dirname(target), exist_ok=True)
      with f.open('rb') as r, open(target, 'wb') as w:
        shutil.copyfileobj(r, w, 16 << 20)
  _folders.append((key.rsplit('/', 1)[0] + '/', dest + '/'))
  return fmt, os.path.join(dest, src.name)


def local_file(url: str) -> str | None:
  """The local copy of the file at ``url`` when a URL staged by this process copied it (a
  staged folder's ``tokenizer.json``, or the ``.gguf`` itself), else None: records name the URL,
  reads take the copy."""
  for url_root, copy_root in _folders:
    if url.startswith(url_root):
      copy = copy_root + url[len(url_root):]
      if os.path.isfile(copy):
        return copy
  return None


def url_of(path: str) -> str:
  """The URL of ``path`` when it lies in a copy this process staged (the inverse of
  :func:`local_file`), else ``path``."""
  for url_root, copy_root in _folders:
    if path.startswith(copy_root):
      return url_root + path[len(copy_root):]
  return path


def _files(src, url: str, what: str) -> tuple[str, list]:
  """(format, [(epath file, path relative to the copy's folder)] for each file the format
  needs); the weights keep their name (``<folder>/<name>``), files read from the folder above lie
  in ``<folder>``, as they did."""
  if url.endswith('.gguf'):
    if not src.is_file():
      raise ConfigError(f'{what}={url!r} does not exist; allowed: {ALLOWED}')
    return 'gguf', [(src, src.name)]
  if not src.is_dir():
    raise ConfigError(f'{what}={url!r} does not exist (or is not a folder); allowed: {ALLOWED}')
  names = {f.name: f for f in src.iterdir()}
  if 'config.json' in names and any(n.endswith('.safetensors') for n in names):
    files = [(f, f'{src.name}/{n}') for n, f in sorted(names.items())
             if n in HF_FILES or n.endswith(('.safetensors', '.safetensors.index.json'))]
    return 'huggingface', files + _from_parent(src, names, TOKENIZERS)
  if any(n in names for n in FLAX_MARKERS):
    files = [(f, f'{src.name}/{rel}') for f, rel in _walk(src, '')]
    return 'gemma_flax', (files + _from_parent(src, names, TOKENIZERS)
                          + _from_parent(src, names, SIDECARS))
  raise ConfigError(f'{what}={url!r} is neither a Hugging Face checkpoint folder '
                    '(config.json + *.safetensors), an official Gemma Flax checkpoint nor a '
                    '.gguf file')


def _walk(folder, prefix: str) -> list:
  """(file, relative path) under ``folder``, one listing per folder (epath refuses ``**`` on a
  bucket)."""
  out = []
  for f in sorted(folder.iterdir()):
    rel = prefix + f.name
    out += _walk(f, rel + '/') if f.is_dir() else [(f, rel)]
  return out


def _from_parent(src, names: dict, wanted: tuple) -> list:
  """The ``wanted`` files of the folder above, when the folder holds none of them: where
  :func:`ropex.model.io.tokenizer.find` and the Gemma config sidecar look next (Kaggle's
  layout)."""
  if any(n in names for n in wanted):
    return []
  return [(f, f.name) for f in (src.parent / n for n in wanted) if f.is_file()]


def _cache_root() -> str:
  if not _root:
    _root.append(tempfile.mkdtemp(prefix='ropex-weights-'))
    atexit.register(shutil.rmtree, _root[0], True)
  return _root[0]
