"""The ``model`` block of an official Gemma 2/3 Flax checkpoint, which carries no config.

The google-deepmind ``gemma`` library pairs a checkpoint with a model class (``Gemma2_2B``,
``Gemma3_1B``, ...) whose ``TransformerConfig`` says what the tensors cannot. ropex takes the
shapes from the tensors (:class:`Shapes`) and the rest from, in this order:

1. a sidecar the user gives: ``gemma_config.json`` (or ``twin.json``) in the checkpoint folder
   or its parent (the Kaggle layout: checkpoint in a subfolder, ``tokenizer.model`` beside
   it), holding the ``TransformerConfig`` fields by the library's own names, at the top level
   or under ``gemma_library_config``; every field is mapped by :data:`LIBRARY_FIELDS`, and the
   shapes it states must agree with the tensors;
2. otherwise the ropex family preset (:mod:`ropex.model.families`) whose shapes the tensors
   have (the vocabulary is always the embedding's: the Flax releases pad it differently from
   the Hugging Face ones); none matching is one line naming the shapes and the presets.
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections

from ropex.errors import ConfigError
from ropex.model.config import model_block, pe_block
from ropex.model.io import hf_config

SLIDING, FULL = hf_config.SLIDING, hf_config.FULL
SIDECARS = ('gemma_config.json', 'twin.json')
_REQUIRED = object()
_TYPES = {'LOCAL_SLIDING': SLIDING, 'GLOBAL': FULL}       # library AttentionType -> layer type
# QueryPreAttentionNormalisation -> ropex query_pre_attn_scalar (attention scale = s**-0.5)
_QUERY_NORMS = {
    'BY_ONE_OVER_SQRT_HEAD_DIM': lambda c: c['head_dim'],
    'BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS': lambda c: c['embed_dim'] // c['num_heads'],
    'BY_EMBED_DIM_DIV_NUM_HEADS': lambda c: (c['embed_dim'] // c['num_heads']) ** -2.0,
}


def _cap(value, _):
  return 0.0 if value is None else float(value)       # library None: no soft-cap (ropex 0)


def _scaling(value, _):
  if float(value) < 1.0:
    raise ConfigError(f'scale factor {value} is not allowed; the gemma library needs >= 1.0')
  return None if float(value) == 1.0 else {'type': 'linear', 'factor': float(value)}


def _query_norm(value, c):
  if value not in _QUERY_NORMS:
    raise ConfigError(f'query_pre_attn_norm={value!r} is not known; allowed: '
                      f'{", ".join(_QUERY_NORMS)}')
  return float(_QUERY_NORMS[value](c))


_same = lambda value, _: value
_window = lambda value, _: int(value or 0)

# gemma library TransformerConfig field -> (ropex model block field, library default, value map).
# 'types.T.x' is field x of layer type T (its 'pe' a pe block); None: not a block field.
LIBRARY_FIELDS = {
    'num_embed': ('vocab_size', _REQUIRED, _same),
    'embed_dim': ('embed_dim', _REQUIRED, _same),
    'hidden_dim': ('hidden_dim', _REQUIRED, _same),
    'num_heads': ('num_heads', _REQUIRED, _same),
    'head_dim': ('head_dim', _REQUIRED, _same),
    'num_kv_heads': ('num_kv_heads', _REQUIRED, _same),
    'final_logit_softcap': ('final_logit_softcap', _REQUIRED, _cap),
    'use_post_attn_norm': ('post_attention_norm', _REQUIRED, _same),
    'use_post_ffw_norm': ('post_ffw_norm', _REQUIRED, _same),
    'attention_types': ('layer_pattern', _REQUIRED, _same),   # its length is num_layers
    'query_pre_attn_norm': ('query_pre_attn_scalar', 'BY_ONE_OVER_SQRT_HEAD_DIM', _query_norm),
    'attn_logits_soft_cap': ('attn_logit_softcap', None, _cap),
    'sliding_window_size': (f'types.{SLIDING}.window', None, _window),
    'transpose_gating_einsum': (None, False, _same),   # gating_einsum [2, F, D], else [2, D, F]
    'use_qk_norm': ('qk_norm', False, _same),
    'local_base_frequency': (f'types.{SLIDING}.max_wavelength', 10_000, _same),
    'global_base_frequency': (f'types.{FULL}.max_wavelength', 10_000, _same),
    'local_scale_factor': (f'types.{SLIDING}.scaling', 1.0, _scaling),
    'global_scale_factor': (f'types.{FULL}.scaling', 1.0, _scaling),
    'vision_encoder': (None, None, _same),   # only null: ropex builds the text model
}
# what the library's Transformer always does (no config field): ropex's Gemma defaults
_LIBRARY_ARCHITECTURE = dict(norm_unit_offset=True, rms_norm_eps=1e-6, scale_embeddings=True,
                             hidden_activation='gelu_pytorch_tanh', tie_word_embeddings=True)


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What the tensors of a checkpoint say."""
  # A part of ModelConfig on purpose: what the Flax tensors reveal (gemma2_flax.shapes_of).
  vocab_size: int
  num_layers: int
  embed_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  hidden_dim: int
  qk_norm: bool
  post_attention_norm: bool
  post_ffw_norm: bool
  gating: tuple          # shape of layer_0/mlp/gating_einsum

  def describe(self) -> str:
    return ', '.join(f'{f}={getattr(self, f)}' for f in _SHAPE_FIELDS)


