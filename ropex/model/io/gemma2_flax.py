"""Official Gemma 2 / Gemma 3 Flax checkpoints (the google-deepmind ``gemma`` library's orbax
layout, Kaggle ``gemma-2/flax``, ``gemma-3/flax``) -> ropex parameters, for
:func:`ropex.model.io.load_model`. Gemma v1 trees go on to :mod:`ropex.model.io.gemma_flax`.

The tree is read in the library's FLAT layout (``'transformer/layer_0/attn/q_einsum':
{'w': [N, D, H]}``, ``kv_einsum`` [2, K, D, H] or ``qkv_einsum`` [3, N, D, H] when N == K,
``attn_vec_einsum`` [N, H, D], Gemma 3's ``attn/_query_norm`` / ``_key_norm`` [H],
``'transformer/layer_0/mlp/gating_einsum': {'w': ...}`` and ``mlp/linear`` [F, D], the four
norms [D], ``embedder/input_embedding`` [V, D], ``final_norm``) or its NESTED form (what
``gm.ckpts.save_params`` writes from ``model.init``). ``gating_einsum`` is [2, D, F], or
[2, F, D] where the library's ``transpose_gating_einsum`` is set (Gemma 3, Gemma 2 9B/27B);
ropex keeps [2, D, F]. Norm scales are stored as w for the 1 + w ropex also uses. The
multimodal parts (``SigLiPFromPatches_0/...``, ``embedder/mm_*``) are skipped: ropex builds the
text model. The model block comes from :mod:`ropex.model.io.gemma_flax_config`.
"""

from __future__ import annotations

import os
import re

import flax.linen as nn
import ml_dtypes
import numpy as np

from ropex import model as model_lib
from ropex.errors import ConfigError
from ropex.model.config import ModelConfig
from ropex.model.io import gemma_flax, gemma_flax_config
from ropex.model.io.huggingface import flat as _flat

_MULTIMODAL_ROOTS = ('SigLiPFromPatches_0', 'vision_encoder')


def nested_tree(raw: dict) -> dict:
  """The nested text-model tree (``embedder``, ``layer_i``, ``final_norm``) of a FLAT or
  NESTED checkpoint tree; leaves kept as they are (arrays or metadata)."""
  tree: dict = {}
  for parts, value in _leaves(raw, []):
    if parts[0] == 'transformer':
      parts = parts[1:]
    if 'stacked_layers' in parts:
      raise ConfigError('the checkpoint is in the gemma library\'s STACKED layout '
                        '(transformer/stacked_layers/...); allowed: FLAT or NESTED')
    if parts[0] in _MULTIMODAL_ROOTS or (parts[0] == 'embedder' and parts[1].startswith('mm_')):
      continue
    if len(parts) >= 3 and parts[-3] == 'mlp' and parts[-1] == 'w':
      parts = parts[:-1]
    node = tree
    for key in parts[:-1]:
      node = node.setdefault(key, {})
    node[parts[-1]] = value
  return tree


def _leaves(node: dict, prefix: list):
  for key, value in node.items():
    parts = prefix + str(key).split('/')
    if isinstance(value, dict):
      yield from _leaves(value, parts)
    else:
      yield parts, value


