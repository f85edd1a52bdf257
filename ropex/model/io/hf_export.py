"""A ropex model -> a Hugging Face checkpoint folder (``config.json``, ``model.safetensors``, the
tokenizer) that ``transformers.AutoModelForCausalLM.from_pretrained`` builds with the same
logits: the inverse of the families reader, from the same tables.

* The family is the row of :data:`ropex.model.io.hf_families.FAMILIES` whose block fields the
  model has (Gemma v1 blocks, the paper's, are ``gemma``): Llama, Qwen 2/3, Gemma 1-4. The
  config is written in transformers 5's form (``rope_parameters``, per layer type where the
  family has them); Gemma 4 adds its full-attention layers' own shape (``global_head_dim``,
  ``attention_k_eq_v``, ``num_global_key_value_heads``), the per-layer inputs and the K/V
  sharing of the last layers (``num_kv_shared_layers``, ``use_double_wide_mlp``).
* Every tensor is the inverse of its mapping rule (:mod:`ropex.model.io.hf_mapping`): the rules
  only rearrange (reshape, transpose, stack), so the rule applied to the *indices* of its HF
  tensors says where each ropex value goes. Gemma 4's KV-shared layers have no K/V rules, so
  none of their K/V tensors is written (transformers builds those layers without them).
* Nothing is exported as something else: the written config.json is read back by the families
  reader and must give the model's own config, field by field; the first field that differs
  (an encoding transformers has no rope type for — reversed p-RoPE, ALiBi, FIRE, NoPE —, a
  window on a family without one, a block feature the family lacks; on Gemma 4 keys as values
  on sliding layers, a sliding layer's own head shape, an attention soft-cap) is one
  ConfigError naming it. Gemma 4's last layer must be full attention (transformers forces it).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ropex.errors import ConfigError
from ropex.model.config import ModelConfig
from ropex.model.io import hf_config, hf_families, hf_mapping

ARCHITECTURES = {'llama': ('llama', 'LlamaForCausalLM'), 'qwen2': ('qwen2', 'Qwen2ForCausalLM'),
                 'qwen3': ('qwen3', 'Qwen3ForCausalLM'), 'gemma': ('gemma', 'GemmaForCausalLM'),
                 'gemma2': ('gemma2', 'Gemma2ForCausalLM'),
                 'gemma3': ('gemma3_text', 'Gemma3ForCausalLM'),
                 'gemma4': ('gemma4_text', 'Gemma4ForCausalLM')}
_PER_TYPE_ROPE = ('gemma3', 'gemma4')               # rope_parameters per layer type
_LAYER_TYPES = ('gemma2', 'gemma3', 'gemma4')       # layer_types, sliding_window, final soft-cap
_SCALINGS = {'linear': 'linear', 'dynamic_ntk': 'dynamic', 'yarn': 'yarn', 'llama3': 'llama3'}
_IGNORED = ('scan_layers', 'remat', 'param_dtype', 'dtype', 'attention_impl', 'attention_chunk')


def family_of(block) -> hf_families.Family:
  """The family whose block fields the model has (most specific first)."""
  matches = [f for f in hf_families.FAMILIES.values()
             if all(block.get(k) == v for k, v in f.fields.items())]
  if not matches:
    raise ConfigError('the model\'s block fields match no family transformers builds '
                      f'({", ".join(ARCHITECTURES)}); e.g. model.norm_unit_offset='
                      f'{block.get("norm_unit_offset")}, model.hidden_activation='
                      f'{block.get("hidden_activation")!r}')
  return max(matches, key=lambda f: (len(f.fields), f.name))


def _rope_parameters(pe, field: str = 'model.pe') -> dict:
  """HF rope parameters of a ``pe`` block (kinds transformers has a rope type for); ``field``
  names the block in errors."""
  kind = pe.kind
  scaling = pe.scaling
  stray = sorted(k for k, v in pe.items() if v is not None and k not in (
      'kind', 'scaling', 'max_wavelength', 'fraction'))
  if kind not in ('rope', 'prope', 'proportional') or stray:
    name = f'{field}.{stray[0]}' if stray and kind in ('rope', 'prope') else f'{field}.kind'
    raise ConfigError(f'{name} ({kind}) has no Hugging Face rope type; allowed for export: '
                      'rope (with linear, dynamic, yarn, llama3 scaling), prope / proportional')
  out = {'rope_theta': float(pe.max_wavelength or 10_000.0)}
  if kind in ('prope', 'proportional'):
    out.update(rope_type='proportional', partial_rotary_factor=float(
        pe.fraction if pe.fraction is not None else (0.75 if kind == 'prope' else 0.25)))
    if scaling.type == 'linear':
      out['factor'] = float(scaling.factor)
    return out
  if scaling.type in (None, 'none'):
    out['rope_type'] = 'default'
    return out
  if scaling.type not in _SCALINGS:
    raise ConfigError(f'{field}.scaling.type={scaling.type!r} has no Hugging Face rope type; '
                      f'allowed for export: none, {", ".join(_SCALINGS)}')
  hf_type = _SCALINGS[scaling.type]
  out['rope_type'] = hf_type
  for theirs, ours in _reverse_fields(hf_type).items():
    if scaling.get(ours) is not None:
      out[theirs] = scaling[ours]
  return out


def _reverse_fields(hf_type: str) -> dict:
  from ropex.model.io import hf_rope  # pylint: disable=g-import-not-at-top
  return dict(hf_rope._SCALING_FIELDS[hf_type])  # pylint: disable=protected-access


def _layer_pe(block, spec_name: str):
  """(the ``pe`` block of layer type ``spec_name``, its field name)."""
  types = dict(block.get('layer_types') or {})
  pe = (types.get(spec_name) or {}).get('pe')
  return (pe, f'model.layer_types.{spec_name}.pe') if pe is not None else (block.pe, 'model.pe')


def config_json(block, family: hf_families.Family, extra: dict | None = None) -> dict:
  """The config.json of ``block`` for ``family`` (checked by :func:`check_round_trip`)."""
  cfg = ModelConfig.from_config(block)
  model_type, architecture = ARCHITECTURES[family.name]
  c = dict(architectures=[architecture], model_type=model_type, vocab_size=cfg.vocab_size,
           hidden_size=cfg.embed_dim, num_hidden_layers=cfg.num_layers,
           num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
           head_dim=cfg.head_dim, intermediate_size=cfg.hidden_dim,
           rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
           hidden_act=cfg.hidden_activation, hidden_activation=cfg.hidden_activation,
           attention_bias=cfg.qkv_bias, dtype='float32')
  if family.name in ('qwen2',):
    c.pop('attention_bias')
  if family.scale_from_config:
    scalar = cfg.query_pre_attn_scalar or cfg.head_dim   # transformers' field is an int
    c['query_pre_attn_scalar'] = int(scalar) if float(scalar).is_integer() else scalar
  # only what transformers' class of the family reads is written (the rest reads back as
  # absent, and check_round_trip names it)
  if family.name == 'gemma2':
    c['attn_logit_softcapping'] = cfg.attn_logit_softcap or None
  names = [spec.type_name for spec in cfg.layers]
  types = [hf_config.SLIDING if spec.window else hf_config.FULL for spec in cfg.layers]
  if family.name in _LAYER_TYPES:
    c['final_logit_softcapping'] = cfg.final_logit_softcap or None
    c['layer_types'] = types
    c['sliding_window'] = max([spec.window for spec in cfg.layers] + [1])
  ropes = {kind: _rope_parameters(*_layer_pe(block, name)) for kind, name in zip(types, names)}
  c['rope_parameters'] = ropes if family.name in _PER_TYPE_ROPE else ropes[types[0]]
  if family.name == 'gemma4':
    c.update(_gemma4_fields(cfg, types))
  c.update(extra or {})
  return c


def _gemma4_fields(cfg: ModelConfig, types: list[str]) -> dict:
  """transformers' Gemma 4 fields: the full-attention layers' own shape (``global_head_dim``;
  ``num_global_key_value_heads``, which transformers applies with ``attention_k_eq_v`` only),
  the per-layer inputs and the K/V sharing of the last layers."""
  if types[-1] != hf_config.FULL:
    raise ConfigError(f'model.layer_pattern gives the last of the {cfg.num_layers} layers a '
                      'sliding window; transformers\' Gemma 4 makes the last layer full '
                      'attention whatever config.json says; allowed for export: a schedule '
                      'whose last layer has no window')
  full = cfg.layers[types.index(hf_config.FULL)]
  return dict(global_head_dim=cfg.attention_shape(full)[1], attention_k_eq_v=full.k_eq_v,
              num_global_key_value_heads=full.num_kv_heads or None,
              hidden_size_per_layer_input=cfg.hidden_size_per_layer_input,
              vocab_size_per_layer_input=cfg.vocab_size_per_layer_input or cfg.vocab_size,
              num_kv_shared_layers=cfg.num_kv_shared_layers,
              use_double_wide_mlp=cfg.use_double_wide_mlp, enable_moe_block=False)


def check_round_trip(block, c: dict) -> None:
  """The families reader must read ``c`` back as ``block``'s model; else the first differing
  field, in one line."""
  back, _ = hf_config.model_block_from_hf(c)
  ours, theirs = _comparable(block), _comparable(back)
  for field in dataclasses.fields(ModelConfig):
    if field.name in _IGNORED:
      continue
    a, b = getattr(ours, field.name), getattr(theirs, field.name)
    if (_unlabelled(a) != _unlabelled(b)) if field.name == 'pattern' else a != b:
      raise ConfigError(f'model.{_field_name(field.name, a, b)} cannot be expressed by the '
                        f'Hugging Face family {c["model_type"]!r} (it would read back as '
                        'something else); this model is not exported')


def _unlabelled(layers) -> list:
  """The layers without their type's name: a label (the reader names types by kind, e.g.
  ``sliding_attention``); what a name decides (which layer a KV-shared layer reads) is
  ``kv_source``, compared as a field."""
  return [dataclasses.replace(spec, type_name='') for spec in layers]


def _field_name(name: str, a, b) -> str:
  if name != 'pattern':
    return name
  for spec_a, spec_b in zip(a, b):   # the encoding last: it is built for the layer's head dim
    for f in sorted(dataclasses.fields(spec_a), key=lambda f: f.name == 'pe'):
      if f.name != 'type_name' and getattr(spec_a, f.name) != getattr(spec_b, f.name):
        return f'layer_types.{spec_a.type_name}.{f.name}' if spec_a.type_name != 'default' else (
            'pe' if f.name == 'pe' else 'sliding_window' if f.name == 'window' else f.name)
  return 'layer_pattern'


def _comparable(block) -> ModelConfig:
  """The resolved config with every layer listed, each layer's attention shape stated (0 =
  the model's), ``prope`` named ``proportional`` (the same encoding: :mod:`ropex.model.positional`)
  and the per-layer-input vocabulary stated (0 = the model's)."""
  block = block.copy_and_resolve_references()
  for pe in [block.pe] + [t.get('pe') for t in dict(block.get('layer_types') or {}).values()]:
    if pe is not None and pe.get('kind') == 'prope':
      pe.kind = 'proportional'
      pe.fraction = 0.75 if pe.fraction is None else pe.fraction
  cfg = ModelConfig.from_config(block)
  layers = tuple(dataclasses.replace(s, num_kv_heads=cfg.attention_shape(s)[0],
                                     head_dim=cfg.attention_shape(s)[1]) for s in cfg.layers)
  return dataclasses.replace(
      cfg, pattern=layers, scan_layers=False,
      vocab_size_per_layer_input=cfg.vocab_size_per_layer_input or cfg.vocab_size)


def hf_shapes(cfg: ModelConfig, spec) -> dict:
  """Shape of every HF tensor name pattern (names without the ``model.`` prefix) in a layer
  like ``spec`` (its attention shape and MLP width) and outside the layers."""
  N, D, V, L = cfg.num_heads, cfg.embed_dim, cfg.vocab_size, cfg.num_layers
  (K, H), F, P = cfg.attention_shape(spec), cfg.mlp_dim(spec), cfg.hidden_size_per_layer_input
  return {'embed_tokens.weight': (V, D), 'lm_head.weight': (V, D), 'norm.weight': (D,),
          'q_proj.weight': (N * H, D), 'k_proj.weight': (K * H, D), 'v_proj.weight': (K * H, D),
          'o_proj.weight': (D, N * H), 'q_proj.bias': (N * H,), 'k_proj.bias': (K * H,),
          'v_proj.bias': (K * H,), 'q_norm.weight': (H,), 'k_norm.weight': (H,),
          'layernorm.weight': (D,), 'gate_proj.weight': (F, D), 'up_proj.weight': (F, D),
          'down_proj.weight': (D, F), 'layer_scalar': (1,),
          'embed_tokens_per_layer.weight': (cfg.vocab_size_per_layer_input or V, L * P),
          'per_layer_model_projection.weight': (L * P, D),
          'per_layer_projection_norm.weight': (P,), 'per_layer_input_gate.weight': (P, D),
          'per_layer_projection.weight': (D, P), 'post_per_layer_input_norm.weight': (D,)}


def _shape(name: str, cfg: ModelConfig) -> tuple:
  parts = name.split('.')
  spec = cfg.layers[int(parts[1])] if parts[0] == 'layers' else cfg.layers[0]
  shapes = hf_shapes(cfg, spec)
  for suffix in sorted(shapes, key=len, reverse=True):   # q_norm.weight before norm.weight
    if name.endswith(suffix):
      return shapes[suffix]
  raise ConfigError(f'Hugging Face tensor {name!r} has no export shape (a feature ropex does '
                    'not export)')


def _rule_index(rule, cfg: ModelConfig, value_shape: tuple):
  """(source shapes, their offsets, the index map) of a mapping rule: where each element of the
  ropex tensor goes in the concatenated HF tensors; a ConfigError if the rule is not a
  rearrangement of them."""
  src_shapes = [_shape(s, cfg) for s in rule.sources]
  sizes = [int(np.prod(s)) for s in src_shapes]
  starts = np.cumsum([0] + sizes)
  index = rule.transform(*[np.arange(a, a + n).reshape(s) for a, n, s in
                           zip(starts, sizes, src_shapes)])
  if index.shape != tuple(value_shape) or not np.array_equal(np.sort(index.ravel()),
                                                             np.arange(starts[-1])):
    raise ConfigError(f'{"/".join(rule.path)} is not a rearrangement of {rule.sources}')
  return src_shapes, starts, index


def _hf_name(name: str) -> str:
  return name if name == 'lm_head.weight' else 'model.' + name


def tensor_shapes(params: dict, cfg: ModelConfig, family: hf_families.Family) -> dict:
  """``{HF name: shape}`` of every tensor :func:`tensors` yields, in its order; checks every
  rule first (so that nothing is written for a model one rule cannot invert)."""
  out = {}
  for rule in hf_mapping.rules(cfg, family.norms):
    src_shapes, _, _ = _rule_index(rule, cfg, np.shape(_get(params, rule.path)))
    out.update({_hf_name(n): tuple(s) for n, s in zip(rule.sources, src_shapes)})
  return out


def tensors(params: dict, cfg: ModelConfig, family: hf_families.Family):
  """Yields ``(HF name, float32 array)`` of the unscanned ``params``, each rule inverted, one
  rule at a time (only that rule's tensors are made at once)."""
  for rule in hf_mapping.rules(cfg, family.norms):
    value = np.asarray(_get(params, rule.path), np.float32)
    src_shapes, starts, index = _rule_index(rule, cfg, value.shape)
    flat = np.empty(starts[-1], np.float32)
    flat[index.ravel()] = value.ravel()
    del index, value
    for name, a, s in zip(rule.sources, starts, src_shapes):
      yield _hf_name(name), flat[a:a + int(np.prod(s))].reshape(s)


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree
