"""The tokenizer that ships with released weights: SentencePiece ``tokenizer.model`` (Gemma),
``tokenizer.json`` (the ``tokenizers`` library: Llama 3, Qwen), or the one a ``.gguf`` file's
vocabulary rebuilds (:mod:`ropex.model.io.gguf_tokenizer`, in memory: no file is written),
wrapped as a ropex tokenizer (:mod:`ropex.data.tokenizers`).

Each may lie at a URL; a file inside weights this process staged (:mod:`ropex.model.io.remote`)
is read from the local copy, any other URL through ``etils.epath`` (a ``.gguf`` is staged: its
reader needs a local file)."""

from __future__ import annotations

import json
import os

from ropex import paths

KINDS = {'.model': 'sentencepiece', '.gguf': 'gguf'}   # any other file: huggingface


def find(path: str) -> str | None:
  """The tokenizer file next to the weights (or in the parent folder, Kaggle's layout)."""
  for folder in (path, os.path.dirname(os.path.abspath(path))):
    for name in ('tokenizer.model', 'tokenizer.json'):
      if os.path.isfile(os.path.join(folder, name)):
        return os.path.join(folder, name)
  return None


def kind(tokenizer_path: str) -> str:
  """``data.tokenizer`` for a tokenizer file: ``sentencepiece`` (``.model``), ``gguf`` (rebuilt
  from a ``.gguf`` file's vocabulary) or ``huggingface`` (a ``tokenizer.json``)."""
  return KINDS.get(os.path.splitext(tokenizer_path)[1], 'huggingface')


def readable(path: str, what: str = 'data.tokenizer_path') -> str:
  """``path``, or for a URL its local copy when this process staged one (a ``.gguf`` URL is
  staged now); other URLs stay as they are (read through epath)."""
  if not paths.is_url(path):
    return path
  from ropex.model.io import remote  # pylint: disable=g-import-not-at-top
  if kind(path) == 'gguf':
    return remote.stage(path, what)
  return remote.local_file(path) or path


def load(tokenizer_path: str | None, model_path: str | None = None):
  """The ropex wrapper of a tokenizer file (None for None); ``tokenizer.json`` takes its
  bos/eos ids from the model's config.json."""
  from ropex.data import tokenizers  # pylint: disable=g-import-not-at-top
  if not tokenizer_path:
    return None
  tokenizer_path = readable(tokenizer_path)
  if kind(tokenizer_path) == 'gguf':
    from ropex.model.io import gguf_tokenizer  # pylint: disable=g-import-not-at-top
    return gguf_tokenizer.load(tokenizer_path)
  if kind(tokenizer_path) == 'sentencepiece':
    return tokenizers.SentencePieceTokenizer(tokenizer_path)
  folder = model_path if model_path and os.path.isdir(model_path) else os.path.dirname(
      tokenizer_path)
  config_path = paths.path(folder) / 'config.json'
  hf_config = json.loads(config_path.read_text()) if config_path.is_file() else {}
  return tokenizers.HuggingFaceTokenizer(tokenizer_path, hf_config.get('text_config') or hf_config)


def file_of(tokenizer_path: str) -> tuple[str, bytes]:
  """(``tokenizer.model`` or ``tokenizer.json``, its bytes): the file as a Hugging Face folder
  holds it (a GGUF's rebuilt tokenizer serialised)."""
  tokenizer_path = readable(tokenizer_path)
  if kind(tokenizer_path) == 'gguf':
    from ropex.model.io import gguf_tokenizer  # pylint: disable=g-import-not-at-top
    return gguf_tokenizer.file_of(tokenizer_path)
  name = 'tokenizer.model' if kind(tokenizer_path) == 'sentencepiece' else 'tokenizer.json'
  return name, paths.path(tokenizer_path).read_bytes()
