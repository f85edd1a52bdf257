"""A Hugging Face ``config.json`` -> a complete ropex ``model`` block.

The family comes from ``model_type`` (:mod:`ropex.model.io.hf_families`); every field that
changes the computation is either mapped to a block field or refused with one
:class:`ConfigError` line naming it (``use_sliding_window``, biases ropex does not build,
mixture of experts, an unknown rope type), never silently dropped.
"""

from __future__ import annotations

import logging

import ml_collections

from ropex.errors import ConfigError
from ropex.model.config import model_block
from ropex.model.io import hf_families, hf_rope

log = logging.getLogger('ropex')

SLIDING, FULL = 'sliding_attention', 'full_attention'


class HFConfig:
  """The text part of a config.json, with the family's defaults for absent fields."""

  def __init__(self, hf: dict):
    self.root = hf
    self.text = dict(hf.get('text_config') or hf)
    model_type = self.text.get('model_type') or hf.get('model_type')
    if model_type in hf_families.REFUSED:
      raise ConfigError(f'config.json model_type={model_type!r} is not implemented: '
                        f'{hf_families.REFUSED[model_type]}')
    if model_type not in hf_families.MODEL_TYPES:
      raise ConfigError(f'config.json model_type={model_type!r} is not a supported family; '
                        f'allowed: {", ".join(sorted(hf_families.MODEL_TYPES))}')
    self.model_type = model_type
    self.family = hf_families.FAMILIES[hf_families.MODEL_TYPES[model_type]]

  def get(self, name: str, default=None):
    value = self.text.get(name)
    if value is None:
      value = self.family.defaults.get(name, default)
    return value

  def require(self, name: str) -> int:
    value = self.get(name)
    if value is None:
      raise ConfigError(f'config.json has no {name!r} (needed for model_type '
                        f'{self.model_type!r})')
    return int(value)


def _refuse_unsupported(c: HFConfig) -> None:
  """One line for each field whose semantics ropex does not build."""
  checks = [
      ('enable_moe_block', bool(c.get('enable_moe_block')), 'mixture-of-experts blocks'),
      ('num_experts', bool(c.get('num_experts')), 'mixture-of-experts blocks'),
      ('use_sliding_window', bool(c.get('use_sliding_window')),
       'Qwen\'s sliding window above max_window_layers'),
      ('mlp_bias', bool(c.get('mlp_bias')), 'MLP biases'),
      ('attention_bias', bool(c.get('attention_bias')),
       'biases on every attention projection incl. the output (ropex builds q/k/v biases: '
       'Qwen 2.5)'),
      ('use_bidirectional_attention', c.get('use_bidirectional_attention') in (True, 'all'),
       'bidirectional attention'),
      ('per_layer_config', c.text.get('per_layer_config') is not None,
       'an explicit per-layer config (ropex reads global_head_dim, num_global_key_value_heads)'),
  ]
  for name, bad, what in checks:
    if bad:
      raise ConfigError(f'config.json {name}={c.text.get(name)!r} is not implemented ({what}); '
                        f'allowed: unset/false')


def layer_types(c: HFConfig) -> list[str]:
  """Every layer's type, as transformers derives it when config.json leaves it out."""
  L = c.require('num_hidden_layers')
  given = c.get('layer_types')
  if given:
    if len(given) != L:
      raise ConfigError(f'config.json layer_types has {len(given)} entries; num_hidden_layers '
                        f'is {L}')
    unknown = sorted(set(given) - {SLIDING, FULL})
    if unknown:
      raise ConfigError(f'config.json layer_types has {unknown[0]!r}; allowed: {SLIDING}, {FULL}')
    given = list(given)
    if c.family.name == 'gemma4' and given[-1] != FULL:   # transformers forces it, and warns
      log.warning('config.json layer_types ends with %r: Gemma 4 (as transformers) makes the '
                  'last layer %s', given[-1], FULL)
      given[-1] = FULL
    return given
  name = c.family.name
  if name == 'gemma2':
    return [SLIDING if i % 2 == 0 else FULL for i in range(L)]
  if name in ('gemma3', 'gemma4'):
    period = int(c.text.get('sliding_window_pattern') or c.text.get('_sliding_window_pattern') or 6)
    types = [SLIDING if (i + 1) % period else FULL for i in range(L)]
    if name == 'gemma4':
      types[-1] = FULL
    return types
  return [FULL] * L


def period_of(types: list[str]) -> list[str]:
  """The shortest repeating period of the layer types (the whole list if none repeats)."""
  for p in range(1, len(types) + 1):
    if all(t == types[i % p] for i, t in enumerate(types)):
      return types[:p]
  return types


