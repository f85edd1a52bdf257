"""ropex's export (ropex.export) loaded by LIVE transformers: AutoModelForCausalLM.from_pretrained of
the exported folder gives ropex's own logits (issue #19).

Opt-in (marker ``hf``, like test_hf_live.py): needs torch + transformers next to ropex. Each case
is exported by ropex (:func:`export_cases`, which also saves ropex's logits), then transformers
loads the folder. The two halves also run in separate environments:

    python tests/hf_live/test_export_live.py export DIR      # ropex's venv: folders + logits
    python tests/hf_live/test_export_live.py compare DIR     # torch + transformers venv

Cases: every HF fixture family (imported, then exported; Llama also as shards + index), paper blocks made by ropex (Gemma v1
with p-RoPE = rope type ``proportional``, with RoPE θ 500k, with YaRN) and Gemma 4 blocks made by
ropex (the family presets, shrunk: 31B's keys-as-values global layers with their own KV heads and
an untied head; E2B's per-layer inputs, K/V sharing and double-wide MLP).
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
FAMILIES = ('llama', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3', 'gemma4')
# float32 vs float32: summation order only. The bound is 1e-4, or 5x how far transformers' own
# float32 logits of the folder lie from its float64 ones where a model is less well conditioned
# (Gemma 4: scale-1 attention on QK-normed heads), as test_hf_live.py
ATOL, CONDITIONING_FACTOR = 1e-4, 5


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


def _gemma4_blocks():
  from ropex.config import defaults  # pylint: disable=import-outside-toplevel
  from ropex.model import families  # pylint: disable=import-outside-toplevel
  out = {}
  for arch, changes in (('gemma4_31b', dict(num_layers=4, num_kv_heads=2,
                                            tie_word_embeddings=False)),
                        ('gemma4_e2b', dict(vocab_size_per_layer_input=0, num_layers=6,
                                            num_kv_shared_layers=2))):
    block = defaults.base_config(arch).model
    families.shrink(block)
    block.update(scan_layers=False, vocab_size=96,
                 layer_pattern=('sliding_attention', 'sliding_attention', 'full_attention')
                 if arch == 'gemma4_e2b' else ('sliding_attention', 'full_attention'), **changes)
    out['ropex_' + arch] = block
  return out


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
  # the same Llama written as transformers' shards + index (--max_shard_size 64KiB: 8 files)
  loaded = export_lib.from_model(str(HF_ROOT / 'llama'))
  export_lib.export(*loaded, str(root / 'llama_sharded'), max_shard_bytes=64 * 1024)
  _save_logits(root / 'llama_sharded', ModelConfig.from_config(loaded[0]), loaded[1], model_lib)
  names.append('llama_sharded')
  for name, block in dict(_paper_blocks(), **_gemma4_blocks()).items():
    cfg = ModelConfig.from_config(block)
    params = nn.unbox(model_lib.Transformer(cfg).init(
        jax.random.key(1), jnp.zeros((1, 4), jnp.int32))['params'])
    if cfg.scan_layers:
      params = model_lib.unstack_layers(params, cfg)
    params = jax.tree.map(lambda x: np.asarray(x) * 3.0, params)
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


def compare(root: Path, name: str) -> dict:
  """Max |transformers - ropex| of the saved tokens' logits (``error``), transformers' own
  float32 error against its float64 run of the same folder (``own_f32_error``), the bound
  (ATOL, or CONDITIONING_FACTOR x that own error where the model is less well conditioned) and
  what transformers reported while loading the folder's tensors."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  saved = np.load(root / f'{name}.ropex.npz')
  model, info = transformers.AutoModelForCausalLM.from_pretrained(
      str(root / name), dtype=torch.float32, attn_implementation='eager',
      output_loading_info=True)
  model.eval()
  tokens = torch.as_tensor(saved['tokens'], dtype=torch.long)
  with torch.no_grad():
    logits = model(tokens).logits.numpy()
    logits_f64 = model.double()(tokens).logits.numpy()
  own = float(np.abs(logits - logits_f64).max())
  return {'error': float(np.abs(logits - saved['logits']).max()), 'own_f32_error': own,
          'bound': max(ATOL, CONDITIONING_FACTOR * own),
          # tensors transformers did not expect, lacked or found misshapen (e.g. K/V of Gemma 4's
          # KV-shared layers, which it builds without)
          'loading_problems': sorted(str(k) for key in ('missing_keys', 'unexpected_keys',
                                                        'mismatched_keys', 'error_msgs')
                                     for k in info[key])}


def test_transformers_loads_every_export_with_ropex_logits(tmp_path):
  names = export_cases(tmp_path)
  results = {name: compare(tmp_path, name) for name in names}
  assert all(r['error'] < r['bound'] and not r['loading_problems']
             for r in results.values()), results


if __name__ == '__main__':
  mode, folder = sys.argv[1], Path(sys.argv[2])
  if mode == 'export':
    folder.mkdir(parents=True, exist_ok=True)
    print(json.dumps(export_cases(folder)))
  else:
    names = sorted(p.name[:-len('.ropex.npz')] for p in folder.glob('*.ropex.npz'))
    print(json.dumps({n: compare(folder, n) for n in names}, indent=1))
