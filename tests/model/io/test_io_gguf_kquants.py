"""K-quantised GGUF import. First, the K-quant encoder of the fixture generator
(scripts/gguf_kquants.py) writes ggml's byte layout: what it encodes, gguf-py's own decoder
(``gguf.quants.dequantize``, the call ropex imports with, independent of the encoder) gives back
within each type's bound, derived from the input alone.

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

Then the committed K-quantised files (tests/fixtures/gguf/qwen3.Q4_K/Q5_K/Q6_K.gguf, written by
scripts/make_gguf_fixtures.py with gguf's writer from the qwen3 HF fixture as ``llama-quantize
--pure`` would): ropex imports every tensor within its type's bound of the checkpoint, the K types
really present, and transformers' logits within a measured margin.
"""

import os

import gguf
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import repo_scripts
from ropex import model as model_lib
from ropex.model import io
from ropex.model.io import gguf as gguf_io

kquants = repo_scripts.load('gguf_kquants')

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


# ---- the committed K-quantised fixtures ----------------------------------------------------------

FIXTURES = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures')
HF_QWEN3 = os.path.join(FIXTURES, 'hf', 'qwen3')
FALLBACK = {'Q4_K': 'Q5_0', 'Q5_K': 'Q5_1', 'Q6_K': 'Q8_0'}   # llama.cpp, rows not of 256 k


def _block_bound(x, quant):
  """The fallback types' bound per 32-value block (largest magnitude a, min lo, range r; float16
  d and min rounded to nearest, 2^-11): Q8_0 and Q5_0 as tests/model/io/test_io_gguf.py; Q5_1
  stores d = r/31 and lo: half a step plus the float16 rounding of lo and of d times 31."""
  blocks = np.asarray(x, np.float64).reshape(-1, 32)
  a = np.abs(blocks).max(-1, keepdims=True)
  lo, r = blocks.min(-1, keepdims=True), np.ptp(blocks, -1, keepdims=True)
  b = {'Q8_0': a * (0.5 + 127 * 2 ** -11) / 127, 'Q5_0': a / 16 * (1 + 2 ** -9),
       'Q5_1': r / 62 + (np.abs(lo) + r) * 2 ** -11 + 2 ** -24}[quant]
  return np.broadcast_to(b, blocks.shape).reshape(np.shape(x))


def _widened(weights, width=256):
  """The checkpoint as the generator widens its MLP for the K copies (96 -> 256 units, same
  function): unit k repeats gate row / down column k mod 96; up rows of the new units are 0."""
  out = dict(weights)
  for name, w in weights.items():
    units = np.arange(width) % 96
    if name.endswith('gate_proj.weight'):
      out[name] = w[units]
    elif name.endswith('up_proj.weight'):
      out[name] = np.where((np.arange(width) < 96)[:, None], w[units], 0)
    elif name.endswith('down_proj.weight'):
      out[name] = w[:, units]
  return out


@pytest.mark.parametrize('quant', TYPES)
def test_k_quantised_file_holds_the_checkpoint_within_each_types_bound(quant):
  reader = gguf_io.Reader(os.path.join(FIXTURES, 'gguf', f'qwen3.{quant}.gguf'))
  config = gguf_io.hf_config(reader)
  source = gguf_io.TensorSource(reader, config)
  float_weights = _widened(load_file(os.path.join(HF_QWEN3, 'model.safetensors')))
  gguf_names = gguf_io.hf_to_gguf_names(gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN3, 2), 2)
  types = {}
  for hf_name in source.files:
    w, t = float_weights[hf_name], reader.tensors[gguf_names[hf_name]].tensor_type.name
    types[hf_name] = t
    if w.ndim == 1:
      assert t == 'F32', hf_name
      np.testing.assert_array_equal(source.get(hf_name), w)
      continue
    assert t == (quant if w.shape[1] % 256 == 0 else FALLBACK[quant]), (hf_name, t)
    err = np.abs(source.get(hf_name) - w)
    b = bound(w, quant) if t == quant else _block_bound(w, t)
    assert (err <= b).all(), (hf_name, t)
  k_quantised = sorted(n for n, t in types.items() if t == quant)
  assert k_quantised == [f'model.layers.{i}.mlp.down_proj.weight' for i in range(2)]
  assert reader.quantization() == f'{FALLBACK[quant]}+F32+{quant}'
  assert config['intermediate_size'] == 256
  # the new units are silent: their up rows decode to exactly 0 (0 is exact in every type)
  assert not source.get('model.layers.0.mlp.up_proj.weight')[96:].any()


@pytest.mark.parametrize('quant, margin', [('Q4_K', 2.5), ('Q5_K', 2.0), ('Q6_K', 0.3)])
def test_k_quantised_import_gives_transformers_logits_within_a_margin(quant, margin):
  """Measured, not derived (as Q8_0 in test_io_gguf.py): these files move the tiny random
  model's logits (|logits| up to 5.6) by 1.84 (Q4_K, with Q5_0 elsewhere), 1.51 (Q5_K, Q5_1
  elsewhere), 0.22 (Q6_K, Q8_0 elsewhere) at most; the per-tensor bounds above are the proof.
  The run record names the mix, K type included."""
  imported = io.load_model(os.path.join(FIXTURES, 'gguf', f'qwen3.{quant}.gguf'))
  golden = np.load(os.path.join(HF_QWEN3, 'golden.npz'))
  logits = np.asarray(model_lib.Transformer(imported.cfg).apply(
      {'params': imported.params}, jnp.asarray(golden['input_ids'])))
  assert np.abs(logits - golden['logits']).max() < margin
  assert imported.source['quantization'] == f'{FALLBACK[quant]}+F32+{quant}'


def test_f16_and_bf16_tensors_import_as_their_rounding(tmp_path):
  """The two float types of the issue's list besides F32: a file with an F16 and a BF16 tensor
  (gguf's writer; BF16 bytes from gguf's quantiser) reads back as the float32 weights rounded to
  float16 / bfloat16 (numpy's and JAX's casts), exactly, in [out, in] order."""
  w = np.random.default_rng(7).normal(size=(48, 64)).astype(np.float32) * 3
  path = str(tmp_path / 'floats.gguf')
  writer = gguf.GGUFWriter(path, 'qwen3')
  writer.add_tensor('half.weight', w.astype(np.float16))
  writer.add_tensor('brain.weight', gguf.quants.quantize(w, gguf.GGMLQuantizationType.BF16),
                    raw_dtype=gguf.GGMLQuantizationType.BF16)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  reader = gguf_io.Reader(path)
  assert reader.quantization() in ('F16+BF16', 'BF16+F16')
  np.testing.assert_array_equal(reader.tensor('half.weight'),
                                w.astype(np.float16).astype(np.float32))
  np.testing.assert_array_equal(reader.tensor('brain.weight'),
                                np.asarray(jnp.asarray(w).astype(jnp.bfloat16), np.float32))
  assert not np.array_equal(reader.tensor('brain.weight'), reader.tensor('half.weight'))