def _layer_type_block(c: HFConfig, kind: str) -> dict:
  field = f'rope_parameters.{kind}' if isinstance(c.get('rope_parameters'), dict) and kind in (
      c.get('rope_parameters') or {}) else 'rope_parameters'
  default_theta = float(c.get('rope_local_base_freq') if kind == SLIDING and
                        c.get('rope_local_base_freq') else c.get('rope_theta') or 10_000.0)
  rope = hf_rope.layer_rope_parameters(c.text, kind, default_theta)
  out = {'pe': hf_rope.pe_from_rope(rope, field, c.get('max_position_embeddings')),
         'window': int(c.require('sliding_window')) if kind == SLIDING else 0}
  if c.family.name == 'gemma4' and kind == FULL:
    out['head_dim'] = int(c.get('global_head_dim'))
    if c.get('attention_k_eq_v'):
      out['k_eq_v'] = True
      if c.get('num_global_key_value_heads'):
        out['num_kv_heads'] = int(c.get('num_global_key_value_heads'))
  return out


def _shapes(c: HFConfig) -> dict:
  heads = c.require('num_attention_heads')
  D = c.require('hidden_size')
  head_dim = c.text.get('head_dim') or (c.family.defaults.get('head_dim')
                                        if c.family.name.startswith('gemma') else D // heads)
  return dict(vocab_size=c.require('vocab_size'), num_layers=c.require('num_hidden_layers'),
              embed_dim=D, num_heads=heads,
              num_kv_heads=int(c.get('num_key_value_heads') or heads), head_dim=int(head_dim),
              hidden_dim=c.require('intermediate_size'))


def _block_fields(c: HFConfig) -> dict:
  fields = dict(c.family.fields)
  field = c.family.activation_field
  activation = c.get(field)
  if c.family.name == 'gemma' and activation == 'gelu':
    activation = 'gelu_pytorch_tanh'   # transformers: Gemma's legacy value means the tanh form
  if activation not in ('silu', 'gelu_pytorch_tanh'):
    raise ConfigError(f'config.json {field}={activation!r} is not implemented; allowed: silu, '
                      f'gelu_pytorch_tanh')
  fields.update(hidden_activation=activation, rms_norm_eps=float(c.get('rms_norm_eps', 1e-6)),
                tie_word_embeddings=bool(c.get('tie_word_embeddings', True)))
  if c.family.scale_from_config:
    fields['query_pre_attn_scalar'] = float(c.get('query_pre_attn_scalar'))
  if c.family.name == 'gemma4':
    fields.update(num_kv_shared_layers=int(c.get('num_kv_shared_layers') or 0),
                  use_double_wide_mlp=bool(c.get('use_double_wide_mlp')),
                  hidden_size_per_layer_input=int(c.get('hidden_size_per_layer_input') or 0),
                  vocab_size_per_layer_input=int(c.get('vocab_size_per_layer_input') or 0))
  return fields


def model_block_from_hf(hf: dict, arch: str = 'imported') -> tuple[ml_collections.ConfigDict,
                                                                    HFConfig]:
  """The complete ``model`` block (unscanned: the released layer-by-layer tree) of a
  config.json, and its parsed view."""
  c = HFConfig(hf)
  _refuse_unsupported(c)
  types = layer_types(c)
  pattern = period_of(types)
  layer_blocks = {kind: _layer_type_block(c, kind) for kind in dict.fromkeys(pattern)}
  block = model_block('tiny', **_shapes(c), **_block_fields(c), scan_layers=False,
                      attn_logit_softcap=float(c.get('attn_logit_softcapping') or 0.0),
                      final_logit_softcap=float(c.get('final_logit_softcapping') or 0.0))
  block.arch = arch
  set_schedule(block, pattern, layer_blocks)
  return block, c


def set_schedule(block: ml_collections.ConfigDict, pattern: list[str], layer_blocks: dict) -> None:
  """Sets the layer schedule of ``block`` from one period of layer types and each type's
  block (``pe``, ``window``, ...); also used by :mod:`ropex.model.io.gemma_flax_config`."""
  block.pe = layer_blocks[pattern[0]]['pe']
  if all(t['pe'] == block.pe for t in layer_blocks.values()):
    for t in layer_blocks.values():   # one encoding: model.pe (an override then acts everywhere)
      del t['pe']
  if len(layer_blocks) == 1 and set(layer_blocks[pattern[0]]) <= {'window'}:
    block.sliding_window = layer_blocks[pattern[0]].get('window', 0)
    return                            # one layer type: no schedule
  block.layer_pattern = tuple(pattern)
  block.layer_types = layer_blocks
