"""RoPE scalings (``model.pe.scaling``), with the semantics of Hugging Face transformers'
``modeling_rope_utils`` for the same fields. Pure numpy (float64).

Every function works on a *rotary block* of ``dim`` dims (the head dim, or NeoX ``partial``'s
leading slice = HF's ``head_dim * partial_rotary_factor``) with base ``θ``: the unscaled
frequencies are ``θ^(-2k/dim)``, k = 0 .. dim/2 - 1, and :meth:`Scaling.inv_freq` returns the
scaled ones for all ``dim/2`` chunks. A rotary kind then keeps its own chunks (p-RoPE the top
``int(p·d/2)``; the dropped chunks stay unrotated), and multiplies cos and sin of the whole rotary
block by :meth:`Scaling.attention_factor` as HF does (so q·k scale by its square).

``type`` and fields (``None`` = unused or the default below):

* ``none``: unscaled.
* ``linear`` (position interpolation, Chen et al. 2306.15595; HF ``linear``): ``inv / factor``.
* ``ntk`` (static NTK-aware, bloc97; HF ``ntk``): the base becomes ``θ · factor^(dim/(dim-2))``.
* ``dynamic_ntk`` (HF ``dynamic``): with ``L`` the sequence length and ``L0 =
  original_max_position``, the base becomes ``θ · (factor·L/L0 - (factor-1))^(dim/(dim-2))`` once
  ``L > L0`` (unchanged below). In the model ``L = max(positions in the batch) + 1``, computed at
  run time like HF's ``dynamic_rope_update``; ``describe`` reports it at ``--seq_len``.
* ``yarn`` (Peng et al. 2309.00071; HF ``yarn``): per chunk, a linear ramp between the
  interpolated (``inv/factor``) and the original frequencies, between the correction dims of
  ``beta_fast`` (32) and ``beta_slow`` (1) rotations over ``L0 = original_max_position``
  (``floor``/``ceil`` of the bounds when ``truncate``, default True); attention factor
  ``0.1·ln(factor) + 1`` unless ``attention_factor`` is given. (HF's DeepSeek-only ``mscale`` /
  ``mscale_all_dim`` are not fields; set ``attention_factor`` instead.)
* ``llama3`` (Llama 3.1; HF ``llama3``): wavelengths ``2π/inv`` above ``L0/low_freq_factor`` are
  divided by ``factor``, below ``L0/high_freq_factor`` kept, smoothly interpolated in between.
  Defaults are Llama 3.1's: factor 8, low 1, high 4, ``original_max_position`` 8192.
* ``longrope`` (Ding et al. 2402.13753; HF ``longrope``): ``inv / ext`` with ``ext =
  long_factor`` when ``L > original_max_position`` else ``short_factor`` (one per chunk; ``L`` as
  for ``dynamic_ntk``); attention factor ``sqrt(1 + ln(factor)/ln(L0))`` (1 for factor <= 1)
  unless ``attention_factor`` is given. This is HF with ``max_position_embeddings = factor·L0``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from ropex import fields
from ropex.errors import ConfigError

TYPES = ('none', 'linear', 'ntk', 'dynamic_ntk', 'yarn', 'llama3', 'longrope')
FIELDS = ('factor', 'original_max_position', 'beta_fast', 'beta_slow', 'attention_factor',
          'low_freq_factor', 'high_freq_factor', 'long_factor', 'short_factor', 'truncate')
FIELD_TYPES = {'type': str, 'factor': float, 'original_max_position': int, 'beta_fast': float,
               'beta_slow': float, 'attention_factor': float, 'low_freq_factor': float,
               'high_freq_factor': float, 'long_factor': tuple, 'short_factor': tuple,
               'truncate': bool}
# Fields each type reads (all others must be None).
USES = {
    'none': (),
    'linear': ('factor',),
    'ntk': ('factor',),
    'dynamic_ntk': ('factor', 'original_max_position'),
    'yarn': ('factor', 'original_max_position', 'beta_fast', 'beta_slow', 'attention_factor',
             'truncate'),
    'llama3': ('factor', 'original_max_position', 'low_freq_factor', 'high_freq_factor'),
    'longrope': ('factor', 'original_max_position', 'attention_factor', 'long_factor',
                 'short_factor'),
}
LLAMA3_DEFAULTS = {'factor': 8.0, 'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                   'original_max_position': 8192}


class ScalingError(ConfigError):
  """One sentence naming the scaling field (a :class:`~ropex.errors.ConfigError`)."""


@dataclasses.dataclass(frozen=True)
class Scaling:
  type: str = 'none'
  factor: float | None = None
  original_max_position: int | None = None
  beta_fast: float | None = None
  beta_slow: float | None = None
  attention_factor_: float | None = None
  low_freq_factor: float | None = None
  high_freq_factor: float | None = None
  long_factor: tuple[float, ...] | None = None
  short_factor: tuple[float, ...] | None = None
  truncate: bool | None = None

  @property
  def active(self) -> bool:
    return self.type != 'none'

  @property
  def depends_on_length(self) -> bool:
    """True when the frequencies depend on the sequence length (computed at run time)."""
    return self.type in ('dynamic_ntk', 'longrope')

  def fields(self) -> dict:
    out = {'type': self.type}
    for name in USES[self.type]:
      value = getattr(self, 'attention_factor_' if name == 'attention_factor' else name)
      out[name] = list(value) if isinstance(value, tuple) else value
    return out

  def inv_freq(self, base: float, dim: int, seq_len: int | None = None) -> np.ndarray:
    """Scaled angular frequencies of the ``dim/2`` chunks of a rotary block (float64)."""
    exponent = np.arange(0, dim, 2, dtype=np.float64) / dim
    inv = 1.0 / np.power(float(base), exponent)
    t = self.type
    if t == 'none':
      return inv
    if t == 'linear':
      return inv / self.factor
    if t == 'ntk':
      return 1.0 / np.power(float(base) * self.factor ** (dim / (dim - 2)), exponent)
    if t == 'dynamic_ntk':
      scaled = dynamic_ntk_base(base, self.factor, self.original_max_position,
                                self.original_max_position if seq_len is None else seq_len, dim)
      return 1.0 / np.power(scaled, exponent)
    if t == 'yarn':
      return self._yarn(inv, base, dim)
    if t == 'llama3':
      return self._llama3(inv)
    if t == 'longrope':
      long = seq_len is not None and seq_len > self.original_max_position
      ext = np.asarray(self.long_factor if long else self.short_factor, np.float64)
      return inv / ext
    raise ScalingError(f'scaling type {t!r} is unknown')

  def attention_factor(self) -> float:
    if self.attention_factor_ is not None:
      return float(self.attention_factor_)
    if self.type == 'yarn':
      return 0.1 * math.log(self.factor) + 1.0 if self.factor > 1 else 1.0
    if self.type == 'longrope':
      if self.factor <= 1.0:
        return 1.0
      return math.sqrt(1.0 + math.log(self.factor) / math.log(self.original_max_position))
    return 1.0

  def _yarn(self, inv: np.ndarray, base: float, dim: int) -> np.ndarray:
    beta_fast = 32.0 if self.beta_fast is None else self.beta_fast
    beta_slow = 1.0 if self.beta_slow is None else self.beta_slow
    L0 = self.original_max_position

    def correction_dim(rotations):  # the dim index whose wavelength fits `rotations` in L0
      return dim * math.log(L0 / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if self.truncate is None or self.truncate:
      low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
      high += 0.001  # as HF: avoids a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    extrapolation = 1.0 - ramp            # 1: keep the original frequency (high frequencies)
    return inv / self.factor * (1.0 - extrapolation) + inv * extrapolation

  def _llama3(self, inv: np.ndarray) -> np.ndarray:
    factor, L0 = self.factor, self.original_max_position
    low, high = self.low_freq_factor, self.high_freq_factor
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > L0 / low, inv / factor, inv)
    smooth = (L0 / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < L0 / high) & ~(wavelen > L0 / low)
    return np.where(medium, smoothed, out)


def dynamic_ntk_base(base, factor, original_max_position, seq_len, dim, xp=np):
  """HF ``dynamic``: the base for sequence length ``seq_len`` (unchanged up to ``L0``). ``xp``
  is numpy, or ``jax.numpy`` for a traced ``seq_len``."""
  length = xp.maximum(seq_len, original_max_position)
  return base * ((factor * length / original_max_position) - (factor - 1)) ** (dim / (dim - 2))


NONE = Scaling()


_REQUIRED = {'linear': ('factor',), 'ntk': ('factor',),
             'dynamic_ntk': ('factor', 'original_max_position'),
             'yarn': ('factor', 'original_max_position'),
             'longrope': ('factor', 'original_max_position', 'long_factor', 'short_factor')}
_POSITIVE = ('factor', 'beta_fast', 'beta_slow', 'attention_factor', 'low_freq_factor',
             'high_freq_factor')


def from_config(block: Mapping[str, Any] | None, field: str, rotary_dim: int) -> Scaling:
  """Validates a ``scaling`` block for a rotary block of ``rotary_dim`` dims (one
  :class:`~ropex.errors.ConfigError` sentence naming ``field.<name>`` for any problem)."""
  if block is None:
    return NONE
  kind, values = _kind_and_values(dict(block), field)
  _check_values(kind, values, field, rotary_dim)
  return Scaling(type=kind, **_normalized(values))


def _kind_and_values(block: dict, field: str) -> tuple[str, dict]:
  """The scaling type and the values of the fields it uses (llama3 defaults filled in);
  unknown fields, and set fields the type does not use, are errors."""
  unknown = sorted(set(block) - set(FIELD_TYPES))
  if unknown:
    raise ScalingError(f'{field}.{unknown[0]} is not a scaling field; allowed: '
                       f'{", ".join(FIELD_TYPES)}')
  kind = block.get('type') or 'none'
  if kind not in TYPES:
    raise ScalingError(f'{field}.type={kind!r} is not allowed; allowed: {", ".join(TYPES)}')
  uses = USES[kind]
  for name in FIELDS:
    if block.get(name) is not None and name not in uses:
      raise ScalingError(f'{field}.{name}={block[name]!r} is not used by scaling type {kind!r} '
                         f'(it would be silently ignored); fields of {kind!r}: '
                         f'{", ".join(uses) or "none"}; set it to None')
  values = {name: block.get(name) for name in uses}
  if kind == 'llama3':
    values = {k: (LLAMA3_DEFAULTS[k] if v is None else v) for k, v in values.items()}
  for name in _REQUIRED.get(kind, ()):
    if values.get(name) is None:
      raise ScalingError(f'{field}.{name} is required for scaling type {kind!r} '
                         f'(fields of {kind!r}: {", ".join(uses)})')
  return kind, values


def _check_values(kind: str, values: dict, field: str, rotary_dim: int) -> None:
  """Each set value within its bounds (the shared rules of :mod:`ropex.fields`), and the
  relations between them."""
  for name in _POSITIVE:
    if values.get(name) is not None:
      fields.check(values[name], f'{field}.{name}', fields.number(0, low_open=True))
  if values.get('original_max_position') is not None:   # the trained context length
    fields.check(values['original_max_position'], f'{field}.original_max_position',
                 fields.integer(2))
  if values.get('truncate') is not None:
    fields.check(values['truncate'], f'{field}.truncate', fields.boolean)
  if kind == 'yarn' and (values['beta_fast'] or 32.0) <= (values['beta_slow'] or 1.0):
    raise ScalingError(f'{field}.beta_fast must be greater than {field}.beta_slow (defaults '
                       f'32 and 1)')
  if kind == 'llama3' and values['high_freq_factor'] <= values['low_freq_factor']:
    raise ScalingError(f'{field}.high_freq_factor={values["high_freq_factor"]!r} must be '
                       f'greater than low_freq_factor={values["low_freq_factor"]!r}')
  if kind in ('ntk', 'dynamic_ntk') and rotary_dim <= 2:
    raise ScalingError(f'{field}.type={kind!r} needs a rotary block of more than 2 dims')
  for name in ('long_factor', 'short_factor'):
    value = values.get(name)
    if value is not None and (len(tuple(value)) != rotary_dim // 2 or not all(
        fields.number(0, low_open=True)(v)[0] for v in value)):
      raise ScalingError(f'{field}.{name} must be {rotary_dim // 2} numbers > 0 (one per '
                         f'chunk of the rotary block); got {len(tuple(value))} values')


def _normalized(values: dict) -> dict:
  """Checked values as the :class:`Scaling` fields: floats, ints and tuples."""
  out = dict(values)
  for name in ('long_factor', 'short_factor'):
    if out.get(name) is not None:
      out[name] = tuple(float(v) for v in out[name])
  for name in _POSITIVE:
    if out.get(name) is not None:
      out[name] = float(out[name])
  if 'attention_factor' in out:
    out['attention_factor_'] = out.pop('attention_factor')
  if out.get('original_max_position') is not None:
    out['original_max_position'] = int(out['original_max_position'])
  return out
