"""Hugging Face rope settings -> ropex ``pe`` blocks, per layer type.

Reads both the newer ``rope_parameters`` (flat, or one entry per layer type as Gemma 3/4 write
it) and the older ``rope_theta`` / ``rope_local_base_freq`` / ``rope_scaling`` fields. HF rope
types map to ropex kinds and scalings with the same semantics (:mod:`ropex.model.rope_scaling`):
``default`` -> rope, ``linear`` / ``dynamic`` / ``yarn`` / ``llama3`` -> rope with that scaling,
``proportional`` (Gemma 4) -> kind ``proportional`` (p-RoPE, ``partial_rotary_factor`` = p).
Anything else is one :class:`ConfigError` naming the field.
"""

from __future__ import annotations

from ropex.errors import ConfigError
from ropex.model.config import pe_block

_SCALING_TYPES = {'linear': 'linear', 'dynamic': 'dynamic_ntk', 'yarn': 'yarn',
                  'llama3': 'llama3'}
# HF rope field -> ropex scaling field (per type); fields that only restate defaults are skipped
_SCALING_FIELDS = {
    'linear': {'factor': 'factor'},
    'dynamic': {'factor': 'factor', 'original_max_position_embeddings': 'original_max_position'},
    'yarn': {'factor': 'factor', 'original_max_position_embeddings': 'original_max_position',
             'beta_fast': 'beta_fast', 'beta_slow': 'beta_slow',
             'attention_factor': 'attention_factor', 'truncate': 'truncate'},
    'llama3': {'factor': 'factor', 'original_max_position_embeddings': 'original_max_position',
               'low_freq_factor': 'low_freq_factor', 'high_freq_factor': 'high_freq_factor'},
}
_IGNORED = {'rope_type', 'type', 'rope_theta', 'partial_rotary_factor'}


def layer_rope_parameters(hf: dict, layer_type: str, default_theta: float) -> dict:
  """The rope parameters of one layer type, whichever way config.json states them."""
  params = hf.get('rope_parameters')
  if isinstance(params, dict) and layer_type in params:
    return dict(params[layer_type] or {})
  if isinstance(params, dict) and params and not any(isinstance(v, dict) for v in params.values()):
    return dict(params)
  if params:
    raise ConfigError(f'config.json rope_parameters has no entry for layer type {layer_type!r}; '
                      f'it has: {", ".join(params)}')
  out = dict(hf.get('rope_scaling') or {})
  local = layer_type == 'sliding_attention' and hf.get('rope_local_base_freq') is not None
  if local:   # Gemma 3's older fields: rope_scaling belongs to the global layers only
    out = {'rope_type': 'default', 'rope_theta': hf['rope_local_base_freq']}
  out.setdefault('rope_theta', hf.get('rope_theta', default_theta))
  return out


def pe_from_rope(params: dict, field: str, max_position: int | None):
  """A ropex ``pe`` block for HF rope parameters (``field`` names them in errors)."""
  rope_type = params.get('rope_type') or params.get('type') or 'default'
  theta = float(params.get('rope_theta') or 10_000.0)
  fraction = params.get('partial_rotary_factor')
  if rope_type == 'proportional':
    factor = float(params.get('factor') or 1.0)
    scaling = {'type': 'linear', 'factor': factor} if factor != 1.0 else None
    _check_used(params, {'factor'}, field, rope_type)
    return pe_block('proportional', fraction=float(1.0 if fraction is None else fraction),
                    max_wavelength=theta, scaling=scaling)
  if fraction is not None and float(fraction) != 1.0:
    raise ConfigError(f'config.json {field}.partial_rotary_factor={fraction} with rope_type '
                      f'{rope_type!r} is not implemented; allowed: 1.0 (or rope_type proportional)')
  if rope_type == 'default':
    _check_used(params, set(), field, rope_type)
    return pe_block('rope', max_wavelength=theta)
  if rope_type not in _SCALING_TYPES:
    raise ConfigError(f'config.json {field}.rope_type={rope_type!r} is not implemented; '
                      f'allowed: default, proportional, {", ".join(_SCALING_TYPES)}')
  names = _SCALING_FIELDS[rope_type]
  _check_used(params, set(names), field, rope_type)
  scaling = {'type': _SCALING_TYPES[rope_type]}
  scaling.update({names[k]: v for k, v in params.items() if k in names and v is not None})
  if rope_type in ('dynamic', 'yarn') and 'original_max_position' not in scaling:
    scaling['original_max_position'] = max_position   # transformers' fallback
  return pe_block('rope', max_wavelength=theta, scaling=scaling)


def _check_used(params: dict, used: set, field: str, rope_type: str) -> None:
  extra = sorted(k for k, v in params.items() if k not in used | _IGNORED and v is not None)
  if extra:
    raise ConfigError(f'config.json {field}.{extra[0]}={params[extra[0]]!r} is not implemented '
                      f'for rope_type {rope_type!r}; allowed fields: '
                      f'{", ".join(sorted(used)) or "rope_theta"}')
