"""Reads a Hugging Face checkpoint folder: ``config.json`` and one or many ``*.safetensors``
(``model.safetensors.index.json`` when sharded).

Tensors are read one at a time (``safetensors.safe_open``, numpy), transformed by the shared
mapping (:mod:`ropex.model.io.hf_mapping`), checked against the shape the model block expects
and, with a placement, put straight into their shards; so host memory stays near one tensor
(plus its stacked siblings, e.g. q/k/v) besides what the devices hold. Every problem (missing or
unmapped tensor, shape mismatch) is one :class:`ConfigError` naming the tensor, raised before
anything is returned.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import flax.linen as nn
import jax
import ml_dtypes
import numpy as np

from ropex import model as model_lib
from ropex.errors import ConfigError
from ropex.model.config import ModelConfig
from ropex.model.io import hf_config, hf_mapping

# text-model prefixes of the tensor names (CausalLM; multimodal wrappers, new and old layout)
_PREFIXES = ('model.language_model.', 'language_model.model.', 'model.', '')
_HEADS = ('lm_head.weight', 'language_model.lm_head.weight')
# tensors of other modalities that a text model leaves alone
_OTHER_MODALITIES = ('vision_tower', 'multi_modal_projector', 'audio_tower', 'embed_vision',
                     'embed_audio', 'vision_model')
# K/V tensors transformers ignores on KV-shared layers (Gemma 4)
_SHARED_KV = ('self_attn.k_proj', 'self_attn.v_proj', 'self_attn.k_norm', 'self_attn.v_norm')


def read_config(path: str) -> dict:
  config = os.path.join(path, 'config.json')
  if not os.path.isfile(config):
    raise ConfigError(f'--model={path!r} has no config.json; allowed: a Hugging Face checkpoint '
                      f'folder (config.json + *.safetensors) or an official Gemma Flax folder')
  with open(config) as f:
    return json.load(f)


def tensor_files(path: str) -> dict[str, str]:
  """HF tensor name -> the safetensors file holding it."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  index = os.path.join(path, 'model.safetensors.index.json')
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f)['weight_map']
    return {name: os.path.join(path, file) for name, file in weight_map.items()}
  files = sorted(f for f in os.listdir(path) if f.endswith('.safetensors'))
  if not files:
    raise ConfigError(f'--model={path!r} has no *.safetensors file')
  out = {}
  for file in files:
    with safe_open(os.path.join(path, file), framework='np') as f:
      out.update({name: os.path.join(path, file) for name in f.keys()})
  return out


def _prefix(names) -> str:
  for prefix in _PREFIXES:
    if prefix + 'embed_tokens.weight' in names:
      return prefix
  raise ConfigError('the safetensors hold no embed_tokens.weight (looked for '
                    f'{", ".join(p + "embed_tokens.weight" for p in _PREFIXES)})')


def _resolve(name: str, prefix: str, names) -> str:
  if name == 'lm_head.weight':
    found = [h for h in _HEADS if h in names]
    if not found:
      raise ConfigError('the safetensors hold no lm_head.weight, but config.json says '
                        'tie_word_embeddings=false')
    return found[0]
  full = prefix + name
  if full not in names:
    raise ConfigError(f'the safetensors hold no tensor {full!r}, which this model needs')
  return full


class _Reader:
  """One tensor at a time: each read opens its file and closes it again, so the file's mapped
  pages are released with it (kept open, every page read would stay resident to the end)."""

  def __init__(self, files: dict[str, str]):
    self.files = files

  def get(self, name: str) -> np.ndarray:
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    with safe_open(self.files[name], framework='np') as f:
      return f.get_tensor(name)


def _check_unused(names, used: set, prefix: str, cfg: ModelConfig) -> None:
  shared = {f'{prefix}layers.{i}.{t}' for i, s in enumerate(cfg.layers) if s.kv_source >= 0
            for t in _SHARED_KV}
  for name in sorted(names):
    if name in used or any(m in name for m in _OTHER_MODALITIES):
      continue
    if any(name.startswith(s + '.') for s in shared) or name.endswith('rotary_emb.inv_freq'):
      continue
    if name in _HEADS and cfg.tie_word_embeddings:
      continue   # a stored copy of the tied head (Qwen3-0.6B): transformers ties it, ignored
    raise ConfigError(f'the safetensors hold tensor {name!r}, which ropex does not map for '
                      f'this config.json (a field ropex does not read, or a different model)')


def _converted(rule, reader: _Reader, sources: list[str], target, np_dtype) -> np.ndarray:
  parts = [reader.get(s) for s in sources]
  if any(p.dtype == ml_dtypes.bfloat16 or p.dtype == np.float16 for p in parts):
    parts = [p.astype(np.float32) for p in parts]
  try:
    value = rule.transform(*parts)
  except ValueError:
    value = None
  if value is None or tuple(value.shape) != tuple(target.shape):
    shapes = ', '.join(f'{s} {tuple(p.shape)}' for s, p in zip(sources, parts))
    raise ConfigError(f'tensor shape mismatch: {shapes} cannot fill {"/".join(rule.path)} of '
                      f'shape {tuple(target.shape)} given config.json')
  return np.asarray(value, np_dtype)


def iter_params(path: str, cfg: ModelConfig, norms: dict,
                source=None) -> Iterator[tuple[tuple, np.ndarray]]:
  """(ropex path, host array in the param dtype) for every parameter, one at a time;
  ``source`` (``files``: name -> file; ``get(name)``) replaces the safetensors:
  another format's tensors under their HF names (:mod:`ropex.model.io.gguf`)."""
  files = source.files if source is not None else tensor_files(path)
  prefix = _prefix(files)
  rules = hf_mapping.rules(cfg, norms)
  sources = {r.path: [_resolve(n, prefix, files) for n in r.sources] for r in rules}
  _check_unused(files, {n for names in sources.values() for n in names}, prefix, cfg)
  abstract = dict(flat(nn.unbox(model_lib.abstract_params(cfg))))
  missing = sorted(set(abstract) - set(sources))
  if missing:
    raise ConfigError(f'ropex parameter {"/".join(missing[0])} has no Hugging Face tensor')
  np_dtype = ml_dtypes.bfloat16 if cfg.param_dtype == 'bfloat16' else np.dtype(cfg.param_dtype)
  reader = source if source is not None else _Reader(files)
  for rule in rules:
    yield rule.path, _converted(rule, reader, sources[rule.path], abstract[rule.path], np_dtype)


def flat(tree, prefix=()):
  """``(path tuple, leaf)`` of every leaf of a nested dict."""
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from flat(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def _nest(items) -> dict:
  tree: dict = {}
  for path, value in items:
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return tree


def load_params(path: str, cfg: ModelConfig, norms: dict, placement=None, source=None) -> dict:
  """The unscanned parameter tree: host numpy arrays, or (``placement``) arrays already in
  their shards on its mesh, each placed as soon as it is read."""
  if placement is None:
    return _nest(iter_params(path, cfg, norms, source))
  shardings = dict(flat(placement.param_shardings(cfg)))
  return _nest((p, jax.make_array_from_callback(x.shape, shardings[p], lambda i, x=x: x[i]))
               for p, x in iter_params(path, cfg, norms, source))


def read_model_block(path: str):
  """(model block, parsed config) from config.json alone."""
  return hf_config.model_block_from_hf(read_config(path))
