"""ropex's import of every released-model family against LIVE transformers logits (issue #18).

Opt-in (marker ``hf``, excluded from ``make test`` by setup.cfg's addopts): needs the ``hf`` extra
(torch, transformers>=5,<6, tokenizers) next to ropex's own packages:

    make test-hf        # = python -m pytest -q -m hf tests/hf_live

Per family (tests/fixtures/hf/<family>, made by scripts/make_hf_fixtures.py):
- the committed goldens are transformers' own: the model rebuilt in memory from the same seed and
  config gives the committed float32 logits (and bfloat16 logits) again, the committed
  safetensors hold exactly that model's tensors, and config.hub.json (the transformers 4.x form
  of config.json that the family's Hub releases carry) describes the same model;
- ropex's import (``ropex.model.io.load_model``) gives transformers' logits to float32 accuracy
  and the same greedy tokens, in bfloat16 (``dtype='bfloat16'``) logits within 3x transformers'
  own bfloat16 error, also from config.hub.json, and its tokenizer the same ids as transformers'
  tokenizer.

torch and transformers are imported inside the ``hf`` fixture (never at module import), so the
fast suite can collect this file without them; a missing package fails here with one line.
"""
import copy
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.hf

REPO = Path(__file__).resolve().parents[2]
HF_ROOT = REPO / 'tests' / 'fixtures' / 'hf'
SUMMARY = json.loads((HF_ROOT / 'fixtures.json').read_text())
FAMILIES = sorted(SUMMARY['families'])
# Checkpoint directory -> the family whose model (and goldens) it holds.
CHECKPOINTS = {**{f: f for f in FAMILIES}, 'qwen2_sharded': 'qwen2'}

# float32 ropex vs float32 transformers: summation order only. The bound is 1e-4, or 5x how far
# transformers' own float32 logits lie from its float64 ones where a fixture is less well
# conditioned (Gemma 4: 2.7e-5, from scale-1 attention on QK-normed heads).
F32_ATOL_FLOOR, F32_CONDITIONING_FACTOR = 1e-4, 5
# ropex in bfloat16 vs the float32 goldens: at most 3x transformers' own bfloat16 error.
BF16_FACTOR = 3
# Rebuilding the goldens on another CPU / torch build: float32 kernels may reorder sums; the
# bfloat16 run may round one more logit the other way (1 ulp of bfloat16 at |x| < 16 is 0.0625).
REBUILD_F32_ATOL = 1e-5
REBUILD_BF16_ATOL = 0.0625


