"""Released Gemma (v1) weights -> ropex parameters (the official Flax format of
:func:`ropex.model.io.load_model`; Hugging Face folders of every family go through
:mod:`ropex.model.io.huggingface`).

Two layouts are read:

- official Flax checkpoints (Kaggle ``gemma/flax``): an orbax PyTree whose top-level keys are
  flat strings, ``'transformer/embedder' -> {'input_embedding'}``,
  ``'transformer/layer_0/attn/q_einsum' -> {'w'}`` (``kv_einsum`` for MQA/GQA, ``qkv_einsum``
  for MHA), ``'transformer/layer_0/mlp/gating_einsum' -> {'w'}`` (or, as
  ``gemma.params.param_remapper`` leaves it, ``'transformer/layer_0/mlp' -> {'gating_einsum',
  'linear'}``), ``'transformer/layer_0/pre_attention_norm' -> {'scale'}``,
  ``'transformer/final_norm' -> {'scale'}``. ropex's unscanned tree is this tree.
- Hugging Face ``GemmaForCausalLM`` safetensors (one file or shards, with ``config.json``):
  ``q_proj [N*H, D]``, ``k_proj``/``v_proj [K*H, D]``, ``o_proj [D, N*H]``,
  ``gate_proj``/``up_proj [F, D]``, ``down_proj [D, F]``, ``input_layernorm`` /
  ``post_attention_layernorm`` / ``norm`` weights (HF's Gemma RMSNorm also multiplies by
  ``1 + weight``), ``embed_tokens [V, D]``. Both use the half-split RoPE pairing.

The model config is inferred from the shapes (RoPE theta 10k, Gemma v1), recognising the 2B
and 7B presets. The SentencePiece ``tokenizer.model`` that ships with the weights is found next
to them (or given explicitly).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re

import ml_collections
import numpy as np

from ropex import model as model_lib
from ropex import inputs, paths
from ropex.model.config import ModelConfig, model_block, pe_block
from ropex.errors import ConfigError

_V1_LAYER_KEYS = {'attn', 'mlp', 'pre_attention_norm', 'pre_ffw_norm'}
_NUMPY_DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass
class ImportedGemma:
  model_block: ml_collections.ConfigDict
  cfg: ModelConfig
  params: dict
  source: str                  # 'flax' | 'hf'
  tokenizer_path: str | None


def detect_format(path: str, what: str = '--gemma') -> str:
  """``'hf'`` for safetensors (a file or a folder holding them), ``'flax'`` for an orbax
  checkpoint folder."""
  if paths.is_url(path):
    raise ConfigError(f'{what}={path!r}: a Gemma checkpoint is read from a local folder; '
                      'copy it first (gcloud storage cp -r)')
  if path.endswith('.safetensors') and os.path.isfile(path):
    return 'hf'
  if os.path.isdir(path):
    if glob.glob(os.path.join(path, '*.safetensors')):
      return 'hf'
    if any(os.path.exists(os.path.join(path, f)) for f in
           ('_METADATA', 'checkpoint', 'manifest.ocdbt', '_CHECKPOINT_METADATA')):
      return 'flax'
  raise ConfigError(f'{what}={path!r} is neither an orbax Gemma checkpoint folder nor '
                    f'Hugging Face safetensors; give one of them')


def read_flax(path: str) -> dict:
  """The orbax PyTree as saved (numpy leaves, original dtypes)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.PyTreeCheckpointer()
  path = os.path.abspath(path)
  try:  # numpy leaves straight from the stored tree structure (no device copies)
    meta = checkpointer.metadata(path)
    tree = getattr(meta, 'item_metadata', meta)
    tree = getattr(tree, 'tree', tree)
    args = _map_leaves(tree, lambda _: ocp.RestoreArgs(restore_type=np.ndarray))
    return checkpointer.restore(path, restore_args=args)
  except Exception:  # pylint: disable=broad-except  (older layouts without usable metadata)
    return _map_leaves(checkpointer.restore(path), np.asarray)


def _map_leaves(tree, fn):
  if isinstance(tree, dict):
    return {k: _map_leaves(v, fn) for k, v in tree.items()}
  return fn(tree)


