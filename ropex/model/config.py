"""Model configuration: presets, validation, and the resolved per-layer schedule.

A config's ``model`` block (an ml_collections ConfigDict) is turned into a frozen
:class:`ModelConfig` once, validated field by field. Layers get their positional encoding
and attention window from a repeating pattern::

    model.layer_pattern = ('local',) * 5 + ('global',)       # repeats over the layers
    model.layer_types = {'local':  {'pe': {'kind': 'rope', 'max_wavelength': 10_000},
                                    'window': 1024},
                         'global': {'pe': {'kind': 'prope', 'fraction': 0.25,
                                           'max_wavelength': 1_000_000}}}

An empty pattern means every layer uses ``model.pe`` and ``model.sliding_window``. A layer type
may also set its own attention shape (``head_dim``, ``num_kv_heads``, ``k_eq_v``: Gemma 4's
global layers).

Block features are fields of the ``model`` block (:data:`BLOCK_FIELDS`, transformers' names
where the concept is the same); their defaults are Gemma v1, so the paper presets are unchanged.
A released family is a setting of these fields (:mod:`ropex.model.families`), never a branch on
its name.
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
ACTIVATIONS = ('gelu_pytorch_tanh', 'silu')   # GeGLU (Gemma) | SwiGLU (Llama, Qwen)

# Block features: name -> (type, default). Defaults are Gemma v1 (the paper presets).
BLOCK_FIELDS = {
    'norm_unit_offset': (bool, True),        # RMSNorm x*(1+w), w init 0; False: x*w, w init 1
    'rms_norm_eps': (float, 1e-6),
    'post_attention_norm': (bool, False),    # Gemma 2/3/4 sandwich norms
    'post_ffw_norm': (bool, False),
    'qk_norm': (bool, False),                # RMSNorm over head_dim on q and k, before RoPE
    'v_norm': (bool, False),                 # Gemma 4's scale-free value norm
    'query_pre_attn_scalar': (float, 0.0),   # attention scale = this**-0.5; 0: the head dim
    'hidden_activation': (str, 'gelu_pytorch_tanh'),
    'qkv_bias': (bool, False),               # Qwen 2.5: q/k/v biases (no output bias)
    'tie_word_embeddings': (bool, True),     # False: a separate output embedding
    'scale_embeddings': (bool, True),        # input embedding * sqrt(embed_dim) (compute dtype)
    'layer_scalar': (bool, False),           # Gemma 4: a learned scalar on each block's output
    'hidden_size_per_layer_input': (int, 0),  # Gemma 4 per-layer input embeddings (0: off)
    'vocab_size_per_layer_input': (int, 0),  # their vocabulary (0: vocab_size)
    'num_kv_shared_layers': (int, 0),        # Gemma 4: the last n layers reuse earlier K/V
    'use_double_wide_mlp': (bool, False),    # Gemma 4: KV-shared layers have a 2x MLP
}
LAYER_TYPE_FIELDS = ('pe', 'window', 'chunk_attention', 'head_dim', 'num_kv_heads', 'k_eq_v')
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
    # name: (vocab, layers, embed, heads, kv_heads, head_dim, hidden); the Gemma v1 block
    'gemma_2b': (256_128, 18, 2048, 8, 1, 256, 16_384),
    'gemma_7b': (256_128, 28, 3072, 16, 16, 256, 24_576),
    'peer': (32_000, 4, 256, 4, 4, 64, 1024),
    'small': (32_000, 8, 512, 8, 8, 64, 2048),
    'tiny': (512, 2, 128, 4, 1, 32, 512),
}


def model_block(arch: str = 'tiny', pe: ml_collections.ConfigDict | None = None,
                **overrides) -> ml_collections.ConfigDict:
  """The complete ``model`` block for a named architecture preset: the Gemma v1 presets here,
  the released families' in :mod:`ropex.model.families` (their block fields and schedule)."""
  from ropex.model import families  # pylint: disable=g-import-not-at-top
  if arch in families.PRESETS:
    block = model_block('tiny', pe=pe)
    families.apply(block, arch, keep_pe=pe is not None)
    block.update(overrides)
    return block
  if arch not in _ARCHS:
    raise ConfigError(f'model preset {arch!r} is unknown; allowed: '
                      f'{", ".join(arch_names())}')
  vocab, layers, embed, heads, kv_heads, head_dim, hidden = _ARCHS[arch]
  block = ml_collections.ConfigDict(dict(
      arch=arch, vocab_size=vocab, num_layers=layers, embed_dim=embed, num_heads=heads,
      num_kv_heads=kv_heads, head_dim=head_dim, hidden_dim=hidden,
      pe=pe if pe is not None else pe_block('rope', max_wavelength=10_000),
      sliding_window=0, layer_pattern=(), layer_types={},
      attn_logit_softcap=0.0, final_logit_softcap=0.0,
      scan_layers=True, remat='none', param_dtype='float32', dtype='float32',
      attention_impl='auto', attention_chunk=1024, attention_logits_dtype='compute',
      **{name: default for name, (_, default) in BLOCK_FIELDS.items()},
  ))
  block.update(overrides)
  return block


