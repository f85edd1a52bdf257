"""Chunk layouts: the one map from an encoding to (dims, frequency) per chunk."""
import jax.numpy as jnp
import numpy as np
import pytest

from ropex.model import positional
from ropex.analysis import ablation, chunks
from ropex.model.config import ModelConfig, model_block


def pe_of(kind, head_dim, **fields):
  return positional.from_config(dict(kind=kind, **fields), head_dim)


def test_half_layout_pairs_k_with_k_plus_half_and_rope_frequencies():
  layout = chunks.chunk_layout(pe_of('rope', 8, max_wavelength=100.0), 8)
  np.testing.assert_array_equal(layout.dims_C2, [[0, 4], [1, 5], [2, 6], [3, 7]])
  np.testing.assert_allclose(layout.freqs_C, [100.0 ** (-2 * k / 8) for k in range(4)])
  assert layout.freqs_C[0] == 1.0 and layout.rotated_C.all()


def test_interleaved_layout_pairs_neighbours():
  layout = chunks.chunk_layout(pe_of('rope', 8, layout='interleaved'), 8)
  np.testing.assert_array_equal(layout.dims_C2, [[0, 1], [2, 3], [4, 5], [6, 7]])


def test_prope_keeps_pairing_and_zeroes_the_lowest_frequencies():
  layout = chunks.chunk_layout(pe_of('prope', 256, fraction=0.75), 256)
  assert layout.rotated_C.tolist() == [True] * 96 + [False] * 32
  np.testing.assert_array_equal(layout.dims_C2[:, 0], np.arange(128))
  np.testing.assert_array_equal(layout.dims_C2[:, 1], np.arange(128, 256))
  np.testing.assert_allclose(layout.freqs_C[:96], 10_000.0 ** (-2 * np.arange(96) / 256))
  # Highest first, unrotated last.
  np.testing.assert_array_equal(layout.by_frequency(), np.arange(128))


def test_reversed_orders_unrotated_highest_dims_last():
  layout = chunks.chunk_layout(pe_of('prope_reversed', 16, fraction=0.5), 16)
  assert layout.rotated_C.tolist() == [False] * 4 + [True] * 4
  np.testing.assert_array_equal(layout.by_frequency(), [4, 5, 6, 7, 0, 1, 2, 3])


def test_partial_chunks_its_slice_then_the_rest():
  layout = chunks.chunk_layout(pe_of('partial', 16, rotary_fraction=0.5), 16)
  np.testing.assert_array_equal(layout.dims_C2,
                                [[0, 4], [1, 5], [2, 6], [3, 7], [8, 12], [9, 13], [10, 14],
                                 [11, 15]])
  np.testing.assert_allclose(layout.freqs_C[:4], 10_000.0 ** (-2 * np.arange(4) / 8))
  assert not layout.freqs_C[4:].any()


def test_nope_uses_half_pairs_and_no_frequency():
  layout = chunks.chunk_layout(pe_of('none', 8), 8)
  np.testing.assert_array_equal(layout.dims_C2, [[0, 4], [1, 5], [2, 6], [3, 7]])
  assert not layout.freqs_C.any()


@pytest.mark.parametrize('kind, fields', [
    ('rope', {}), ('rope', {'layout': 'interleaved'}), ('prope', {'fraction': 0.5}),
    ('prope_reversed', {'fraction': 0.75}), ('partial', {'rotary_fraction': 0.5}),
    ('partial', {'rotary_fraction': 0.5, 'layout': 'interleaved'}), ('none', {}),
])
def test_layout_reproduces_the_registry_rotation_and_norms_are_invariant(kind, fields):
  head_dim = 16
  pe = pe_of(kind, head_dim, **fields)
  layout = chunks.chunk_layout(pe, head_dim)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((1, 12, 3, head_dim)).astype(np.float32)
  positions = np.asarray([[0, 1, 2, 3, 7, 11, 20, 50, 100, 333, 1000, 4097]])
  expected = np.asarray(pe(jnp.asarray(x), jnp.asarray(positions)))
  ours = chunks.rotate(x, positions[..., None], layout)
  np.testing.assert_allclose(ours, expected, atol=2e-4)
  np.testing.assert_allclose(chunks.chunk_norms(expected, layout), chunks.chunk_norms(x, layout),
                             rtol=1e-5, atol=1e-6)
  # Each dim belongs to exactly one chunk.
  np.testing.assert_array_equal(np.sort(layout.dims_C2.reshape(-1)), np.arange(head_dim))


def test_chunk_norms_against_explicit_formula():
  x = np.arange(8.0)
  layout = chunks.chunk_layout(pe_of('rope', 8), 8)
  np.testing.assert_allclose(chunks.chunk_norms(x, layout),
                             [np.hypot(x[k], x[k + 4]) for k in range(4)])


def test_wrapped_encoding_keeps_its_layout():
  cfg = ModelConfig.from_config(model_block('tiny', head_dim=16, num_heads=2, num_kv_heads=1))
  base = pe_of('prope', 16, fraction=0.5)
  wrapped = ablation.ZeroChunks.build(base, cfg, [0], [1])
  a, b = chunks.chunk_layout(wrapped, 16), chunks.chunk_layout(base, 16)
  np.testing.assert_array_equal(a.dims_C2, b.dims_C2)
  np.testing.assert_array_equal(a.freqs_C, b.freqs_C)