# What a preset must match: the shapes less the vocabulary (the Flax releases pad it their own
# way) and the gating layout (transpose_from_shapes).
_SHAPE_FIELDS = tuple(f.name for f in dataclasses.fields(Shapes)
                      if f.name not in ('vocab_size', 'gating'))


def find_sidecar(path: str) -> str | None:
  """The config sidecar of a checkpoint folder: in the folder, else in its parent."""
  folder = os.path.abspath(path)
  for candidate in (folder, os.path.dirname(folder)):
    found = [os.path.join(candidate, n) for n in SIDECARS
             if os.path.isfile(os.path.join(candidate, n))]
    if len(found) > 1:
      raise ConfigError(f'{candidate} holds both {" and ".join(SIDECARS)}; allowed: one '
                        f'config sidecar per folder')
    if found:
      return found[0]
  return None


def read_sidecar(file: str) -> dict:
  with open(file) as f:
    data = json.load(f)
  data = data.get('gemma_library_config', data) if isinstance(data, dict) else data
  if not isinstance(data, dict):
    raise ConfigError(f'{file}: expected a JSON object of gemma library TransformerConfig '
                      f'fields (top level or under "gemma_library_config")')
  return data


def _complete(lib: dict, where: str) -> dict:
  unknown = sorted(set(lib) - set(LIBRARY_FIELDS))
  if unknown:
    raise ConfigError(f'{where}: field {unknown[0]!r} is not a gemma library TransformerConfig '
                      f'field ropex reads; allowed: {", ".join(LIBRARY_FIELDS)}')
  values = {}
  for name, (_, default, _) in LIBRARY_FIELDS.items():
    if name not in lib and default is _REQUIRED:
      raise ConfigError(f'{where}: field {name!r} is missing (the gemma library has no default)')
    values[name] = lib.get(name, default)
  if values['vision_encoder'] is not None:
    raise ConfigError(f'{where}: vision_encoder={values["vision_encoder"]!r}; allowed: null '
                      f'(ropex builds the text model; vision tensors are skipped)')
  bad = sorted(set(values['attention_types']) - set(_TYPES))
  if bad or not values['attention_types']:
    raise ConfigError(f'{where}: attention_types has {bad[0] if bad else "no entries"!r}; '
                      f'allowed: a list of {", ".join(_TYPES)} (one per layer)')
  if 'LOCAL_SLIDING' in values['attention_types'] and not values['sliding_window_size']:
    raise ConfigError(f'{where}: attention_types has LOCAL_SLIDING layers but '
                      f'sliding_window_size is {values["sliding_window_size"]!r}; allowed: >= 1')
  return values


