"""ropex's export (ropex.export) loaded by LIVE transformers: AutoModelForCausalLM.from_pretrained of
the exported folder gives ropex's own logits (issue #19).

Opt-in (marker ``hf``, like test_hf_live.py): needs torch + transformers next to ropex. Each case
is exported by ropex (:func:`export_cases`, which also saves ropex's logits), then transformers
loads the folder. The two halves also run in separate environments:

    python tests/hf_live/test_export_live.py export DIR      # ropex's venv: folders + logits
    python tests/hf_live/test_export_live.py compare DIR     # torch + transformers venv

Cases: every HF fixture family but Gemma 4 (imported, then exported), and paper blocks made by
ropex (Gemma v1 with p-RoPE = rope type ``proportional``, with RoPE θ 500k, with YaRN).
"""
import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np

if __name__ != '__main__':   # the script halves run without pytest (e.g. in a torch-only venv)
  import pytest  # pylint: disable=g-import-not-at-top
  pytestmark = pytest.mark.hf

REPO = Path(__file__).resolve().parents[2]
HF_ROOT = REPO / 'tests' / 'fixtures' / 'hf'
FAMILIES = ('llama', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3')
ATOL = 1e-4   # float32 vs float32: summation order only (as test_hf_live.py)


def _paper_blocks():
  from ropex.model.config import model_block, pe_block  # pylint: disable=import-outside-toplevel
  return {
      'paper_prope': model_block('tiny', vocab_size=96, pe=pe_block(
          'prope', fraction=0.25, max_wavelength=10_000)),
      'paper_rope_500k': model_block('tiny', vocab_size=96, pe=pe_block(
          'rope', max_wavelength=500_000)),
      'paper_yarn': model_block('tiny', vocab_size=96, pe=pe_block(
          'rope', max_wavelength=10_000, scaling={'type': 'yarn', 'factor': 4.0,
                                                  'original_max_position': 16})),
  }


def export_cases(root: Path) -> list[str]:
  """Exports every case under ``root``; saves ropex's logits of fixed tokens next to it."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from ropex.tools import export as export_lib  # pylint: disable=import-outside-toplevel
  from ropex import model as model_lib  # pylint: disable=import-outside-toplevel
  from ropex.model.config import ModelConfig  # pylint: disable=import-outside-toplevel
  names = []
  for family in FAMILIES:
    out = root / family
    loaded = export_lib.from_model(str(HF_ROOT / family))  # pylint: disable=protected-access
    export_lib.export(*loaded, str(out))
    _save_logits(out, ModelConfig.from_config(loaded[0]), loaded[1], model_lib)
    names.append(family)
  for name, block in _paper_blocks().items():
    cfg = ModelConfig.from_config(block)
    params = nn.unbox(model_lib.Transformer(cfg).init(
        jax.random.key(1), jnp.zeros((1, 4), jnp.int32))['params'])
    params = jax.tree.map(lambda x: np.asarray(x) * 3.0, model_lib.unstack_layers(params, cfg))
    cfg = dataclasses.replace(cfg, scan_layers=False)   # the unstacked tree's layout
    out = root / name
    export_lib.export(block, params, None, {'bos_token_id': 1, 'eos_token_id': 2}, 64, False,
                      str(out))
    _save_logits(out, cfg, params, model_lib)
    names.append(name)
  return names


def _save_logits(out: Path, cfg, params, model_lib):
  tokens = np.random.default_rng(0).integers(3, cfg.vocab_size, (2, 48)).astype(np.int32)
  logits = np.asarray(model_lib.Transformer(cfg).apply({'params': params}, tokens))
  np.savez(out.parent / f'{out.name}.ropex.npz', tokens=tokens, logits=logits)


def compare(root: Path, name: str) -> float:
  """Max |transformers - ropex| of the saved tokens' logits."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  saved = np.load(root / f'{name}.ropex.npz')
  model = transformers.AutoModelForCausalLM.from_pretrained(
      str(root / name), dtype=torch.float32, attn_implementation='eager').eval()
  with torch.no_grad():
    logits = model(torch.as_tensor(saved['tokens'], dtype=torch.long)).logits.numpy()
  return float(np.abs(logits - saved['logits']).max())


def test_transformers_loads_every_export_with_ropex_logits(tmp_path):
  names = export_cases(tmp_path)
  errors = {name: compare(tmp_path, name) for name in names}
  assert all(e < ATOL for e in errors.values()), errors


if __name__ == '__main__':
  mode, folder = sys.argv[1], Path(sys.argv[2])
  if mode == 'export':
    folder.mkdir(parents=True, exist_ok=True)
    print(json.dumps(export_cases(folder)))
  else:
    names = sorted(p.name[:-len('.ropex.npz')] for p in folder.glob('*.ropex.npz'))
    print(json.dumps({n: compare(folder, n) for n in names}, indent=1))