def arch_names() -> tuple[str, ...]:
  from ropex.model import families  # pylint: disable=g-import-not-at-top
  return tuple(_ARCHS) + tuple(families.PRESETS)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """What one layer does positionally: its encoding, its attention window (0 = global) and
  its chunked-local attention block (0 = off; Llama 4's ``attention_chunk_size``); and its
  attention shape where it differs from the model's (0 = the model's ``head_dim`` /
  ``num_kv_heads``; ``k_eq_v``: keys are also the values), whether it reuses the K/V of
  layer ``kv_source`` (-1: computes its own) and its MLP width (0: ``hidden_dim``)."""
  pe: Any
  window: int
  type_name: str = 'default'
  chunk_attention: int = 0
  head_dim: int = 0
  num_kv_heads: int = 0
  k_eq_v: bool = False
  kv_source: int = -1
  hidden_dim: int = 0


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
  norm_unit_offset: bool = True
  rms_norm_eps: float = 1e-6
  post_attention_norm: bool = False
  post_ffw_norm: bool = False
  qk_norm: bool = False
  v_norm: bool = False
  query_pre_attn_scalar: float = 0.0
  hidden_activation: str = 'gelu_pytorch_tanh'
  qkv_bias: bool = False
  tie_word_embeddings: bool = True
  scale_embeddings: bool = True
  layer_scalar: bool = False
  hidden_size_per_layer_input: int = 0
  vocab_size_per_layer_input: int = 0
  num_kv_shared_layers: int = 0
  use_double_wide_mlp: bool = False

  @property
  def layers(self) -> tuple[LayerSpec, ...]:
    """The spec of every layer, in order."""
    return tuple(self.pattern[i % len(self.pattern)] for i in range(self.num_layers))

  def attention_shape(self, spec: LayerSpec) -> tuple[int, int]:
    """(kv heads, head dim) of a layer."""
    return spec.num_kv_heads or self.num_kv_heads, spec.head_dim or self.head_dim

  def mlp_dim(self, spec: LayerSpec) -> int:
    return spec.hidden_dim or self.hidden_dim

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
    pattern = tuple(_layer_type(name, types, default, m) for name in pattern_names)
  scan = bool(get('scan_layers'))
  if num_layers % len(pattern) and scan:
    raise ConfigError(f'model.layer_pattern has length {len(pattern)}, which must divide '
                      f'model.num_layers={num_layers} when model.scan_layers=True '
                      f'(or set model.scan_layers=False)')
  if num_layers % len(pattern):
    pattern = tuple(pattern[i % len(pattern)] for i in range(num_layers))
  block = _block_fields(m)
  if block['hidden_size_per_layer_input'] and scan:
    raise ConfigError(f'model.hidden_size_per_layer_input='
                      f'{block["hidden_size_per_layer_input"]} gives every layer its own input; '
                      f'allowed with model.scan_layers=False')
  pattern = _kv_sharing(pattern, num_layers, scan, block, _int(m, 'hidden_dim'))
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
      input_pe=input_pe, **block)


_FIELD_RULES = {bool: fields.boolean, int: fields.integer(0), float: fields.number(0)}


