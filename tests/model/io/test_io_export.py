"""Export to Hugging Face (ropex.export, ropex.model.io.hf_export): the inverse of the families
reader. Exporting each imported fixture gives back the fixture's tensors bit for bit and its
config fields; models transformers cannot express are refused in one line naming the field.
(transformers' own logits of the exported folders: tests/hf_live/test_export_live.py.)"""

import json
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import cli_runs
from ropex.tools import export as export_lib
from ropex import model as model_lib
from ropex.errors import ConfigError
from ropex.config import defaults
from ropex.model import families, io
from ropex.model.config import ModelConfig, model_block, pe_block

HF = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'hf')
FAMILIES = ('llama', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3', 'gemma4')
# config.json fields that describe the file, not the model (or restate transformers' defaults:
# the reader derives them; the export states them explicitly)
BOOKKEEPING = {'transformers_version', 'dtype', 'initializer_range', 'use_cache',
               'attention_dropout', 'pretraining_tp', 'mlp_bias', 'max_window_layers',
               'use_sliding_window', 'use_bidirectional_attention', '_sliding_window_pattern',
               'hidden_act', 'hidden_activation', 'head_dim', 'layer_types'}


@pytest.mark.parametrize('family', FAMILIES)
def test_exported_fixture_is_the_fixture(family, tmp_path):
  out = str(tmp_path / 'out')
  export_lib.export(*export_lib.from_model(os.path.join(HF, family)), out)  # pylint: disable=protected-access
  theirs = load_file(os.path.join(HF, family, 'model.safetensors'))
  ours = load_file(os.path.join(out, 'model.safetensors'))
  assert ours.keys() == theirs.keys()
  for name in theirs:
    np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
  with open(os.path.join(HF, family, 'config.json')) as f:
    c0 = json.load(f)
  with open(os.path.join(out, 'config.json')) as f:
    c1 = json.load(f)
  differing = {k for k in set(c0) | set(c1) if c0.get(k) != c1.get(k)} - BOOKKEEPING
  assert not differing, {k: (c0.get(k), c1.get(k)) for k in differing}
  # what the export leaves to defaults reads back as the same model
  assert (ModelConfig.from_config(io.load_model(out).model)
          == ModelConfig.from_config(io.load_model(os.path.join(HF, family)).model))


def _gemma4_fixture(**changes):
  """The imported Gemma 4 fixture (block, params) with ``changes`` applied to its block
  (dotted names reach into layer types)."""
  block, params, *_ = export_lib.from_model(os.path.join(HF, 'gemma4'))
  block = block.copy_and_resolve_references()
  for name, value in changes.items():
    *parents, leaf = name.split('.')
    node = block
    for key in parents:
      node = node[key]
    node[leaf] = value
  return block, params


@pytest.mark.parametrize('changes, field', [
    # transformers' Gemma 4 shares keys as values on full-attention layers only
    ({'layer_types.sliding_attention.k_eq_v': True},
     'model.layer_types.sliding_attention.k_eq_v'),
    # num_global_key_value_heads only acts with attention_k_eq_v
    ({'layer_types.full_attention.k_eq_v': False},
     'model.layer_types.full_attention.num_kv_heads'),
    # sliding layers have the model's head_dim; only full layers have their own
    ({'layer_types.sliding_attention.head_dim': 32},
     'model.layer_types.sliding_attention.head_dim'),
    # Gemma 4's attention has no logit soft-cap
    ({'attn_logit_softcap': 50.0}, 'model.attn_logit_softcap'),
    # transformers forces the last layer to full attention
    ({'layer_pattern': ('full_attention', 'sliding_attention')}, 'model.layer_pattern'),
    ({'layer_types.full_attention.pe': pe_block('prope_reversed', fraction=0.25)},
     'model.layer_types.full_attention.pe.kind'),
])
def test_gemma4_features_transformers_cannot_express_are_refused(changes, field, tmp_path):
  block, params = _gemma4_fixture(**changes)
  with pytest.raises(ConfigError, match=field.replace('.', r'\.') + r'\b') as e:
    export_lib.export(block, params, None, {}, 128, False, str(tmp_path / 'o'))
  assert '\n' not in str(e.value)
  assert not (tmp_path / 'o').exists()


def _filled(block):
  """Random float32 parameters of ``block`` (every value distinct, so a misplaced one shows)."""
  cfg = ModelConfig.from_config(block)
  tree = flax.linen.unbox(model_lib.abstract_params(cfg))
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(np.float32), tree)