@pytest.fixture(scope='module')
def hf():
  """The generator module (build_model, logits_of, ...), with torch and transformers loaded."""
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    import transformers  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    pytest.fail(f'tests/hf_live needs the hf extra (pip install -e ".[hf]"): {e}', pytrace=False)
  spec = importlib.util.spec_from_file_location('make_hf_fixtures',
                                                REPO / 'scripts' / 'make_hf_fixtures.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def golden(family):
  return np.load(HF_ROOT / family / 'golden.npz')


@pytest.fixture(scope='module')
def live_logits(hf):
  """family -> transformers' float32 logits on the committed input ids, computed now."""
  return {f: hf.logits_of(hf.build_model(f), golden(f)['input_ids']) for f in FAMILIES}


@pytest.mark.parametrize('family', FAMILIES)
def test_goldens_are_transformers_logits(hf, live_logits, family):
  g = golden(family)
  np.testing.assert_allclose(live_logits[family], g['logits'], rtol=0, atol=REBUILD_F32_ATOL)
  np.testing.assert_array_equal(live_logits[family].argmax(-1), g['greedy'])
  import torch  # pylint: disable=g-import-not-at-top
  bf16 = hf.logits_of(copy.deepcopy(hf.build_model(family)).to(torch.bfloat16), g['input_ids'])
  np.testing.assert_allclose(bf16, g['logits_bf16'].astype(np.float32), rtol=0,
                             atol=REBUILD_BF16_ATOL)


@pytest.mark.parametrize('directory', sorted(CHECKPOINTS))
def test_committed_checkpoint_is_the_seeded_model(hf, directory):
  import transformers  # pylint: disable=g-import-not-at-top
  model = hf.build_model(CHECKPOINTS[directory])
  loaded = transformers.AutoModelForCausalLM.from_pretrained(HF_ROOT / directory)
  expected, got = model.state_dict(), loaded.state_dict()
  assert expected.keys() == got.keys()
  for name, tensor in expected.items():
    np.testing.assert_array_equal(got[name].numpy(), tensor.numpy(), err_msg=name)


@pytest.mark.parametrize('directory', sorted(CHECKPOINTS))
def test_transformers_tokenizer_gives_the_committed_ids(hf, directory):
  import transformers  # pylint: disable=g-import-not-at-top
  tokenizer = transformers.AutoTokenizer.from_pretrained(HF_ROOT / directory)
  ids = tokenizer(SUMMARY['sentence'], add_special_tokens=False)['input_ids']
  row0 = golden(CHECKPOINTS[directory])['input_ids'][0]
  # Row 0 is the sentence after BOS (Llama, Gemma) or from its first token (Qwen: no BOS).
  start = 0 if directory.startswith('qwen') else 1
  np.testing.assert_array_equal(row0[start:], ids[:len(row0) - start])


V4_FAMILIES = sorted(set(FAMILIES) - {'gemma4'})


@pytest.mark.parametrize('family', V4_FAMILIES)
def test_transformers_reads_the_hub_config_alike(hf, family):
  """config.hub.json (the transformers 4.x form the Hub's releases carry) is the same model."""
  import transformers  # pylint: disable=g-import-not-at-top
  class_name = hf.FAMILIES[family][0]
  config = getattr(transformers, class_name).from_json_file(HF_ROOT / family / 'config.hub.json')
  model = transformers.AutoModelForCausalLM.from_pretrained(
      HF_ROOT / family, config=config, attn_implementation='eager').eval()
  g = golden(family)
  np.testing.assert_allclose(hf.logits_of(model, g['input_ids']), g['logits'], rtol=0,
                             atol=REBUILD_F32_ATOL)


@pytest.mark.parametrize('family', V4_FAMILIES)
def test_ropex_reads_the_hub_config_alike(live_logits, family, tmp_path):
  """ropex imports the checkpoint with config.hub.json as its config.json to the same logits."""
  for f in (HF_ROOT / family).iterdir():
    if f.name not in ('config.json', 'config.hub.json', 'golden.npz'):
      (tmp_path / f.name).symlink_to(f)
  (tmp_path / 'config.json').write_text((HF_ROOT / family / 'config.hub.json').read_text())
  _, logits = ropex_logits(tmp_path, golden(family)['input_ids'])
  atol = max(F32_ATOL_FLOOR, F32_CONDITIONING_FACTOR *
             SUMMARY['families'][family]['f32_vs_f64_max_abs_diff'])
  np.testing.assert_allclose(logits, live_logits[family], rtol=0, atol=atol)


def ropex_logits(path, input_ids, **load_kwargs):
  """ropex's import of a checkpoint directory and its logits (as float32 numpy)."""
  from ropex.model import config as config_lib  # pylint: disable=g-import-not-at-top
  from ropex.model import decoder  # pylint: disable=g-import-not-at-top
  from ropex.model.io import load_model  # pylint: disable=g-import-not-at-top
  imported = load_model(str(path), **load_kwargs)
  model = decoder.Transformer(config_lib.ModelConfig.from_config(imported.model))
  logits = model.apply({'params': imported.params}, np.asarray(input_ids, np.int32))
  return imported, np.asarray(logits, np.float32)


@pytest.mark.parametrize('directory', sorted(CHECKPOINTS))
def test_ropex_import_matches_transformers(live_logits, directory):
  family = CHECKPOINTS[directory]
  input_ids = golden(family)['input_ids']
  _, logits = ropex_logits(HF_ROOT / directory, input_ids)
  expected = live_logits[family]
  assert logits.shape == expected.shape
  atol = max(F32_ATOL_FLOOR, F32_CONDITIONING_FACTOR *
             SUMMARY['families'][family]['f32_vs_f64_max_abs_diff'])
  np.testing.assert_allclose(logits, expected, rtol=0, atol=atol)
  np.testing.assert_array_equal(logits.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize('family', FAMILIES)
def test_ropex_bfloat16_within_bound(family):
  g = golden(family)
  _, logits = ropex_logits(HF_ROOT / family, g['input_ids'], dtype='bfloat16')
  bound = BF16_FACTOR * SUMMARY['families'][family]['bf16_max_abs_diff']
  assert np.abs(logits - g['logits']).max() <= bound


@pytest.mark.parametrize('directory', sorted(CHECKPOINTS))
def test_ropex_tokenizer_matches_transformers(hf, directory):
  import transformers  # pylint: disable=g-import-not-at-top
  from ropex.model.io import load_model  # pylint: disable=g-import-not-at-top
  imported = load_model(str(HF_ROOT / directory))
  expected = transformers.AutoTokenizer.from_pretrained(HF_ROOT / directory)(
      SUMMARY['sentence'], add_special_tokens=False)['input_ids']
  assert list(imported.tokenizer.encode(SUMMARY['sentence'])) == list(expected)
