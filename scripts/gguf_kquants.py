"""A small numpy encoder for llama.cpp's K-quants Q4_K, Q5_K and Q6_K (gguf-py 0.19 decodes them
but its ``gguf.quants.quantize`` raises NotImplementedError for them), used by
scripts/make_gguf_fixtures.py to write K-quantised test files. ropex itself only reads.

Byte layout: ggml's ``block_q4_K`` / ``block_q5_K`` / ``block_q6_K`` (ggml-common.h), QK_K = 256
values per super-block, little-endian:

* Q4_K (144 bytes): fp16 ``d``, fp16 ``dmin``, ``scales[12]`` (eight 6-bit scales and eight 6-bit
  mins of the 32-value sub-blocks), ``qs[128]``: byte ``32 c + l`` holds value ``64 c + l`` in its
  low nibble and ``64 c + 32 + l`` in its high nibble. Value = d * sc_j * q - dmin * m_j, q in
  0..15.
* Q5_K (176 bytes): as Q4_K with ``qh[32]`` between ``scales`` and ``qs``: bit j of ``qh[l]`` is the
  fifth bit of value ``32 j + l``; q in 0..31.
* Q6_K (210 bytes): ``ql[128]``, ``qh[64]``, int8 ``scales[16]`` (one per 16 values), fp16 ``d``.
  In each 128-value half h: ``ql[64 h + b]`` holds value ``b`` (low nibble) and ``64 + b`` (high);
  ``qh[32 h + l]`` bits 2k, 2k+1 are the top two bits of value ``32 k + l``. Value = d * sc_i *
  (q - 32), q in 0..63.
* The 6-bit scale packing of Q4_K/Q5_K (ggml's ``get_scale_min_k4``): bytes 0-3 hold sc_0..3 in
  their low 6 bits, bytes 4-7 m_0..3; for j = 4..7 byte 8 + (j-4) holds sc_j's low nibble and
  m_j's low nibble above it, and the top two bits of sc_j / m_j sit in bits 6-7 of byte j-4 / j.

Scale choice (simpler than ggml's iterative ``make_qkx2_quants`` search, same bytes layout): per
sub-block the min offset and scale are rounded UP so the sub-block's range is always covered
(no level clips except Q6_K's one-sided +32), and the super-block's fp16 ``d`` / ``dmin`` are
rounded up so no 6-bit (8-bit for Q6_K) sub-scale overflows. Error bounds: tests/model/io/
test_io_gguf_kquants.py.
"""

from __future__ import annotations

import numpy as np

QK_K = 256
BLOCK_BYTES = {'Q4_K': 144, 'Q5_K': 176, 'Q6_K': 210}
# llama.cpp (llama-quant.cpp): a tensor whose row length is not a multiple of QK_K gets this type
FALLBACK = {'Q4_K': 'Q5_0', 'Q5_K': 'Q5_1', 'Q6_K': 'Q8_0'}


def fp16_up(v: np.ndarray) -> np.ndarray:
  """The smallest float16 >= v (v >= 0, finite in float16)."""
  h = np.asarray(v, np.float64).astype(np.float16)
  if not np.isfinite(h).all():
    raise ValueError('K-quant scale overflows float16 (|weights| too large)')
  return np.where(h.astype(np.float64) < v, np.nextafter(h, np.float16(np.inf)), h)


def _ceil_ratio(a: np.ndarray, b: np.ndarray, top: int) -> np.ndarray:
  """ceil(a / b) clipped to [0, top]; 0 where b == 0."""
  safe = np.where(b > 0, b, 1.0)
  return np.clip(np.where(b > 0, np.ceil(a / safe), 0), 0, top)


def _asymmetric(x: np.ndarray, nmax: int):
  """Q4_K / Q5_K levels of super-blocks ``x`` [n, 8, 32]: fp16 d, dmin [n], 6-bit sc, m [n, 8],
  levels q [n, 8, 32] in 0..nmax."""
  lo = np.minimum(x.min(-1), 0.0)                    # ggml keeps the min offset <= 0
  dmin = fp16_up((-lo).max(-1) / 63)
  m = _ceil_ratio(-lo, dmin.astype(np.float64)[:, None], 63)
  offset = dmin.astype(np.float64)[:, None] * m      # >= -lo: the sub-block's min is covered
  step = (x.max(-1) + offset) / nmax                 # the scale the covered range needs
  d = fp16_up(step.max(-1) / 63)
  sc = _ceil_ratio(step, d.astype(np.float64)[:, None], 63)
  scale = d.astype(np.float64)[:, None] * sc         # >= step: the sub-block's max is covered
  safe = np.where(scale > 0, scale, 1.0)[..., None]
  q = np.where(scale[..., None] > 0, np.rint((x + offset[..., None]) / safe), 0)
  return d, dmin, sc.astype(np.uint8), m.astype(np.uint8), np.clip(q, 0, nmax).astype(np.uint8)


