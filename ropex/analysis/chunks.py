"""Frequency chunks of a head: which dims pair up, and at what angular frequency they rotate.

Chunk ``k`` of a rotary head is the 2-D pair of dims that one frequency rotates: ``(k, k + R/2)``
in Gemma's ``half`` layout, ``(2k, 2k + 1)`` in the ``interleaved`` one. Chunk 0 is the highest
frequency. A rotation preserves each chunk's 2-norm, so chunk norms measured after the
positional encoding are the paper's measure of how much a head uses each frequency.

:func:`chunk_layout` is the one place that maps an encoding to its chunks; every analysis
(frequency usage, ablation, theory) goes through it. It reads only what the encoding declares
through the positional interface (``inv_freq``, ``chunk_dims``), so it works for every kind; an
encoding that declares no frequencies (ALiBi, FIRE, absolute kinds) gets Gemma's half pairing
and ``declared=False``: frequency analyses are then "not applicable" for that layer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ropex.model import pe_interface, positional


@dataclasses.dataclass(frozen=True)
class ChunkLayout:
  """``dims_C2[c]`` are the two dims of chunk ``c``; ``freqs_C[c]`` its angular frequency in
  radians per position (0 = unrotated). ``declared`` is False when the encoding has no notion
  of rotation frequencies (the freqs are then all 0 and frequency bands mean nothing)."""
  dims_C2: np.ndarray
  freqs_C: np.ndarray
  declared: bool = True

  @property
  def num_chunks(self) -> int:
    return int(self.dims_C2.shape[0])

  @property
  def rotated_C(self) -> np.ndarray:
    return self.freqs_C > 0

  def by_frequency(self) -> np.ndarray:
    """Chunk indices from the highest frequency to the lowest (unrotated last, stable)."""
    return np.argsort(-self.freqs_C, kind='stable')


def _half_pairs(first: int, width: int) -> np.ndarray:
  k = np.arange(width // 2)
  return np.stack([first + k, first + width // 2 + k], axis=-1)


def base_encoding(pe):
  """Unwraps analysis wrappers (anything with a ``base_pe`` field) to the registry encoding."""
  while hasattr(pe, 'base_pe'):
    pe = pe.base_pe
  return pe


def chunk_layout(pe, head_dim: int, seq_len: int | None = None) -> ChunkLayout:
  """The chunks of a head of ``head_dim`` under encoding ``pe``, as the encoding declares them
  (``seq_len``: for length-dependent RoPE scalings; default their unscaled-length value).

  Rotary encodings use their own layout; a NeoX-style ``partial`` encoding chunks its rotary
  slice with its own pairing and the remaining dims half-style after it. Encodings with no
  rotation (NoPE, bias kinds, unknown callables) use Gemma's half pairing, so their chunks line
  up with RoPE's."""
  if head_dim % 2:
    raise positional.ConfigError(f'model.head_dim={head_dim} must be even (chunks pair dims)')
  enc = pe_interface.as_encoding(base_encoding(pe))
  inv = enc.inv_freq(seq_len)
  freqs_C = np.zeros(head_dim // 2, np.float64)
  if inv is not None and np.size(inv):
    freqs_C[:] = np.asarray(inv, np.float64)
  return ChunkLayout(np.asarray(enc.chunk_dims(head_dim)), freqs_C, declared=inv is not None)


def chunk_norms(x_XH: np.ndarray, layout: ChunkLayout) -> np.ndarray:
  """2-norm of every chunk: ``[..., head_dim] -> [..., num_chunks]``."""
  a = x_XH[..., layout.dims_C2[:, 0]]
  b = x_XH[..., layout.dims_C2[:, 1]]
  return np.sqrt(np.square(a) + np.square(b))


def rotate(x_XH: np.ndarray, positions_X: np.ndarray, layout: ChunkLayout) -> np.ndarray:
  """Float64 reference rotation of ``x`` at ``positions`` (broadcast over the last axis):
  chunk ``c`` turns by ``position * freqs_C[c]``. Used by the theory checks, which need
  distances far beyond float32 angle precision."""
  x = np.asarray(x_XH, np.float64)
  angle_XC = np.asarray(positions_X, np.float64)[..., None] * layout.freqs_C
  cos, sin = np.cos(angle_XC), np.sin(angle_XC)
  i, j = layout.dims_C2[:, 0], layout.dims_C2[:, 1]
  out = np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, angle_XC.shape[:-1] +
                                                        x.shape[-1:])))
  a, b = out[..., i].copy(), out[..., j].copy()
  out[..., i] = a * cos - b * sin
  out[..., j] = b * cos + a * sin
  return out
