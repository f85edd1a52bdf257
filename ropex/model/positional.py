"""Positional-encoding registry.

An encoding is a callable ``pe(x_BTNH, positions_BT) -> x_BTNH`` built from a config block::

    pe = ropex.model.positional.from_config({'kind': 'prope', 'fraction': 0.75,
                                       'max_wavelength': 10_000}, head_dim=256)

Rotary kinds share one exact rotation (:class:`Rotary`): chunk ``k`` of a head of dim ``d``
is the pair of dims ``(k, k + d/2)`` (Gemma's ``half`` layout) or ``(2k, 2k + 1)``
(``interleaved``), rotated by ``position * g_k``. Chunk 0 is the highest frequency. Only the
rotated chunks are touched; the others pass through unchanged (an infinite timescale).

Adding an encoding touches this file only: write a factory ``(cfg, head_dim) -> encoding``
and decorate it with ``@register('name')``. The model never looks at the name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np

from ropex.errors import ConfigError
from ropex.fields import Block

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
  fields = _Fields(cfg, field)
  encoding = _REGISTRY[kind](fields, int(head_dim))
  unused = fields.unused(ignore=('kind',))
  if unused:
    raise ConfigError(f'{field}.{unused[0]}={cfg[unused[0]]!r} is not used by kind {kind!r} '
                      f'(it would be silently ignored); fields of {kind!r}: '
                      f'{", ".join(sorted(fields.used)) or "none"}; set it to None')
  return encoding


_Fields = Block  # the validated view of a ``model.pe`` block that every factory receives


@dataclasses.dataclass(frozen=True)
class NoPE:
  """No positional encoding: attention sees positions only through the causal mask."""
  kind: str = 'none'

  def __call__(self, x_BTNH, positions_BT):
    del positions_BT
    return x_BTNH

  def rotated_chunks(self) -> tuple[int, ...]:
    return ()

  def summary(self) -> dict:
    return {'pe_kind': self.kind, 'rotated_chunks': []}


@dataclasses.dataclass(frozen=True)
class Rotary:
  """Rotates the chunks ``[start, stop)`` of a rotary block by ``position * freqs``.

  ``rotary_dim`` is the width of the block that is chunked (the head dim, except NeoX-style
  ``partial`` which chunks only its leading slice). Chunk ``k`` pairs dims ``(k, k + R/2)``
  in the ``half`` layout and ``(2k, 2k + 1)`` in the ``interleaved`` one. ``timescales``
  holds one timescale per rotated chunk: ``angle_k = position / (scale * timescale_k)``.
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

  def rotated_chunks(self) -> tuple[int, ...]:
    return tuple(range(self.start, self.stop))

  def summary(self) -> dict:
    return {'pe_kind': self.kind, 'max_wavelength': self.max_wavelength,
            'layout': self.layout, 'rotary_dim': self.rotary_dim,
            'position_scale': self.position_scale,
            'rotated_chunks': list(self.rotated_chunks())}

  def angles(self, positions_BT):
    """Rotation angles [B, L, stop - start] in float32."""
    inv_C = 1.0 / (np.asarray(self.timescales, np.float64) * self.position_scale)
    return positions_BT.astype(jnp.float32)[..., None] * jnp.asarray(inv_C, jnp.float32)

  def __call__(self, x_BTNH, positions_BT):
    if self.stop == self.start:
      return x_BTNH
    if x_BTNH.shape[-1] != self.head_dim:
      raise ValueError(f'{self.kind}: built for head_dim {self.head_dim}, got x of shape '
                       f'{x_BTNH.shape}')
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
  return Rotary(kind=kind, head_dim=head_dim, rotary_dim=rotary_dim, start=start, stop=stop,
                timescales=rope_timescales(theta, rotary_dim, range(start, stop)),
                layout=f.choice('layout', 'half', _LAYOUTS),
                position_scale=f.positive('position_scale', 1.0), max_wavelength=theta)


@register('none')
def _none(f: _Fields, head_dim: int):
  del f, head_dim
  return NoPE()


@register('rope')
def _rope(f: _Fields, head_dim: int):
  return _rotary('rope', f, head_dim, 0, head_dim // 2, head_dim)


@register('prope')
def _prope(f: _Fields, head_dim: int):
  """p-RoPE: keeps the ``int(p * d/2)`` highest frequencies, exponent over the full head dim."""
  kept = int(f.fraction('fraction', 0.75) * (head_dim // 2))
  return _rotary('prope', f, head_dim, 0, kept, head_dim)


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