def _pack_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
  """Eight 6-bit scales and mins [n, 8] into ggml's 12 bytes [n, 12]."""
  return np.concatenate([sc[:, :4] | ((sc[:, 4:] >> 4) << 6),
                         m[:, :4] | ((m[:, 4:] >> 4) << 6),
                         (sc[:, 4:] & 0xF) | ((m[:, 4:] & 0xF) << 4)], axis=-1).astype(np.uint8)


def _nibbles(q: np.ndarray) -> np.ndarray:
  """Low 4 bits of [n, 8, 32] levels as ``qs[128]``: sub-block 2c low nibble, 2c+1 high."""
  q = (q & 0xF).reshape(-1, 4, 2, 32)
  return (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)


def _f16_bytes(v: np.ndarray) -> np.ndarray:
  return v.astype('<f2').reshape(-1, 1).view(np.uint8)


def q4_k(x: np.ndarray) -> np.ndarray:
  """Super-blocks [n, 256] -> ``block_q4_K`` bytes [n, 144]."""
  d, dmin, sc, m, q = _asymmetric(x.reshape(-1, 8, 32), 15)
  return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), _pack_scales(sc, m), _nibbles(q)], -1)


def q5_k(x: np.ndarray) -> np.ndarray:
  """Super-blocks [n, 256] -> ``block_q5_K`` bytes [n, 176]."""
  d, dmin, sc, m, q = _asymmetric(x.reshape(-1, 8, 32), 31)
  high = ((q >> 4) & 1) << np.arange(8, dtype=np.uint8)[None, :, None]   # bit j: sub-block j
  qh = np.bitwise_or.reduce(high, axis=1).astype(np.uint8)
  return np.concatenate([_f16_bytes(d), _f16_bytes(dmin), _pack_scales(sc, m), qh, _nibbles(q)],
                        -1)


def q6_k(x: np.ndarray) -> np.ndarray:
  """Super-blocks [n, 256] -> ``block_q6_K`` bytes [n, 210]."""
  x = x.reshape(-1, 16, 16)
  extreme = np.take_along_axis(x, np.abs(x).argmax(-1)[..., None], -1)[..., 0]
  step = -extreme / 32                               # the signed extreme maps to level -32
  d = fp16_up(np.abs(step).max(-1) / 127)
  sc = np.sign(step) * _ceil_ratio(np.abs(step), d.astype(np.float64)[:, None], 127)
  scale = d.astype(np.float64)[:, None] * sc
  safe = np.where(scale != 0, scale, 1.0)[..., None]
  level = np.where(scale[..., None] != 0, np.rint(x / safe), 0)
  q = (np.clip(level, -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)   # [half, k, l]
  ql = q.reshape(-1, 2, 2, 64)
  ql = ((ql[:, :, 0] & 0xF) | ((ql[:, :, 1] & 0xF) << 4)).reshape(-1, 128)
  qh = np.bitwise_or.reduce(((q >> 4) & 3) << (2 * np.arange(4, dtype=np.uint8))[None, None, :,
                                                                                    None], axis=2)
  return np.concatenate([ql, qh.reshape(-1, 64).astype(np.uint8),
                         sc.astype(np.int8).view(np.uint8), _f16_bytes(d)], -1)


ENCODERS = {'Q4_K': q4_k, 'Q5_K': q5_k, 'Q6_K': q6_k}


def quantize(value: np.ndarray, quant: str) -> np.ndarray:
  """``value`` [..., C] (C a multiple of 256) as ``quant`` bytes [..., C / 256 * block bytes], the
  shape ``gguf.GGUFWriter.add_tensor(..., raw_dtype=...)`` and ``gguf.quants.dequantize`` take."""
  value = np.asarray(value, np.float64)
  if value.shape[-1] % QK_K:
    raise ValueError(f'{quant} needs rows of a multiple of {QK_K} values, not {value.shape[-1]}')
  out = ENCODERS[quant](value.reshape(-1, QK_K))
  return out.reshape(*value.shape[:-1], value.shape[-1] // QK_K * BLOCK_BYTES[quant])
