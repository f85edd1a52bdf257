"""Export a ropex model (a training run or imported weights) as a Hugging Face checkpoint
folder: the library half of ``python -m ropex.export`` (:mod:`ropex.model.io.hf_export` holds
the inverse of the families mapping)."""

from __future__ import annotations

import json
import math
import os

from ropex.errors import ConfigError


def from_workdir(workdir: str, step):
  from ropex import model as model_lib  # pylint: disable=g-import-not-at-top
  from ropex.data import tokenizers  # pylint: disable=g-import-not-at-top
  from ropex.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from ropex.training import inference  # pylint: disable=g-import-not-at-top
  config, params, _ = inference.load_for_inference(workdir, step)
  cfg = ModelConfig.from_config(config.model)
  if cfg.scan_layers:
    params = model_lib.unstack_layers(params, cfg)
  tok = tokenizers.make_tokenizer(config.data)
  files = {'byte': None, 'sentencepiece': config.data.tokenizer_path,
           'huggingface': config.data.tokenizer_path}
  return (config.model, params, files.get(config.data.tokenizer),
          {'bos_token_id': int(tok.bos_id), 'eos_token_id': int(tok.eos_id)},
          int(config.train.seq_len), config.data.tokenizer == 'byte')


def from_model(path: str):
  from ropex.model import io  # pylint: disable=g-import-not-at-top
  imported = io.load_model(path)
  path = io.local_copy(path)   # a URL's local copy (already staged by load_model)
  c = {}
  if os.path.isfile(os.path.join(path, 'config.json')):
    with open(os.path.join(path, 'config.json')) as f:
      c = json.load(f)
    c = c.get('text_config') or c
  elif imported.source['format'] == 'gguf':
    from ropex.model.io import gguf  # pylint: disable=g-import-not-at-top
    c = gguf.hf_config(gguf.Reader(path))
  ids = {k: c[k] for k in ('bos_token_id', 'eos_token_id', 'pad_token_id') if k in c}
  return (imported.model, imported.params, imported.tokenizer_path, ids,
          c.get('max_position_embeddings'), False)


DEFAULT_MAX_SHARD_BYTES = 50 * 10**9   # transformers' save_pretrained default, "50GB"
_UNITS = {'GIB': 2**30, 'MIB': 2**20, 'KIB': 2**10, 'GB': 10**9, 'MB': 10**6, 'KB': 10**3}




def shard_bytes(text: str) -> int:
  """``--max_shard_size`` in bytes (transformers' units: 1GiB = 2**30, 1GB = 10**9)."""
  number, scale = text.strip(), 1
  for unit, size in _UNITS.items():
    if number.upper().endswith(unit):
      number, scale = number[:-len(unit)], size
      break
  if not number.isdigit() or int(number) == 0:
    raise ConfigError(f'--max_shard_size={text!r} is not a size; allowed: a positive number of '
                      f'bytes, optionally with a unit ({", ".join(_UNITS)}), e.g. 5GB')
  return int(number) * scale



def export(block, params, tokenizer_path, token_ids: dict, max_positions, byte_tokenizer: bool,
           out: str, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[str]:
  """Writes the folder (``token_ids``: bos/eos/pad ids for config.json; ``byte_tokenizer``:
  write ropex's byte tokenizer as tokenizer.json); returns the files written. Every check runs
  before anything is written. Weights over ``max_shard_bytes`` are split into shards with
  transformers' names and index (:func:`write_weights`)."""
  from ropex.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from ropex.model.io import hf_export  # pylint: disable=g-import-not-at-top
  family = hf_export.family_of(block)
  extra = dict({'pad_token_id': 0}, **token_ids)
  extra['max_position_embeddings'] = int(max_positions or 8192)
  config = hf_export.config_json(block, family, extra)
  hf_export.check_round_trip(block, config)
  cfg = ModelConfig.from_config(block)
  shapes = hf_export.tensor_shapes(params, cfg, family)
  if os.path.exists(out) and os.listdir(out):
    raise ConfigError(f'--out={out!r} is not empty; give a new folder')
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'config.json'), 'w') as f:
    json.dump(config, f, indent=1, sort_keys=True)
  written = ['config.json'] + write_weights(hf_export.tensors(params, cfg, family), shapes,
                                            out, max_shard_bytes)
  if tokenizer_path:   # its file, or the one a GGUF's vocabulary rebuilds
    from ropex.model.io import tokenizer  # pylint: disable=g-import-not-at-top
    name, data = tokenizer.file_of(tokenizer_path)
    with open(os.path.join(out, name), 'wb') as f:
      f.write(data)
    written.append(name)
  elif byte_tokenizer:
    _byte_tokenizer_json(os.path.join(out, 'tokenizer.json'))
    written.append('tokenizer.json')
  return [os.path.join(out, w) for w in written]


