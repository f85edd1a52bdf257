"""Positional-encoding registry: the only place that knows encoding names.

An encoding is built from a config block::

    pe = ropex.model.positional.from_config({'kind': 'prope', 'fraction': 0.75,
                                       'max_wavelength': 10_000}, head_dim=256)

and implements the interface of :mod:`ropex.model.pe_interface` (transform queries and keys,
possibly differently; add an attention-logit bias; own learned parameters; act on the input
embedding; declare its frequencies). The classic form ``pe(x_BTNH, positions_BT) -> x_BTNH``
is the shared q/k transform.

Rotary kinds share one exact rotation (:class:`Rotary`): chunk ``k`` of a head of dim ``d``
is the pair of dims ``(k, k + d/2)`` (Gemma's ``half`` layout) or ``(2k, 2k + 1)``
(``interleaved``), rotated by ``position * g_k``. Chunk 0 is the highest frequency. Only the
rotated chunks are touched; the others pass through unchanged (an infinite timescale). Every
rotary kind takes a ``scaling`` block (:mod:`ropex.model.rope_scaling`, Hugging Face semantics).

Adding an encoding touches this file only: write a factory ``(cfg, head_dim) -> encoding``
and decorate it with ``@register('name')``. The model never looks at the name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np

from ropex import fields as fields_lib
from ropex.errors import ConfigError
from ropex.fields import Block
from ropex.model import pe_interface, pe_zoo, rope_scaling
from ropex.model.pe_interface import Encoding

Factory = Callable[[Mapping[str, Any], int], Any]
_REGISTRY: dict[str, Factory] = {}
_LAYOUTS = ('half', 'interleaved')


def register(name: str) -> Callable[[Factory], Factory]:
  """Decorator: registers ``factory(cfg, head_dim)`` as positional-encoding kind ``name``."""

  def wrap(factory: Factory) -> Factory:
    if name in _REGISTRY:
      raise ValueError(f'positional encoding {name!r} is already registered')
    _REGISTRY[name] = factory
    return factory

  return wrap


def registered_kinds() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def from_config(cfg: Mapping[str, Any], head_dim: int, field: str = 'model.pe'):
  """Builds the encoding described by ``cfg`` (a ConfigDict or dict) for ``head_dim``."""
  cfg = dict(cfg)
  kind = cfg.get('kind')
  if kind not in _REGISTRY:
    raise ConfigError(f'{field}.kind={kind!r} is not a registered positional encoding; '
                      f'allowed: {", ".join(registered_kinds())}')
  if not isinstance(head_dim, (int, np.integer)) or head_dim <= 0 or head_dim % 2:
    raise ConfigError(f'model.head_dim={head_dim!r} must be a positive even integer '
                      f'(rotary chunks pair up dims)')
  scaling = cfg.get('scaling')
  if scaling is not None and not _scaling_active(scaling):
    cfg['scaling'] = None     # an all-default block (type none) is the same as no block
  fields = _Fields(cfg, field)
  encoding = _REGISTRY[kind](fields, int(head_dim))   # bad scaling blocks raise ConfigError
  if cfg.get('scaling') is not None and 'scaling' not in fields.used:
    raise ConfigError(f'{field}.scaling.type={dict(cfg["scaling"]).get("type")!r} is not used '
                      f'by kind {kind!r} (RoPE scalings apply to rotary kinds); set '
                      f'{field}.scaling.type=none')
  unused = fields.unused(ignore=('kind',))
  if unused:
    raise ConfigError(f'{field}.{unused[0]}={cfg[unused[0]]!r} is not used by kind {kind!r} '
                      f'(it would be silently ignored); fields of {kind!r}: '
                      f'{", ".join(sorted(fields.used)) or "none"}; set it to None')
  return encoding


def _scaling_active(block) -> bool:
  block = dict(block)
  return (block.get('type') or 'none') != 'none' or any(
      v is not None for k, v in block.items() if k != 'type')


class _Fields(Block):
  """The validated view of a ``model.pe`` block that every factory receives (the one field
  helper, :class:`ropex.fields.Block`, plus the block's RoPE scaling)."""

  def integer(self, key: str, default: int, minimum: int = 1) -> int:
    return int(self.value(key, fields_lib.integer(minimum), default))

  def boolean(self, key: str, default: bool) -> bool:
    return self.value(key, fields_lib.boolean, default)

  def scaling(self, rotary_dim: int) -> rope_scaling.Scaling:
    return rope_scaling.from_config(self.get('scaling'), f'{self.prefix}.scaling', rotary_dim)


@dataclasses.dataclass(frozen=True)
class NoPE(Encoding):
  """No positional encoding: attention sees positions only through the causal mask.

  With ``attn_temperature_tuning`` (Llama 4's NoPE layers, after Nakanishi 2501.19399), queries
  only are multiplied by ``log(floor((pos + 1) / floor_scale) + 1) * attn_scale + 1`` (Llama 4
  defaults: ``floor_scale`` 8192, ``attn_scale`` 0.1): 1 for the first ``floor_scale`` positions,
  then a slowly growing temperature that keeps long-context attention selective."""
  kind: str = 'none'
  head_dim: int = 0
  attn_temperature_tuning: bool = False
  floor_scale: float = 8192.0
  attn_scale: float = 0.1

  def __call__(self, x_BTNH, positions_BT):
    del positions_BT
    return x_BTNH

  def temperature(self, positions_BT):
    """The query scale [B, T] (float32)."""
    pos = positions_BT.astype(jnp.float32)
    return jnp.log(jnp.floor((pos + 1.0) / self.floor_scale) + 1.0) * self.attn_scale + 1.0

  def queries(self, q_BTNH, positions_BT, params):
    del params
    if not self.attn_temperature_tuning:
      return q_BTNH
    scale_BT11 = self.temperature(positions_BT)[:, :, None, None]
    return (q_BTNH.astype(jnp.float32) * scale_BT11).astype(q_BTNH.dtype)

  def inv_freq(self, seq_len: int | None = None) -> np.ndarray:
    del seq_len
    return np.zeros(self.head_dim // 2)

  def label(self) -> str:
    return 'NoPE + query temperature' if self.attn_temperature_tuning else 'NoPE'

  def summary(self) -> dict:
    out = {'pe_kind': self.kind, 'rotated_chunks': []}
    if self.attn_temperature_tuning:
      out.update(attn_temperature_tuning=True, floor_scale=self.floor_scale,
                 attn_scale=self.attn_scale)
    return out


@dataclasses.dataclass(frozen=True)
class Rotary(Encoding):
  """Rotates the chunks ``[start, stop)`` of a rotary block by ``position * freqs``.

  ``rotary_dim`` is the width of the block that is chunked (the head dim, except NeoX-style
  ``partial`` which chunks only its leading slice). Chunk ``k`` pairs dims ``(k, k + R/2)``
  in the ``half`` layout and ``(2k, 2k + 1)`` in the ``interleaved`` one. ``timescales``
  holds one timescale per rotated chunk: ``angle_k = position / (scale * timescale_k)``.
  ``scaling`` (:mod:`ropex.model.rope_scaling`) replaces those frequencies by HF's scaled ones
  (computed over the whole rotary block, then restricted to the rotated chunks) and multiplies
  the rotary block by its attention factor, as HF multiplies cos and sin.
  """
  kind: str
  head_dim: int
  rotary_dim: int
  start: int
  stop: int
  timescales: tuple[float, ...]
  layout: str = 'half'
  position_scale: float = 1.0
  max_wavelength: float = 10_000.0
  scaling: rope_scaling.Scaling = rope_scaling.NONE

  def rotated_chunks(self) -> tuple[int, ...]:
    return tuple(range(self.start, self.stop))

  def rotated_inv_freq(self, seq_len: int | None = None) -> np.ndarray:
    """Angular frequency of each rotated chunk (float64)."""
    if not self.scaling.active:
      return 1.0 / (np.asarray(self.timescales, np.float64) * self.position_scale)
    inv = self.scaling.inv_freq(self.max_wavelength, self.rotary_dim, seq_len)
    return inv[self.start:self.stop]

  def inv_freq(self, seq_len: int | None = None) -> np.ndarray:
    out = np.zeros(self.head_dim // 2)
    out[self.start:self.stop] = self.rotated_inv_freq(seq_len)
    return out

  def attention_factor(self, seq_len: int | None = None) -> float:
    del seq_len
    return self.scaling.attention_factor()

  def chunk_dims(self, head_dim: int) -> np.ndarray:
    if self.layout == 'interleaved':
      return np.arange(head_dim).reshape(head_dim // 2, 2)
    rot = self.rotary_dim if self.stop > self.start else head_dim
    rest = pe_interface.half_pairs(head_dim - rot) + rot
    return np.concatenate([pe_interface.half_pairs(rot), rest.reshape(-1, 2)])

  def label(self) -> str:
    text = f'{self.kind} θ={self.max_wavelength:g}'
    if self.scaling.active:
      text += f' {self.scaling.type}' + (f'×{self.scaling.factor:g}' if self.scaling.factor
                                          else '')
    return text

  def summary(self) -> dict:
    out = {'pe_kind': self.kind, 'max_wavelength': self.max_wavelength,
           'layout': self.layout, 'rotary_dim': self.rotary_dim,
           'position_scale': self.position_scale,
           'rotated_chunks': list(self.rotated_chunks())}
    if self.scaling.active:
      out['scaling'] = self.scaling.fields()
    return out

  def _traced_inv_freq(self, positions_BT):
    """Length-dependent scalings: frequencies for L = max(positions) + 1, at run time."""
    length = jnp.max(positions_BT).astype(jnp.float32) + 1.0
    s, dim = self.scaling, self.rotary_dim
    if s.type == 'dynamic_ntk':
      base = rope_scaling.dynamic_ntk_base(self.max_wavelength, s.factor,
                                           s.original_max_position, length, dim, xp=jnp)
      exponent = (np.arange(0, dim, 2, dtype=np.float64) / dim)[self.start:self.stop]
      return jnp.exp(-jnp.asarray(exponent, jnp.float32) * jnp.log(base))
    short = self.scaling.inv_freq(self.max_wavelength, dim, None)[self.start:self.stop]
    long = self.scaling.inv_freq(self.max_wavelength, dim, s.original_max_position + 1)
    return jnp.where(length > s.original_max_position,
                     jnp.asarray(long[self.start:self.stop], jnp.float32),
                     jnp.asarray(short, jnp.float32))

  def angles(self, positions_BT):
    """Rotation angles [B, L, stop - start] in float32."""
    if self.scaling.depends_on_length:
      inv_C = self._traced_inv_freq(positions_BT)
    else:
      inv_C = jnp.asarray(self.rotated_inv_freq(), jnp.float32)
    return positions_BT.astype(jnp.float32)[..., None] * inv_C

  def __call__(self, x_BTNH, positions_BT):
    factor = self.scaling.attention_factor()
    if self.stop == self.start and factor == 1.0:
      return x_BTNH
    if x_BTNH.shape[-1] != self.head_dim:
      raise ValueError(f'{self.kind}: built for head_dim {self.head_dim}, got x of shape '
                       f'{x_BTNH.shape}')
    out = self._rotate(x_BTNH, positions_BT) if self.stop > self.start else x_BTNH
    if factor == 1.0:
      return out
    R = self.rotary_dim
    scaled = out[..., :R].astype(jnp.float32) * factor
    return jnp.concatenate([scaled.astype(x_BTNH.dtype), out[..., R:]], axis=-1)

  def _rotate(self, x_BTNH, positions_BT):
    theta_BT1C = self.angles(positions_BT)[:, :, None, :]
    cos, sin = jnp.cos(theta_BT1C), jnp.sin(theta_BT1C)
    dtype = x_BTNH.dtype
    if self.layout == 'interleaved':
      return self._interleaved(x_BTNH.astype(jnp.float32), cos, sin).astype(dtype)
    half, a, b = self.rotary_dim // 2, self.start, self.stop
    x = x_BTNH.astype(jnp.float32)
    x1, x2 = x[..., a:b], x[..., half + a:half + b]
    r1, r2 = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    pieces = [x[..., :a], r1, x[..., b:half + a], r2, x[..., half + b:]]
    return jnp.concatenate([p for p in pieces if p.shape[-1]], axis=-1).astype(dtype)

  def _interleaved(self, x, cos, sin):
    a, b = 2 * self.start, 2 * self.stop
    pairs = x[..., a:b].reshape(*x.shape[:-1], b // 2 - a // 2, 2)
    x1, x2 = pairs[..., 0], pairs[..., 1]
    rot = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    pieces = [x[..., :a], rot.reshape(*x.shape[:-1], b - a), x[..., b:]]
    return jnp.concatenate([p for p in pieces if p.shape[-1]], axis=-1)


def rope_timescales(max_wavelength: float, denominator: int, chunks: range) -> tuple[float, ...]:
  """RoPE timescales ``theta^(2k / denominator)`` for chunk indices ``k`` (float64)."""
  k = np.asarray(list(chunks), np.float64)
  return tuple(float(t) for t in np.power(float(max_wavelength), 2.0 * k / denominator))


def _rotary(kind: str, f: _Fields, head_dim: int, start: int, stop: int, rotary_dim: int):
  theta = f.positive('max_wavelength', 10_000.0)
  position_scale = f.positive('position_scale', 1.0)
  scaling = f.scaling(rotary_dim)
  if scaling.active and position_scale != 1.0:
    raise ConfigError(f'{f.prefix}.position_scale={position_scale:g} and '
                      f'{f.prefix}.scaling.type={scaling.type!r} are both set; position_scale '
                      f'is an alias of scaling.type=linear (factor = position_scale): set one')
  return Rotary(kind=kind, head_dim=head_dim, rotary_dim=rotary_dim, start=start, stop=stop,
                timescales=rope_timescales(theta, rotary_dim, range(start, stop)),
                layout=f.choice('layout', 'half', _LAYOUTS),
                position_scale=position_scale, max_wavelength=theta, scaling=scaling)


@register('none')
def _none(f: _Fields, head_dim: int):
  if not f.boolean('attn_temperature_tuning', False):
    return NoPE(head_dim=head_dim)
  return NoPE(head_dim=head_dim, attn_temperature_tuning=True,
              floor_scale=f.positive('floor_scale', 8192.0),
              attn_scale=f.positive('attn_scale', 0.1))


@register('rope')
def _rope(f: _Fields, head_dim: int):
  return _rotary('rope', f, head_dim, 0, head_dim // 2, head_dim)


@register('prope')
def _prope(f: _Fields, head_dim: int):
  """p-RoPE: keeps the ``int(p * d/2)`` highest frequencies, exponent over the full head dim."""
  kept = int(f.fraction('fraction', 0.75) * (head_dim // 2))
  return _rotary('prope', f, head_dim, 0, kept, head_dim)


@register('proportional')
def _proportional(f: _Fields, head_dim: int):
  """Gemma 4's "proportional RoPE" (HF ``rope_type="proportional"``, its
  ``partial_rotary_factor`` is ``fraction``): exactly p-RoPE. Gemma 4's global layers use
  p = 0.25, θ = 1M."""
  kept = int(f.fraction('fraction', 0.25) * (head_dim // 2))
  return _rotary('proportional', f, head_dim, 0, kept, head_dim)


@register('prope_reversed')
def _prope_reversed(f: _Fields, head_dim: int):
  """Control: keeps the ``int(p * d/2)`` LOWEST frequencies, the highest are left unrotated."""
  kept = int(f.fraction('fraction', 0.75) * (head_dim // 2))
  return _rotary('prope_reversed', f, head_dim, head_dim // 2 - kept, head_dim // 2, head_dim)


@register('partial')
def _partial(f: _Fields, head_dim: int):
  """NeoX-style: rotates the leading ``rotary_fraction`` of dims, frequencies recomputed over
  that slice (so it keeps the lowest frequency; it is not p-RoPE)."""
  fraction = f.fraction('rotary_fraction', 0.75)
  rotary_dim = int(fraction * head_dim) // 2 * 2
  return _rotary('partial', f, head_dim, 0, rotary_dim // 2, max(rotary_dim, 2))


@register('alibi')
def _alibi(f: _Fields, head_dim: int):
  del f
  return pe_zoo.ALiBi(head_dim=head_dim)


@register('fire')
def _fire(f: _Fields, head_dim: int):
  return pe_zoo.FIRE(head_dim=head_dim, mlp_width=f.integer('fire_mlp_width', 32),
                     init_c=f.positive('fire_init_c', 0.1),
                     init_L=f.positive('fire_init_L', 512.0))


@register('fope')
def _fope(f: _Fields, head_dim: int):
  return pe_zoo.FoPE(head_dim=head_dim, max_wavelength=f.positive('max_wavelength', 10_000.0),
                     train_length=f.integer('train_length', 4096, minimum=2),
                     fourier_sigma=f.positive('fourier_sigma', 0.3))


@register('learned_absolute')
def _learned_absolute(f: _Fields, head_dim: int):
  return pe_zoo.LearnedAbsolute(head_dim=head_dim,
                                max_positions=f.integer('max_positions', 1024))


@register('sinusoidal_absolute')
def _sinusoidal_absolute(f: _Fields, head_dim: int):
  return pe_zoo.SinusoidalAbsolute(head_dim=head_dim,
                                   max_wavelength=f.positive('max_wavelength', 10_000.0))