@pytest.mark.parametrize('arch, changes', [
    # keys as values on full layers with their own KV heads (2 vs 1), no per-layer inputs, no
    # K/V sharing, an untied head
    ('gemma4_31b', dict(num_layers=2, num_kv_heads=2, tie_word_embeddings=False)),
    # per-layer inputs with ropex's 0 = the model's vocabulary, K/V sharing, double-wide MLP;
    # layer types named as ropex's schedules name them (transformers names them by kind)
    ('gemma4_e2b', dict(vocab_size_per_layer_input=0, num_layers=4, num_kv_shared_layers=2,
                        renamed={'sliding_attention': 'local', 'full_attention': 'global'})),
])
def test_ropex_gemma4_blocks_export_and_read_back_with_the_same_logits(arch, changes, tmp_path):
  """Gemma 4 blocks made by ropex (the family presets, shrunk) export, and the families reader
  gives the same parameters and logits back."""
  block = defaults.base_config(arch).model
  families.shrink(block)
  changes = dict(changes)
  renamed = changes.pop('renamed', {})
  block.update(scan_layers=False, **changes)
  block.layer_types = {renamed.get(k, k): v for k, v in dict(block.layer_types).items()}
  block.layer_pattern = tuple(renamed.get(k, k) for k in ('sliding_attention', 'full_attention'))
  params = _filled(block)
  out = str(tmp_path / 'o')
  export_lib.export(block, params, None, {'bos_token_id': 2, 'eos_token_id': 1}, 128, False,
                    out)
  back = io.load_model(out)
  jax.tree.map(np.testing.assert_array_equal, back.params, params)
  tokens = np.random.default_rng(1).integers(0, 512, (1, 20)).astype(np.int32)
  cfg = ModelConfig.from_config(block)
  np.testing.assert_array_equal(
      model_lib.Transformer(back.cfg).apply({'params': back.params}, tokens),
      model_lib.Transformer(cfg).apply({'params': params}, tokens))
  with open(os.path.join(out, 'config.json')) as f:
    c = json.load(f)
  assert c['model_type'] == 'gemma4_text' and c['layer_types'][-1] == 'full_attention'


def _random(block):
  cfg = ModelConfig.from_config(block)
  variables = model_lib.Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  params = jax.tree.map(np.asarray, model_lib.unstack_layers(
      __import__('flax').linen.unbox(variables['params']), cfg) if cfg.scan_layers else
      __import__('flax').linen.unbox(variables['params']))
  return params


@pytest.mark.parametrize('pe, field', [
    (pe_block('prope_reversed', fraction=0.25), 'model.pe.kind'),
    (pe_block('alibi'), 'model.pe.kind'),
    (pe_block('fire'), 'model.pe.kind'),
    (pe_block('none'), 'model.pe.kind'),
    (pe_block('partial', rotary_fraction=0.5), 'model.pe.kind'),
    (pe_block('rope', max_wavelength=10_000, position_scale=2.0), 'model.pe.position_scale'),
])
def test_encodings_transformers_cannot_express_are_refused(pe, field, tmp_path):
  block = model_block('tiny', pe=pe, vocab_size=64)
  with pytest.raises(ConfigError, match=field.replace('.', r'\.')):
    export_lib.export(block, _random(block), None, {}, 128, False, str(tmp_path / 'o'))
  assert not (tmp_path / 'o').exists()


def test_a_sliding_window_on_a_gemma_v1_block_is_refused(tmp_path):
  block = model_block('tiny', vocab_size=64, sliding_window=16)
  with pytest.raises(ConfigError, match='model.sliding_window'):
    export_lib.export(block, _random(block), None, {}, 128, False, str(tmp_path / 'o'))


@pytest.mark.parametrize('pe', [pe_block('prope', fraction=0.25, max_wavelength=10_000),
                                pe_block('rope', max_wavelength=500_000),
                                pe_block('rope', max_wavelength=10_000,
                                         scaling={'type': 'yarn', 'factor': 4.0,
                                                  'original_max_position': 128})])
def test_paper_blocks_export_and_read_back_with_the_same_logits(pe, tmp_path):
  """A ropex Gemma v1 block (p-RoPE: rope type proportional; RoPE θ 500k; YaRN) exports, and
  the families reader gives the same model and logits back."""
  block = model_block('tiny', pe=pe, vocab_size=64)
  params = _random(block)
  out = str(tmp_path / 'o')
  export_lib.export(block, params, None, {'bos_token_id': 1, 'eos_token_id': 2}, 128, False, out)
  back = io.load_model(out)
  tokens = np.random.default_rng(0).integers(0, 64, (2, 24)).astype(np.int32)
  cfg = ModelConfig.from_config(block)
  np.testing.assert_array_equal(
      model_lib.Transformer(back.cfg).apply({'params': back.params}, tokens),
      model_lib.Transformer(back.cfg).apply({'params': params}, tokens))
  with open(os.path.join(out, 'config.json')) as f:
    c = json.load(f)
  assert c['model_type'] == 'gemma' and cfg.num_layers == c['num_hidden_layers']
  if pe.kind == 'prope':
    assert c['rope_parameters'] == {'rope_type': 'proportional', 'partial_rotary_factor': 0.25,
                                    'rope_theta': 10_000.0}