def shard_plan(shapes: dict, max_shard_bytes: int) -> list[list[str]]:
  """The float32 tensors ``shapes`` (in order) grouped into shards of at most
  ``max_shard_bytes`` each (a larger tensor alone in its own), as transformers groups them."""
  shards, size = [[]], 0
  for name, shape in shapes.items():
    nbytes = 4 * math.prod(shape)
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes
  return shards


def write_weights(tensors, shapes: dict, out: str, max_shard_bytes: int) -> list[str]:
  """Writes the ``(name, array)`` stream ``tensors`` (in the order of ``shapes``) as
  ``model.safetensors``, or, over ``max_shard_bytes``, as ``model-0000i-of-0000n.safetensors``
  shards plus ``model.safetensors.index.json`` (transformers' layout); one shard's tensors are
  held at a time. Returns the file names written."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  plan = shard_plan(shapes, max_shard_bytes)
  names = (['model.safetensors'] if len(plan) == 1 else
           [f'model-{i + 1:05d}-of-{len(plan):05d}.safetensors' for i in range(len(plan))])
  stream = iter(tensors)
  for file, shard in zip(names, plan):
    part = {name: np.ascontiguousarray(value) for name, value in
            (next(stream) for _ in shard)}
    if list(part) != shard:
      raise ValueError(f'{file}: tensors {list(part)} are not the planned {shard}')
    save_file(part, os.path.join(out, file), metadata={'format': 'pt'})
  if len(plan) == 1:
    return names
  index = {'metadata': {'total_size': sum(4 * math.prod(s) for s in shapes.values())},
           'weight_map': {t: file for file, shard in zip(names, plan) for t in shard}}
  with open(os.path.join(out, 'model.safetensors.index.json'), 'w') as f:
    json.dump(index, f, indent=1, sort_keys=True)
  return names + ['model.safetensors.index.json']


def _byte_tokenizer_json(path: str) -> None:
  """ropex's byte tokenizer (0 pad, 1 bos, 2 eos, 3 + byte) as a ``tokenizers`` byte-level BPE
  with no merges (the library's own serialisation, written as JSON): every UTF-8 byte is one
  token, the same ids."""
  printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
  chars, extra = {}, 0
  for b in range(256):   # GPT-2's byte -> printable character table (tokenizers' ByteLevel)
    if b in printable:
      chars[b] = chr(b)
    else:
      chars[b] = chr(256 + extra)
      extra += 1
  specials = ['<pad>', '<bos>', '<eos>']
  vocab = {t: i for i, t in enumerate(specials)}
  vocab.update({chars[b]: 3 + b for b in range(256)})
  byte_level = lambda prefix, regex: {'type': 'ByteLevel', 'add_prefix_space': prefix,
                                      'trim_offsets': True, 'use_regex': regex}
  spec = {
      'version': '1.0', 'truncation': None, 'padding': None,
      'added_tokens': [{'id': i, 'content': t, 'single_word': False, 'lstrip': False,
                        'rstrip': False, 'normalized': False, 'special': True}
                       for i, t in enumerate(specials)],
      'normalizer': None, 'pre_tokenizer': byte_level(False, False), 'post_processor': None,
      'decoder': byte_level(True, True),
      'model': {'type': 'BPE', 'dropout': None, 'unk_token': None,
                'continuing_subword_prefix': None, 'end_of_word_suffix': None,
                'fuse_unk': False, 'byte_fallback': False, 'ignore_merges': False,
                'vocab': vocab, 'merges': []}}
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(spec, f, ensure_ascii=False)
