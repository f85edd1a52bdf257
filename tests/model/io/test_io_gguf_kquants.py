"""The K-quant encoder of the fixture generator (scripts/gguf_kquants.py) writes ggml's byte layout:
what it encodes, gguf-py's own decoder (``gguf.quants.dequantize``, the call ropex imports with,
independent of the encoder) gives back within each type's bound, derived from the input alone.

Bounds, per 256-value super-block (fp16 rounded up: at most a factor 1 + 2^-10 above, plus 2^-24
in float16's subnormal range; U(v) = v (1 + 2^-10) + 2^-24 below):

* Q4_K / Q5_K (n = 15 / 31 levels above 0), per 32-value sub-block j with max ``hi_j`` and
  ``lo_j = min(min x_j, 0)``: the stored offset dmin * m_j covers -lo_j and overshoots by at most
  dmin <= Dm = U(max_j(-lo_j) / 63); the step d * sc_j covers the rest, (hi_j + offset) / n <=
  (hi_j - lo_j + Dm) / n =: s_j, and overshoots by at most d <= D = U(max_j s_j / 63). No level
  clips, so |error| <= (s_j + D) / 2.
* Q6_K, per 16-value sub-block with largest magnitude a_i: the step d * sc_i maps the signed
  extreme to level -32 and is at most a_i / 32 + D, D = U(max_i a_i / 32 / 127); the opposite
  side may clip at +31 by one step: |error| <= a_i / 32 + D.

Plus float32 rounding of the decoder's products (2^-22 of the block's magnitude).
A layout mistake breaks these bounds: test_a_wrong_layout_breaks_the_bound swaps the packing of
the 6-bit scales and mins (Q4_K/Q5_K), the two nibble halves of ``ql`` (Q6_K), and, for Q5_K, the
order of the fifth-bit planes, and requires the bound to fail on the same data.
"""

import importlib.util
import os

import gguf
import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'scripts', 'gguf_kquants.py')
_SPEC = importlib.util.spec_from_file_location('gguf_kquants', _PATH)
kquants = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(kquants)

TYPES = ('Q4_K', 'Q5_K', 'Q6_K')


def _up(v):
  return v * (1 + 2.0 ** -10) + 2.0 ** -24


def bound(x, quant):
  """Largest |decoded - x| the type allows, per value of ``x`` [..., 256 k] (see the docstring)."""
  x = np.asarray(x, np.float64)
  if quant == 'Q6_K':
    a = np.abs(x.reshape(-1, 16, 16)).max(-1)                     # [super-blocks, 16]
    b = a / 32 + _up(a.max(-1, keepdims=True) / 32 / 127)
    size = 16
  else:
    n = 15 if quant == 'Q4_K' else 31
    sub = x.reshape(-1, 8, 32)
    lo, hi = np.minimum(sub.min(-1), 0), sub.max(-1)
    s = (hi - lo + _up((-lo).max(-1, keepdims=True) / 63)) / n
    b = (s + _up(s.max(-1, keepdims=True) / 63)) / 2
    size = 32
  slack = 2.0 ** -22 * np.abs(x.reshape(-1, 256)).max(-1, keepdims=True)
  return (np.repeat(b, size, -1) + slack).reshape(x.shape)


def _roundtrip(x, quant):
  raw = kquants.quantize(x, quant)
  return np.asarray(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[quant]), np.float64)


def matrices():
  """Random and structured [rows, 512] float32 matrices (two super-blocks per row)."""
  rng = np.random.default_rng(19)
  normal = rng.normal(size=(64, 512)) / 8
  ramp = np.tile(np.linspace(-1, 3, 512), (4, 1))
  one_sign = np.abs(rng.normal(size=(8, 512)))                   # min offset 0 everywhere
  scales = np.repeat(10.0 ** rng.uniform(-4, 1, size=(8, 32)), 16, -1)   # sub-blocks 1e-4..10
  mixed = rng.normal(size=(8, 512)) * scales
  outlier = rng.normal(size=(4, 512)) / 100
  outlier[:, ::97] = 5.0
  special = np.stack([np.zeros(512), np.full(512, 0.3), np.full(512, -0.3),
                      np.r_[np.zeros(256), rng.normal(size=256)], rng.normal(size=512) * 1e-7])
  return {'normal': normal, 'ramp': ramp, 'positive': one_sign, 'negative': -one_sign,
          'mixed scales': mixed, 'outliers': outlier, 'special rows': special}


@pytest.mark.parametrize('quant', TYPES)
def test_gguf_decodes_the_encoding_within_the_bound(quant):
  for name, x in matrices().items():
    x = x.astype(np.float32)
    raw = kquants.quantize(x, quant)
    assert raw.dtype == np.uint8 and raw.shape == (x.shape[0], 2 * kquants.BLOCK_BYTES[quant])
    assert gguf.quants.quant_shape_from_byte_shape(raw.shape, gguf.GGMLQuantizationType[quant]) \
        == x.shape
    err = np.abs(_roundtrip(x, quant) - x)
    assert (err <= bound(x, quant)).all(), (name, float((err - bound(x, quant)).max()))
  # the bound is not vacuous: the normal rows use most of it, and more bits give less error
  x = matrices()['normal'].astype(np.float32)
  assert np.abs(_roundtrip(x, quant) - x).max() > 0.4 * bound(x, quant).max()


def test_more_bits_less_error():
  x = matrices()['normal'].astype(np.float32)
  errors = [np.abs(_roundtrip(x, q) - x).mean() for q in TYPES]
  assert errors[0] > 1.7 * errors[1] and errors[1] > 1.7 * errors[2], errors


def test_rows_must_be_whole_super_blocks():
  with pytest.raises(ValueError, match='multiple of 256'):
    kquants.quantize(np.zeros((2, 96), np.float32), 'Q4_K')


def _swap(raw, block_bytes, a, b, n):
  """Byte ranges [a, a+n) and [b, b+n) of every block exchanged."""
  blocks = raw.reshape(-1, block_bytes).copy()
  blocks[:, a:a + n], blocks[:, b:b + n] = blocks[:, b:b + n].copy(), blocks[:, a:a + n].copy()
  return blocks.reshape(raw.shape)


WRONG_LAYOUTS = {   # byte ranges a, b of length n swapped in each block
    'Q4_K scales/mins of sub-blocks 0-3 swapped': ('Q4_K', 4, 8, 4),
    'Q5_K scales/mins of sub-blocks 0-3 swapped': ('Q5_K', 4, 8, 4),
    'Q5_K fifth bits of the first/second 16 columns swapped': ('Q5_K', 16, 32, 16),
    'Q6_K ql of the two halves swapped': ('Q6_K', 0, 64, 64),
    'Q6_K qh of the two halves swapped': ('Q6_K', 128, 160, 32),
}


@pytest.mark.parametrize('case', sorted(WRONG_LAYOUTS))
def test_a_wrong_layout_breaks_the_bound(case):
  quant, a, b, n = WRONG_LAYOUTS[case]
  x = matrices()['mixed scales'].astype(np.float32)
  raw = _swap(kquants.quantize(x, quant), kquants.BLOCK_BYTES[quant], a, b, n)
  wrong = np.asarray(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[quant]), np.float64)
  assert (np.abs(wrong - x) > bound(x, quant)).any()