def official_tree(raw: dict) -> dict:
  """Nested official Gemma tree (``embedder``, ``layer_i``, ``final_norm``) from the saved
  checkpoint tree (flat string keys, remapped ``mlp`` or already nested)."""
  leaves: list[tuple[list[str], np.ndarray]] = []

  def walk(node, prefix):
    for key, value in node.items():
      parts = prefix + str(key).split('/')
      if isinstance(value, dict):
        walk(value, parts)
      else:
        leaves.append((parts, value))

  walk(raw, [])
  tree: dict = {}
  for parts, value in leaves:
    if parts and parts[0] == 'transformer':
      parts = parts[1:]
    if len(parts) >= 3 and parts[-3] == 'mlp' and parts[-1] == 'w':
      parts = parts[:-1]
    node = tree
    for key in parts[:-1]:
      node = node.setdefault(key, {})
    node[parts[-1]] = np.asarray(value)
  return tree


def read_hf(path: str, what: str = '--gemma') -> tuple[dict, dict]:
  """All tensors of a safetensors file or folder (shards merged) and its ``config.json``; a
  file that is not safetensors (or JSON) is a ConfigError naming it and ``what``."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  files = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, '*.safetensors')))
  tensors = {}
  for name in files:
    with inputs.reading(f'{what} file', name, 'Hugging Face safetensors of a Gemma v1 model'):
      with safe_open(name, framework='np') as f:
        for key in f.keys():
          tensors[key] = f.get_tensor(key)
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  config_path = os.path.join(folder, 'config.json')
  hf_config = {}
  if os.path.isfile(config_path):
    with inputs.reading(f'{what} config', config_path, 'the model\'s Hugging Face config.json'):
      with open(config_path) as f:
        hf_config = json.load(f)
  return tensors, hf_config


def hf_to_official(tensors: dict, hf_config: dict) -> dict:
  """Hugging Face Gemma tensors -> the official nested tree (same values, Flax layouts)."""
  model_type = hf_config.get('model_type', 'gemma')
  if model_type != 'gemma':
    raise ConfigError(f'config.json model_type={model_type!r} is not supported; allowed: gemma '
                      f'(Gemma v1)')
  t = {re.sub(r'^model\.', '', k): v for k, v in tensors.items()}
  embedding = t['embed_tokens.weight']
  D = embedding.shape[1]
  layers = sorted({int(m.group(1)) for k in t for m in [re.match(r'layers\.(\d+)\.', k)] if m})
  q0 = t['layers.0.self_attn.q_proj.weight']
  k0 = t['layers.0.self_attn.k_proj.weight']
  H = int(hf_config.get('head_dim') or 0)
  if not H and hf_config.get('num_attention_heads'):
    H = q0.shape[0] // int(hf_config['num_attention_heads'])
  if not H:
    H = 256 if q0.shape[0] % 256 == 0 and k0.shape[0] % 256 == 0 else 0
  if not H or q0.shape[0] % H or k0.shape[0] % H:
    raise ConfigError('config.json head_dim is missing and cannot be inferred from the '
                      'shapes; add config.json (head_dim, num_attention_heads)')
  N, K = q0.shape[0] // H, k0.shape[0] // H
  heads = lambda w, n: w.reshape(n, H, D).transpose(0, 2, 1)       # [n*H, D] -> [n, D, H]
  tree = {'embedder': {'input_embedding': embedding},
          'final_norm': {'scale': t['norm.weight']}}
  for i in layers:
    p = lambda name, i=i: t[f'layers.{i}.{name}.weight']
    if any(k.startswith(f'layers.{i}.') and ('post_feedforward' in k or 'pre_feedforward' in k)
           for k in t):
      raise ConfigError('the safetensors hold a Gemma 2/3 layer (pre/post feed-forward norms); '
                        'allowed: Gemma v1')
    q, k, v = heads(p('self_attn.q_proj'), N), heads(p('self_attn.k_proj'), K), heads(
        p('self_attn.v_proj'), K)
    attn = ({'qkv_einsum': {'w': np.stack([q, k, v])}} if N == K else
            {'q_einsum': {'w': q}, 'kv_einsum': {'w': np.stack([k, v])}})
    attn['attn_vec_einsum'] = {'w': p('self_attn.o_proj').T.reshape(N, H, D)}
    tree[f'layer_{i}'] = {
        'attn': attn,
        'mlp': {'gating_einsum': np.stack([p('mlp.gate_proj').T, p('mlp.up_proj').T]),
                'linear': p('mlp.down_proj').T},
        'pre_attention_norm': {'scale': p('input_layernorm')},
        'pre_ffw_norm': {'scale': p('post_attention_layernorm')}}
  return tree


def infer_model_block(tree: dict, theta: float = 10_000.0) -> ml_collections.ConfigDict:
  """The ropex ``model`` block of an official tree (2B / 7B presets recognised)."""
  V, D = tree['embedder']['input_embedding'].shape
  L = sum(1 for k in tree if re.fullmatch(r'layer_\d+', k))
  attn = tree['layer_0']['attn']
  if 'qkv_einsum' in attn:
    _, N, _, H = attn['qkv_einsum']['w'].shape
    K = N
  else:
    N, _, H = attn['q_einsum']['w'].shape
    K = attn['kv_einsum']['w'].shape[1]
  F = tree['layer_0']['mlp']['linear'].shape[0]
  shapes = dict(vocab_size=V, num_layers=L, embed_dim=D, num_heads=N, num_kv_heads=K,
                head_dim=H, hidden_dim=F)
  arch = 'imported'
  for name in ('gemma_2b', 'gemma_7b'):
    if all(model_block(name)[k] == v for k, v in shapes.items()):
      arch = name
  block = model_block('tiny', pe=pe_block('rope', max_wavelength=theta), scan_layers=False,
                      **{k: int(v) for k, v in shapes.items()})
  block.arch = arch
  return block


def _check_v1(tree: dict) -> None:
  extra = sorted(set(tree['layer_0']) - _V1_LAYER_KEYS) + sorted(
      k for k in tree['layer_0'].get('attn', {}) if 'norm' in k)
  if extra:
    raise ConfigError(f'layer_0 has {", ".join(extra)}: this is a Gemma 2/3 checkpoint; '
                      f'allowed: Gemma v1 (layers with {", ".join(sorted(_V1_LAYER_KEYS))})')
  gating = tree['layer_0']['mlp']['gating_einsum']
  D = tree['embedder']['input_embedding'].shape[1]
  if gating.shape[1] != D:
    for name, layer in tree.items():
      if name.startswith('layer_'):
        layer['mlp']['gating_einsum'] = np.swapaxes(layer['mlp']['gating_einsum'], 1, 2)


def find_tokenizer(path: str) -> str | None:
  """``tokenizer.model`` in the checkpoint folder or its parent (Kaggle layout)."""
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  for candidate in (folder, os.path.dirname(os.path.abspath(folder))):
    found = os.path.join(candidate, 'tokenizer.model')
    if os.path.isfile(found):
      return found
  return None


def load(path: str, dtype: str = 'float32', scan_layers: bool = False,
         tokenizer_path: str | None = None, what: str = '--gemma') -> ImportedGemma:
  """Reads Gemma v1 weights (either layout) as ropex params in ``dtype``; ``scan_layers``
  returns the scanned tree (``model.stack_layers``). ``what`` (the flag or field that named
  ``path``) is named by every error."""
  if dtype not in _NUMPY_DTYPES:
    raise ConfigError(f'dtype={dtype!r} is not allowed; allowed: {", ".join(_NUMPY_DTYPES)}')
  source = detect_format(path, what)
  theta = 10_000.0
  if source == 'flax':
    tree = official_tree(read_flax(path))
  else:
    tensors, hf_config = read_hf(path, what)
    tree = hf_to_official(tensors, hf_config)
    theta = float(hf_config.get('rope_theta') or theta)
  _check_v1(tree)
  block = infer_model_block(tree, theta)
  block.update(param_dtype=dtype, dtype=dtype, scan_layers=scan_layers)
  import ml_dtypes  # pylint: disable=g-import-not-at-top
  np_dtype = np.float32 if dtype == 'float32' else ml_dtypes.bfloat16
  params = _map_leaves(tree, lambda a: np.asarray(a).astype(np_dtype))
  cfg = ModelConfig.from_config(block)
  if scan_layers:
    params = model_lib.stack_layers(params, cfg)
  return ImportedGemma(block, cfg, params, source, tokenizer_path or find_tokenizer(path))


def _source(path: str, imported: ImportedGemma, dtype: str) -> dict:
  return {'format': 'gemma_flax' if imported.source == 'flax' else 'huggingface',
          'path': os.path.abspath(path), 'family': 'gemma', 'model_type': 'gemma',
          'dtype': dtype, 'quantization': None}


def load_model(path: str, placement=None, dtype: str = 'float32'):
  """:func:`ropex.model.io.load_model` for an official Gemma v1 Flax checkpoint."""
  from ropex.model import io  # pylint: disable=g-import-not-at-top
  imported = load(path, dtype=dtype)
  params = imported.params
  if placement is not None:
    params = placement.place(params, imported.cfg)
  return io.Imported(imported.model_block, params, _source(path, imported, dtype),
                     imported.tokenizer_path)


def read_model(path: str):
  """(model block, source) of a Flax checkpoint (its tree is read: it has no config file)."""
  imported = load(path)
  return imported.model_block, _source(path, imported, 'float32')
