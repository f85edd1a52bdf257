"""The paper's analyses on imported released models (issue #18, item 4): every layer is
measured with its own encoding — local θ 10k against global θ 1M (Gemma 3, with linear x8 on
the global layers only), Gemma 4's global layers with their own head dim rotating only their top
25% of chunks — checked against frequencies computed here from the checkpoint's ``config.json``
with RoPE's formula, never from ropex's own tables."""
import json
import os

import numpy as np
import pytest

from ropex.analysis import pipeline
from ropex.analysis.prompts import Prompts
from ropex.model import io
from ropex.model.config import ModelConfig

HF = os.path.join(os.path.dirname(__file__), '..', 'fixtures', 'hf')


def _expected_freqs(family: str) -> list[np.ndarray]:
  """Per layer: RoPE's ``theta^(-2k/d)`` over the layer's head dim d, divided by a linear
  factor, zero beyond the kept ``int(p * d/2)`` chunks of a proportional layer."""
  with open(os.path.join(HF, family, 'config.json')) as f:
    c = json.load(f)
  out = []
  for kind in c['layer_types']:
    rope = c['rope_parameters'][kind]
    d = c['global_head_dim'] if kind == 'full_attention' and 'global_head_dim' in c else (
        c['head_dim'])
    freqs = float(rope['rope_theta']) ** (-2.0 * np.arange(d // 2) / d)
    if rope.get('rope_type') == 'linear':
      freqs = freqs / float(rope['factor'])
    if rope.get('rope_type') == 'proportional':
      freqs[int(rope['partial_rotary_factor'] * d / 2):] = 0.0
    out.append(freqs)
  return out


@pytest.mark.parametrize('family', ['gemma3', 'gemma4'])
def test_frequency_usage_uses_each_layers_own_theta_and_rotated_chunks(family):
  imported = io.load_model(os.path.join(HF, family))
  cfg = ModelConfig.from_config(imported.model)
  golden = np.load(os.path.join(HF, family, 'golden.npz'))
  ids = np.asarray(golden['input_ids'][:, :16], np.int32)
  prompts = Prompts(['a', 'b'], ids, np.full(len(ids), ids.shape[1]))
  result = pipeline.analyze(cfg, imported.params, prompts, top_heads=1, write=False)
  usage = result.usage
  expected = _expected_freqs(family)
  assert len(expected) == cfg.num_layers
  for layer, want in enumerate(expected):
    got = usage.freqs_LC[layer, :len(want)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    assert np.isnan(usage.freqs_LC[layer, len(want):]).all()   # a narrower layer: padding
    q_NC = usage.q_LNC[layer, :, :len(want)]
    assert np.isfinite(q_NC).all() and (q_NC > 0).all()          # every chunk was measured
  assert {len(w) for w in expected} == set(usage.chunks_L.tolist())
  assert result.ablations and np.isfinite(result.loss)
