"""Model configuration: presets, validation, and the resolved per-layer schedule.

A config's ``model`` block (an ml_collections ConfigDict) is turned into a frozen
:class:`ModelConfig` once, validated field by field. Layers get their positional encoding
and attention window from a repeating pattern::

    model.layer_pattern = ('local',) * 5 + ('global',)       # repeats over the layers
    model.layer_types = {'local':  {'pe': {'kind': 'rope', 'max_wavelength': 10_000},
                                    'window': 1024},
                         'global': {'pe': {'kind': 'prope', 'fraction': 0.25,
                                           'max_wavelength': 1_000_000}}}

An empty pattern means every layer uses ``model.pe`` and ``model.sliding_window``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from ropex import fields
from ropex.model import pe_interface, positional, rope_scaling
from ropex.errors import ConfigError

REMAT_POLICIES = ('none', 'full', 'dots', 'dots_no_batch')
DTYPES = ('float32', 'bfloat16', 'float16')
ATTENTION_IMPLS = ('auto', 'xla', 'dense', 'chunked', 'splash', 'cudnn')  # ropex.model.attention
# The dtype of the attention scores q.k of the xla/dense/chunked paths: 'compute' (the model's
# compute dtype, as Gemma's reference computes them; softmax always runs in float32) or 'float32'.
ATTENTION_LOGITS_DTYPES = ('compute', 'float32')


PE_FIELD_TYPES = {
    'fraction': float, 'max_wavelength': float, 'layout': str, 'rotary_fraction': float,
    'position_scale': float,
    'attn_temperature_tuning': bool, 'floor_scale': float, 'attn_scale': float,   # none
    'fire_mlp_width': int, 'fire_init_c': float, 'fire_init_L': float,            # fire
    'train_length': int, 'fourier_sigma': float,                                  # fope
    'max_positions': int,                                                         # learned_absolute
}


def _typed_block(types: dict, values: dict, what: str) -> ml_collections.ConfigDict:
  unknown = sorted(set(values) - set(types))
  if unknown:
    raise ConfigError(f'{what} field {unknown[0]!r} is not known; allowed: {", ".join(types)}')
  block = ml_collections.ConfigDict()
  for key, typ in types.items():
    value = values.get(key)
    if isinstance(value, list):
      value = tuple(value)
    block[key] = ml_collections.config_dict.placeholder(typ) if value is None else (
        typ(value) if typ is float and isinstance(value, int) else value)
  return block


def scaling_block(type: str = 'none', **fields) -> ml_collections.ConfigDict:  # pylint: disable=redefined-builtin
  """A ``model.pe.scaling`` block (see :mod:`ropex.model.rope_scaling`) with every field present, so
  that ``--override model.pe.scaling.type=yarn`` and its fields can be set from the command line."""
  types = {k: v for k, v in rope_scaling.FIELD_TYPES.items() if k != 'type'}
  block = _typed_block(types, fields, 'scaling_block')
  block.type = type
  return block


def pe_block(kind: str = 'rope', scaling: dict | None = None,
             **fields) -> ml_collections.ConfigDict:
  """A positional-encoding block with every field present (None = unused by this kind), so
  that any field can be overridden from the command line (``--config.model.pe.fraction=0.5``,
  ``--config.model.pe.scaling.type=yarn``)."""
  block = _typed_block(PE_FIELD_TYPES, fields, 'pe_block')
  block.kind = kind
  block.scaling = scaling_block(**dict(scaling or {}))
  return block


_ARCHS = {
    # name: (vocab, layers, embed, heads, kv_heads, head_dim, hidden)
    'gemma_2b': (256_128, 18, 2048, 8, 1, 256, 16_384),
    'gemma_7b': (256_128, 28, 3072, 16, 16, 256, 24_576),
    'peer': (32_000, 4, 256, 4, 4, 64, 1024),
    'small': (32_000, 8, 512, 8, 8, 64, 2048),
    'tiny': (512, 2, 128, 4, 1, 32, 512),
}


def model_block(arch: str = 'tiny', pe: ml_collections.ConfigDict | None = None,
                **overrides) -> ml_collections.ConfigDict:
  """The complete ``model`` block for a named architecture preset."""
  if arch not in _ARCHS:
    raise ConfigError(f'model preset {arch!r} is unknown; allowed: {", ".join(_ARCHS)}')
  vocab, layers, embed, heads, kv_heads, head_dim, hidden = _ARCHS[arch]
  block = ml_collections.ConfigDict(dict(
      arch=arch, vocab_size=vocab, num_layers=layers, embed_dim=embed, num_heads=heads,
      num_kv_heads=kv_heads, head_dim=head_dim, hidden_dim=hidden,
      pe=pe if pe is not None else pe_block('rope', max_wavelength=10_000),
      sliding_window=0, layer_pattern=(), layer_types={},
      attn_logit_softcap=0.0, final_logit_softcap=0.0,
      scan_layers=True, remat='none', param_dtype='float32', dtype='float32',
      attention_impl='auto', attention_chunk=1024, attention_logits_dtype='compute',
  ))
  block.update(overrides)
  return block


def arch_names() -> tuple[str, ...]:
  return tuple(_ARCHS)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """What one layer does positionally: its encoding, its attention window (0 = global) and
  its chunked-local attention block (0 = off; Llama 4's ``attention_chunk_size``)."""
  pe: Any
  window: int
  type_name: str = 'default'
  chunk_attention: int = 0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  num_layers: int
  embed_dim: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  hidden_dim: int
  pattern: tuple[LayerSpec, ...]    # one period of the layer schedule
  attn_logit_softcap: float = 0.0
  final_logit_softcap: float = 0.0
  scan_layers: bool = True
  remat: str = 'none'
  param_dtype: str = 'float32'
  dtype: str = 'float32'
  attention_impl: str = 'auto'
  attention_chunk: int = 1024
  attention_logits_dtype: str = 'compute'
  input_pe: Any = None              # the encoding acting on the input embedding (absolute kinds)

  @property
  def layers(self) -> tuple[LayerSpec, ...]:
    """The spec of every layer, in order."""
    return tuple(self.pattern[i % len(self.pattern)] for i in range(self.num_layers))

  @property
  def num_groups(self) -> int:
    return self.num_layers // len(self.pattern)

  @staticmethod
  def from_config(m: ml_collections.ConfigDict | dict) -> 'ModelConfig':
    return _validate(m)


def _int(m, key, minimum=1):
  return int(fields.check(m.get(key), f'model.{key}', fields.integer(minimum)))


def _choice(m, key, allowed):
  return fields.check(m.get(key), f'model.{key}', fields.choice(*allowed))


def _float(m, key):
  """A soft-cap: a number >= 0, where 0 (or None) disables it."""
  return float(fields.check(m.get(key) or 0.0, f'model.{key}', fields.number(0)))


def _window(value, field):
  """A sliding window: an integer >= 0, where 0 (or None) is full causal attention."""
  return int(fields.check(0 if value is None else value, field, fields.integer(0)))


def _validate(m) -> ModelConfig:
  get = m.get
  heads, kv_heads = _int(m, 'num_heads'), _int(m, 'num_kv_heads')
  if heads % kv_heads:
    raise ConfigError(f'model.num_kv_heads={kv_heads} must divide model.num_heads={heads}')
  head_dim = _int(m, 'head_dim')
  if head_dim % 2:
    raise ConfigError(f'model.head_dim={head_dim} must be even (rotary chunks pair up dims)')
  num_layers = _int(m, 'num_layers')
  default = LayerSpec(positional.from_config(get('pe'), head_dim, 'model.pe'),
                      _window(get('sliding_window'), 'model.sliding_window'))
  input_pe = default.pe if pe_interface.as_encoding(default.pe).acts_on_embedding else None
  pattern_names = tuple(get('layer_pattern') or ())
  types = dict(get('layer_types') or {})
  if not pattern_names:
    pattern = (default,)
  else:
    pattern = tuple(_layer_type(name, types, default, head_dim) for name in pattern_names)
  scan = bool(get('scan_layers'))
  if num_layers % len(pattern) and scan:
    raise ConfigError(f'model.layer_pattern has length {len(pattern)}, which must divide '
                      f'model.num_layers={num_layers} when model.scan_layers=True '
                      f'(or set model.scan_layers=False)')
  if num_layers % len(pattern):
    pattern = tuple(pattern[i % len(pattern)] for i in range(num_layers))
  chunk = _int(m, 'attention_chunk')
  return ModelConfig(
      vocab_size=_int(m, 'vocab_size', 2), num_layers=num_layers, embed_dim=_int(m, 'embed_dim'),
      num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
      hidden_dim=_int(m, 'hidden_dim'), pattern=pattern,
      attn_logit_softcap=_float(m, 'attn_logit_softcap'),
      final_logit_softcap=_float(m, 'final_logit_softcap'), scan_layers=scan,
      remat=_choice(m, 'remat', REMAT_POLICIES), param_dtype=_choice(m, 'param_dtype', DTYPES),
      dtype=_choice(m, 'dtype', DTYPES),
      attention_impl=_choice(m, 'attention_impl', ATTENTION_IMPLS), attention_chunk=chunk,
      # A block without the field (a config.json written before it existed) keeps the
      # float32 scores it was trained with.
      attention_logits_dtype=_choice(m, 'attention_logits_dtype', ATTENTION_LOGITS_DTYPES)
      if m.get('attention_logits_dtype') is not None else 'float32',
      input_pe=input_pe)


def _layer_type(name, types, default: LayerSpec, head_dim) -> LayerSpec:
  if name not in types:
    raise ConfigError(f'model.layer_pattern names layer type {name!r}, which is not in '
                      f'model.layer_types; defined types: {", ".join(types) or "none"}')
  spec = dict(types[name] or {})
  unknown = sorted(set(spec) - {'pe', 'window', 'chunk_attention'})
  if unknown:
    raise ConfigError(f'model.layer_types.{name}.{unknown[0]} is not a layer-type field; '
                      f'allowed: pe, window, chunk_attention')
  pe = default.pe
  if spec.get('pe') is not None:
    field = f'model.layer_types.{name}.pe'
    pe = positional.from_config(spec['pe'], head_dim, field)
    if pe != default.pe and pe_interface.as_encoding(pe).acts_on_embedding:
      raise ConfigError(f'{field}.kind={pe.kind!r} acts on the input embedding, once for the '
                        f'whole model; allowed: set it as model.pe, not per layer type')
  window = default.window
  if spec.get('window') is not None:
    window = _window(spec['window'], f'model.layer_types.{name}.window')
  chunk = _window(spec.get('chunk_attention'), f'model.layer_types.{name}.chunk_attention')
  if chunk and window:
    raise ConfigError(f'model.layer_types.{name}.chunk_attention={chunk} and a sliding window '
                      f'({window}) are both set; allowed: one of them (chunked-local attention '
                      f'is its own window mode)')
  return LayerSpec(pe=pe, window=window, type_name=name, chunk_attention=chunk)


def set_schedule(model: ml_collections.ConfigDict, pattern, types: dict) -> None:
  """Sets a per-layer schedule on a ``model`` block of any architecture preset: ``tiny`` gets
  exactly one period (every layer type once, a CPU run); an architecture whose layer count the
  period does not divide runs unscanned (the pattern then simply repeats and is cut)."""
  model.layer_pattern = tuple(pattern)
  model.layer_types = types
  if model.arch == 'tiny':
    model.num_layers = len(pattern)
  elif model.num_layers % len(pattern):
    model.scan_layers = False
