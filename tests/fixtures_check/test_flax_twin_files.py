"""The official-layout Gemma Flax twins (tests/fixtures/flax, scripts/make_flax_fixtures.py) are
complete, in the gemma library's FLAT orbax layout, and give the HF twins' golden logits.

The logits check restores the committed orbax files and runs them through the numpy forward pass
written from the gemma library's modules (scripts/make_flax_fixtures.py ``library_forward``); the
goldens are transformers' (tests/fixtures/hf). It fails if a twin's tensors are transposed, mixed
up between layers, or described wrongly by its twin.json.
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors.numpy

FIXTURES = Path(__file__).resolve().parents[1] / 'fixtures'
SCRIPT = Path(__file__).resolve().parents[2] / 'scripts' / 'make_flax_fixtures.py'
TWINS = ('gemma2', 'gemma3')


def load_script():
  spec = importlib.util.spec_from_file_location('make_flax_fixtures', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def restore(family):
  path = (FIXTURES / 'flax' / family / 'tiny').resolve()
  checkpointer = ocp.StandardCheckpointer()
  abstract = checkpointer.metadata(path).item_metadata.tree
  return checkpointer.restore(path, numpy_target(abstract))


def numpy_target(abstract):
  """A restore target of numpy arrays with the stored shapes and dtypes."""
  return {k: {p: np.zeros(m.shape, m.dtype) for p, m in v.items()} for k, v in abstract.items()}


def expected_layout(lc):
  """Module path -> {param: shape}: the official FLAT layout for a gemma library config."""
  v, d, f = lc['num_embed'], lc['embed_dim'], lc['hidden_dim']
  n, k, h = lc['num_heads'], lc['num_kv_heads'], lc['head_dim']
  layout = {'transformer/embedder': {'input_embedding': (v, d)},
            'transformer/final_norm': {'scale': (d,)}}
  for i in range(len(lc['attention_types'])):
    p = f'transformer/layer_{i}/'
    layout.update({p + name: {'scale': (d,)} for name in (
        'pre_attention_norm', 'post_attention_norm', 'pre_ffw_norm', 'post_ffw_norm')})
    layout.update({p + 'attn/q_einsum': {'w': (n, d, h)}, p + 'attn/kv_einsum': {'w': (2, k, d, h)},
                   p + 'attn/attn_vec_einsum': {'w': (n, h, d)},
                   p + 'mlp/gating_einsum': {'w': (2, f, d) if lc['transpose_gating_einsum']
                                             else (2, d, f)},
                   p + 'mlp/linear': {'w': (f, d)}})
    if lc['use_qk_norm']:
      layout.update({p + 'attn/_query_norm': {'scale': (h,)},
                     p + 'attn/_key_norm': {'scale': (h,)}})
  return layout


@pytest.mark.parametrize('family', TWINS)
def test_twin_has_the_official_flat_layout(family):
  lc = json.loads((FIXTURES / 'flax' / family / 'twin.json').read_text())['gemma_library_config']
  flat = restore(family)
  assert {k: {p: a.shape for p, a in v.items()} for k, v in flat.items()} == expected_layout(lc)
  assert all(a.dtype == np.float32 for v in flat.values() for a in v.values())
  hf_config = json.loads((FIXTURES / 'hf' / family / 'config.json').read_text())
  assert (lc['num_embed'], lc['embed_dim'], lc['hidden_dim']) == (
      hf_config['vocab_size'], hf_config['hidden_size'], hf_config['intermediate_size'])
  assert (FIXTURES / 'flax' / family / 'tokenizer.model').read_bytes() == (
      FIXTURES / 'hf' / family / 'tokenizer.model').read_bytes()


@pytest.mark.parametrize('family', TWINS)
def test_twin_gives_the_hf_goldens_with_library_semantics(family):
  script = load_script()
  lc = json.loads((FIXTURES / 'flax' / family / 'twin.json').read_text())['gemma_library_config']
  flat = restore(family)
  nested = {}  # FLAT -> nested, as the library's param_remapper + nest_params
  for path, params in flat.items():
    parts = path.split('/')[1:]
    node = nested
    for key in parts[:-1]:
      node = node.setdefault(key, {})
    node[parts[-1]] = params['w'] if parts[:-1][-1:] == ['mlp'] else params
  golden = np.load(FIXTURES / 'hf' / family / 'golden.npz')
  logits = script.library_forward(nested, lc, golden['input_ids'])
  np.testing.assert_allclose(logits, golden['logits'], rtol=0, atol=1e-4)


@pytest.mark.parametrize('family', TWINS)
def test_twin_holds_the_hf_numbers(family):
  """Same float32 numbers as the HF checkpoint (each HF tensor appears, rearranged, once)."""
  flat = restore(family)
  hf = safetensors.numpy.load_file(FIXTURES / 'hf' / family / 'model.safetensors')
  twin_sorted = np.sort(np.concatenate([a.ravel() for v in flat.values() for a in v.values()]))
  hf_sorted = np.sort(np.concatenate([a.ravel() for a in hf.values()]))
  np.testing.assert_array_equal(twin_sorted, hf_sorted)