def read_shapes(path: str) -> dict:
  """The nested tree of stored shapes, from the checkpoint's metadata (no weights read)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  meta = ocp.PyTreeCheckpointer().metadata(os.path.abspath(path))
  meta = getattr(meta, 'item_metadata', meta)
  meta = getattr(meta, 'tree', meta)
  return nested_tree({'/'.join(p): tuple(v.shape) for p, v in _leaves(meta, [])})


def is_gemma_v1(tree: dict) -> bool:
  layer = tree.get('layer_0', {})
  return not ({'post_attention_norm', 'post_ffw_norm'} & set(layer)) and not any(
      'norm' in k for k in layer.get('attn', {}))


def _shape(tree: dict, *path: str) -> tuple:
  node = tree
  for key in path:
    if not isinstance(node, dict) or key not in node:
      raise ConfigError(f'the checkpoint has no tensor transformer/{"/".join(path)}, which a '
                        f'Gemma checkpoint has')
    node = node[key]
  return tuple(node)


def shapes_of(tree: dict) -> gemma_flax_config.Shapes:
  """What the stored shapes say about the model."""
  V, D = _shape(tree, 'embedder', 'input_embedding')
  layers = sorted(int(m.group(1)) for k in tree for m in [re.fullmatch(r'layer_(\d+)', k)] if m)
  if layers != list(range(len(layers))) or not layers:
    raise ConfigError(f'the checkpoint\'s layers are {layers[:8]}...; expected layer_0 .. '
                      f'layer_{{L-1}}')
  attn = tree['layer_0'].get('attn', {})
  if 'qkv_einsum' in attn:
    _, N, _, H = _shape(tree, 'layer_0', 'attn', 'qkv_einsum', 'w')
    K = N
  else:
    N, _, H = _shape(tree, 'layer_0', 'attn', 'q_einsum', 'w')
    K = _shape(tree, 'layer_0', 'attn', 'kv_einsum', 'w')[1]
  F = _shape(tree, 'layer_0', 'mlp', 'linear')[0]
  return gemma_flax_config.Shapes(
      vocab_size=V, num_layers=len(layers), embed_dim=D, num_heads=N, num_kv_heads=K,
      head_dim=H, hidden_dim=F, qk_norm='_query_norm' in attn,
      post_attention_norm='post_attention_norm' in tree['layer_0'],
      post_ffw_norm='post_ffw_norm' in tree['layer_0'],
      gating=_shape(tree, 'layer_0', 'mlp', 'gating_einsum'))


def params_of(tree: dict, cfg: ModelConfig, transpose_gating: bool) -> dict:
  """ropex's unscanned parameter tree from the nested checkpoint tree (numpy, param dtype);
  a missing, misshaped or unused tensor is one :class:`ConfigError` naming it."""
  abstract = dict(_flat(nn.unbox(model_lib.abstract_params(cfg))))
  stored = dict(_flat(tree))
  extra = sorted(set(stored) - set(abstract))
  if extra:
    raise ConfigError(f'the checkpoint has tensor transformer/{"/".join(extra[0])}, which this '
                      f'model (its config) does not have')
  np_dtype = ml_dtypes.bfloat16 if cfg.param_dtype == 'bfloat16' else np.dtype(cfg.param_dtype)
  out: dict = {}
  for path, target in abstract.items():
    name = 'transformer/' + '/'.join(path)
    if path not in stored:
      raise ConfigError(f'the checkpoint has no tensor {name}, which this model needs')
    value = np.asarray(stored[path])
    if transpose_gating and path[-1] == 'gating_einsum' and value.ndim == 3:
      value = np.swapaxes(value, 1, 2)
    if tuple(value.shape) != tuple(target.shape):
      layout = ' (read as [2, F, D]: transpose_gating_einsum)' if (
          transpose_gating and path[-1] == 'gating_einsum') else ''
      raise ConfigError(f'tensor {name} has shape {tuple(stored[path].shape)}{layout}; this '
                        f'model needs {tuple(target.shape)}')
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value.astype(np_dtype)
  return out


def read_model(path: str):
  """(model block, source) from the stored shapes and the sidecar or preset (no weights)."""
  shapes_tree = read_shapes(path)
  if is_gemma_v1(shapes_tree):
    return gemma_flax.read_model(path)
  shapes = shapes_of(shapes_tree)
  block, _, origin = gemma_flax_config.model_block_of(shapes, path)
  return block, _source(path, shapes, origin, 'float32')


def _source(path: str, shapes, origin: str, dtype: str) -> dict:
  family = 'gemma3' if shapes.qk_norm else 'gemma2'
  return {'format': 'gemma_flax', 'path': os.path.abspath(path), 'family': family,
          'model_type': family, 'config': origin, 'dtype': dtype, 'quantization': None}


def load_model(path: str, placement=None, dtype: str = 'float32'):
  """:func:`ropex.model.io.load_model` for an official Gemma Flax checkpoint (any version)."""
  from ropex.model import io  # pylint: disable=g-import-not-at-top
  shapes_tree = read_shapes(path)
  if is_gemma_v1(shapes_tree):
    return gemma_flax.load_model(path, placement=placement, dtype=dtype)
  shapes = shapes_of(shapes_tree)
  block, transpose, origin = gemma_flax_config.model_block_of(shapes, path)
  block.update(param_dtype=dtype, dtype=dtype)
  cfg = ModelConfig.from_config(block)
  params = params_of(nested_tree(gemma_flax.read_flax(path)), cfg, transpose)
  if placement is not None:
    params = placement.place(params, cfg)
  return io.Imported(block, params, _source(path, shapes, origin, dtype),
                     gemma_flax.find_tokenizer(path))