def block_from_library(lib: dict, where: str) -> tuple[ml_collections.ConfigDict, bool]:
  """(model block, transpose_gating_einsum) of gemma library config values."""
  values = _complete(lib, where)
  fields = dict(_LIBRARY_ARCHITECTURE)
  per_type = {SLIDING: {'window': 0}, FULL: {'window': 0}}
  for name, (target, _, convert) in LIBRARY_FIELDS.items():
    if target is None:
      continue
    try:
      value = convert(values[name], values)
    except ConfigError as e:
      raise ConfigError(f'{where}: {name}: {e}') from None
    if target.startswith('types.'):
      _, kind, field = target.split('.')
      per_type[kind][field] = value
    else:
      fields[target] = value
  types = [_TYPES[t] for t in fields.pop('layer_pattern')]
  block = model_block('tiny', num_layers=len(types), scan_layers=False, **fields)
  pattern = hf_config.period_of(types)
  layer_blocks = {}
  for kind in dict.fromkeys(pattern):
    t = per_type[kind]
    layer_blocks[kind] = {'pe': pe_block('rope', max_wavelength=float(t['max_wavelength']),
                                         scaling=t['scaling']),
                          'window': t['window'] if kind == SLIDING else 0}
  hf_config.set_schedule(block, pattern, layer_blocks)
  block.arch = 'imported'
  return block, bool(values['transpose_gating_einsum'])


_LIBRARY_NAME = {target: name for name, (target, _, _) in LIBRARY_FIELDS.items() if target}
_LIBRARY_NAME['num_layers'] = 'attention_types (its length)'


def check_sidecar(block, transpose: bool, shapes: Shapes, where: str) -> None:
  """Every shape the sidecar states equals the tensors'."""
  for field in ('vocab_size',) + _SHAPE_FIELDS:
    if block[field] != getattr(shapes, field):
      raise ConfigError(f'{where}: {_LIBRARY_NAME[field]} gives {field}={block[field]}, but the '
                        f'checkpoint has {field}={getattr(shapes, field)}')
  D, F = shapes.embed_dim, shapes.hidden_dim
  expected = (2, F, D) if transpose else (2, D, F)
  if tuple(shapes.gating) != expected:
    raise ConfigError(f'{where}: transpose_gating_einsum={transpose} means '
                      f'layer_0/mlp/gating_einsum of shape {expected}; the checkpoint has '
                      f'{tuple(shapes.gating)}')


def _gemma_presets():
  from ropex.model import families  # pylint: disable=g-import-not-at-top
  return [name for name, row in families.PRESETS.items()
          if row['config']['model_type'] in ('gemma2', 'gemma3_text')]


def block_from_preset(shapes: Shapes, path: str) -> tuple[ml_collections.ConfigDict, str]:
  """(model block, preset name) of the Gemma 2/3 preset with the checkpoint's shapes."""
  for name in _gemma_presets():
    block = model_block(name)
    if all(block[f] == getattr(shapes, f) for f in _SHAPE_FIELDS):
      arch = name if block.vocab_size == shapes.vocab_size else 'imported'
      block.update(vocab_size=shapes.vocab_size, scan_layers=False, arch=arch)
      return block, name
  raise ConfigError(f'--model={path!r}: no ropex Gemma 2/3 preset has this checkpoint\'s shapes '
                    f'({shapes.describe()}); allowed presets: {", ".join(_gemma_presets())}; '
                    f'for another model put its gemma library config in '
                    f'{SIDECARS[0]} beside the checkpoint')


def transpose_from_shapes(shapes: Shapes, path: str) -> bool:
  """Whether mlp/gating_einsum is stored [2, F, D] (the library's transpose_gating_einsum)."""
  D, F = shapes.embed_dim, shapes.hidden_dim
  if D == F:
    raise ConfigError(f'--model={path!r}: layer_0/mlp/gating_einsum {tuple(shapes.gating)} does '
                      f'not tell its layout (embed_dim == hidden_dim); give '
                      f'transpose_gating_einsum in {SIDECARS[0]}')
  if tuple(shapes.gating) not in ((2, D, F), (2, F, D)):
    raise ConfigError(f'--model={path!r}: layer_0/mlp/gating_einsum has shape '
                      f'{tuple(shapes.gating)}; allowed: {(2, D, F)} or {(2, F, D)}')
  return tuple(shapes.gating) == (2, F, D)


def model_block_of(shapes: Shapes, path: str) -> tuple[ml_collections.ConfigDict, bool, str]:
  """(model block, transpose_gating_einsum, where the config came from)."""
  sidecar = find_sidecar(path)
  if sidecar:
    block, transpose = block_from_library(read_sidecar(sidecar), sidecar)
    check_sidecar(block, transpose, shapes, sidecar)
    return block, transpose, sidecar
  block, name = block_from_preset(shapes, path)
  return block, transpose_from_shapes(shapes, path), f'preset {name}'