def _block_fields(m) -> dict:
  """The block-feature fields (:data:`BLOCK_FIELDS`), typed and checked; absent = default."""
  out = {}
  for name, (typ, default) in BLOCK_FIELDS.items():
    value = m.get(name)
    value = default if value is None else value
    rule = (fields.choice(*ACTIVATIONS) if name == 'hidden_activation' else _FIELD_RULES[typ])
    out[name] = typ(fields.check(value, f'model.{name}', rule))
  if out['rms_norm_eps'] <= 0:
    raise ConfigError(f'model.rms_norm_eps={out["rms_norm_eps"]!r} is not allowed; it must be '
                      f'a number > 0')
  return out


def _kv_sharing(pattern, num_layers: int, scan: bool, block: dict, hidden_dim: int):
  """Marks the last ``num_kv_shared_layers`` layers as reusing the K/V of the last earlier layer
  of their type (transformers' Gemma 4 ``kv_sharing_modes``), with a 2x MLP if
  ``use_double_wide_mlp``; needs the unscanned layout (layers then differ beyond the pattern)."""
  shared = block['num_kv_shared_layers']
  if not shared:
    return pattern
  field = 'model.num_kv_shared_layers'
  if scan:
    raise ConfigError(f'{field}={shared} makes the last layers differ from the layer pattern; '
                      f'allowed with model.scan_layers=False')
  if shared >= num_layers:
    raise ConfigError(f'{field}={shared} must be below model.num_layers={num_layers}')
  layers = [pattern[i % len(pattern)] for i in range(num_layers)]
  first = num_layers - shared
  wide = 2 * hidden_dim if block['use_double_wide_mlp'] else 0
  out = list(layers[:first])
  for i in range(first, num_layers):
    sources = [j for j in range(first) if layers[j].type_name == layers[i].type_name]
    if not sources:
      raise ConfigError(f'{field}={shared}: layer {i} (type {layers[i].type_name!r}) has no '
                        f'earlier layer of its type to share K/V with')
    out.append(dataclasses.replace(layers[i], kv_source=sources[-1], hidden_dim=wide))
  return tuple(out)


def _layer_type(name, types, default: LayerSpec, m) -> LayerSpec:
  if name not in types:
    raise ConfigError(f'model.layer_pattern names layer type {name!r}, which is not in '
                      f'model.layer_types; defined types: {", ".join(types) or "none"}')
  spec = dict(types[name] or {})
  unknown = sorted(set(spec) - set(LAYER_TYPE_FIELDS))
  if unknown:
    raise ConfigError(f'model.layer_types.{name}.{unknown[0]} is not a layer-type field; '
                      f'allowed: {", ".join(LAYER_TYPE_FIELDS)}')
  prefix = f'model.layer_types.{name}'
  head_dim = _window(spec.get('head_dim'), f'{prefix}.head_dim')
  kv_heads = _window(spec.get('num_kv_heads'), f'{prefix}.num_kv_heads')
  if head_dim % 2 or (kv_heads and int(m.get('num_heads')) % kv_heads):
    raise ConfigError(f'{prefix}: head_dim={head_dim} must be even and num_kv_heads={kv_heads} '
                      f'must divide model.num_heads={m.get("num_heads")}')
  pe = default.pe
  if spec.get('pe') is not None or head_dim:
    field = f'{prefix}.pe' if spec.get('pe') is not None else 'model.pe'
    pe = positional.from_config(spec.get('pe') or m.get('pe'), head_dim or int(m.get('head_dim')),
                                field)
    if pe != default.pe and pe_interface.as_encoding(pe).acts_on_embedding:
      raise ConfigError(f'{field}.kind={pe.kind!r} acts on the input embedding, once for the '
                        f'whole model; allowed: set it as model.pe, not per layer type')
  window = default.window
  if spec.get('window') is not None:
    window = _window(spec['window'], f'{prefix}.window')
  chunk = _window(spec.get('chunk_attention'), f'{prefix}.chunk_attention')
  if chunk and window:
    raise ConfigError(f'{prefix}.chunk_attention={chunk} and a sliding window '
                      f'({window}) are both set; allowed: one of them (chunked-local attention '
                      f'is its own window mode)')
  k_eq_v = spec.get('k_eq_v')
  k_eq_v = False if k_eq_v is None else fields.check(k_eq_v, f'{prefix}.k_eq_v', fields.boolean)
  return LayerSpec(pe=pe, window=window, type_name=name, chunk_attention=chunk,
                   head_dim=head_dim, num_kv_heads=kv_heads, k_eq_v=k_eq_v)


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
