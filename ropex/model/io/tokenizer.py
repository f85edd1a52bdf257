"""The tokenizer that ships with released weights: SentencePiece ``tokenizer.model`` (Gemma)
or ``tokenizer.json`` (the ``tokenizers`` library: Llama 3, Qwen), wrapped as a ropex tokenizer
(:mod:`ropex.data.tokenizers`)."""

from __future__ import annotations

import json
import os


def find(path: str) -> str | None:
  """The tokenizer file next to the weights (or in the parent folder, Kaggle's layout)."""
  for folder in (path, os.path.dirname(os.path.abspath(path))):
    for name in ('tokenizer.model', 'tokenizer.json'):
      if os.path.isfile(os.path.join(folder, name)):
        return os.path.join(folder, name)
  return None


def load(tokenizer_path: str | None, model_path: str | None = None):
  """The ropex wrapper of a tokenizer file (None for None); ``tokenizer.json`` takes its
  bos/eos ids from the model's config.json."""
  from ropex.data import tokenizers  # pylint: disable=g-import-not-at-top
  if not tokenizer_path:
    return None
  if tokenizer_path.endswith('.model'):
    return tokenizers.SentencePieceTokenizer(tokenizer_path)
  folder = model_path if model_path and os.path.isdir(model_path) else os.path.dirname(
      tokenizer_path)   # a GGUF's rebuilt tokenizer.json has its config.json beside it
  config_path = os.path.join(folder, 'config.json')
  hf_config = {}
  if os.path.isfile(config_path):
    with open(config_path) as f:
      hf_config = json.load(f)
  return tokenizers.HuggingFaceTokenizer(tokenizer_path, hf_config.get('text_config') or hf_config)