def test_workdir_export_cli_and_bad_out(tmp_path):
  run = tmp_path / 'run'
  r = cli_runs.run(run, *cli_runs.SMALL, '--config.train.steps=2')
  assert r.returncode == 0, r.stderr[-2000:]
  out = tmp_path / 'hf'
  r = cli_runs.run_module('ropex.export', f'--workdir={run}', f'--out={out}')
  assert r.returncode == 0, r.stderr[-2000:]
  assert sorted(os.listdir(out)) == ['config.json', 'model.safetensors', 'tokenizer.json']
  from ropex.training import inference  # pylint: disable=import-outside-toplevel
  config, params, _ = inference.load_for_inference(str(run))
  cfg = ModelConfig.from_config(config.model)
  back = io.load_model(str(out))
  tokens = np.random.default_rng(0).integers(3, 200, (1, 40)).astype(np.int32)
  np.testing.assert_allclose(
      model_lib.Transformer(back.cfg).apply({'params': back.params}, tokens),
      model_lib.Transformer(cfg).apply({'params': params}, tokens), atol=1e-5, rtol=1e-5)
  r = cli_runs.run_module('ropex.export', f'--workdir={run}', f'--out={out}')
  lines = [x for x in r.stderr.splitlines() if x.startswith('ropex.export: ')]
  assert r.returncode == 2 and len(lines) == 1 and 'not an empty folder' in lines[0], r.stderr
  r = cli_runs.run_module('ropex.export', f'--workdir={run}', f'--out={tmp_path / "hf2"}',
                          '--max_shard_size=5XB')
  lines = [x for x in r.stderr.splitlines() if x.startswith('ropex.export: ')]
  assert r.returncode == 2 and len(lines) == 1 and "--max_shard_size='5XB'" in lines[0], r.stderr
  assert not (tmp_path / 'hf2').exists()


def test_sharded_export_is_transformers_layout_and_the_same_tensors(tmp_path):
  """Over --max_shard_size the weights go to model-0000i-of-0000n.safetensors with
  model.safetensors.index.json (transformers' layout, which the loader reads through the same
  code as the transformers-written qwen2_sharded fixture): the shards together hold exactly the
  single-file export's tensors, each shard within the limit unless one tensor exceeds it, the
  index names every tensor's file and the total size, and the folder imports to the fixture's
  parameters."""
  loaded = export_lib.from_model(os.path.join(HF, 'llama'))
  export_lib.export(*loaded, str(tmp_path / 'one'))
  single = load_file(str(tmp_path / 'one' / 'model.safetensors'))
  limit = 64 * 1024
  files = export_lib.export(*loaded, str(tmp_path / 'sharded'), max_shard_bytes=limit)
  names = sorted(os.path.basename(f) for f in files if 'safetensors' in f)
  shards = [n for n in names if n.endswith('.safetensors')]
  assert len(shards) > 2 and shards[0] == f'model-00001-of-{len(shards):05d}.safetensors'
  with open(tmp_path / 'sharded' / 'model.safetensors.index.json') as f:
    index = json.load(f)
  together = {}
  for shard in shards:
    part = load_file(str(tmp_path / 'sharded' / shard))
    assert sum(v.nbytes for v in part.values()) <= limit or len(part) == 1, shard
    assert all(index['weight_map'][k] == shard for k in part)
    together.update(part)
  assert together.keys() == single.keys() == index['weight_map'].keys()
  for name in single:
    np.testing.assert_array_equal(together[name], single[name], err_msg=name)
  assert index['metadata']['total_size'] == sum(v.nbytes for v in single.values())
  back, ref = io.load_model(str(tmp_path / 'sharded')), io.load_model(os.path.join(HF, 'llama'))
  jax.tree.map(np.testing.assert_array_equal, back.params, ref.params)


@pytest.mark.parametrize('text, size', [('50GB', 50 * 10**9), ('2GiB', 2 * 2**30),
                                        ('500mb', 500 * 10**6), ('4096', 4096)])
def test_max_shard_size_reads_transformers_units(text, size):
  assert export_lib.shard_bytes(text) == size


@pytest.mark.parametrize('text', ['5XB', '0', 'GB', '-3MB', '1.5GB'])
def test_bad_max_shard_size_names_the_flag(text):
  with pytest.raises(ConfigError, match=r"--max_shard_size=.* is not a size; allowed: a "
                                        r"positive number of bytes"):
    export_lib.shard_bytes(text)
