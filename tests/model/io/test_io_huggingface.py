"""Hugging Face import: the reference checkpoints of tests/fixtures/hf (tiny random models made
by transformers 5.25 with every family feature on; see scripts/make_hf_fixtures.py) load into
ropex's decoder and give transformers' logits."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from ropex import model as model_lib
from ropex.errors import ConfigError
from ropex.model import io
from ropex.model.config import ModelConfig
from ropex.training.placement import Placement

FIXTURES = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'hf')
FAMILIES = ('llama', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3', 'gemma4')


def _golden(family):
  return np.load(os.path.join(FIXTURES, family, 'golden.npz'))


def _logits(imported, tokens):
  cfg = ModelConfig.from_config(imported.model)
  return np.asarray(model_lib.Transformer(cfg).apply({'params': imported.params},
                                                     jnp.asarray(tokens)))


@pytest.mark.parametrize('family', FAMILIES)
def test_float32_logits_and_greedy_tokens_equal_transformers(family):
  golden = _golden(family)
  imported = io.load_model(os.path.join(FIXTURES, family))
  logits = _logits(imported, golden['input_ids'])
  assert np.abs(logits - golden['logits']).max() < 1e-4
  np.testing.assert_array_equal(logits.argmax(-1), golden['greedy'])
  assert imported.source['family'] == family and imported.source['quantization'] is None


@pytest.mark.parametrize('family', FAMILIES)
def test_bfloat16_stays_within_twice_transformers_own_bfloat16_error(family):
  """ropex in bfloat16 vs transformers' float32 logits: at most twice the deviation of
  transformers' own bfloat16 run (fixtures.json), i.e. an error of bfloat16's size, not a bug's."""
  golden = _golden(family)
  with open(os.path.join(FIXTURES, 'fixtures.json')) as f:
    hf_error = json.load(f)['families'][family]['bf16_max_abs_diff']
  logits = _logits(io.load_model(os.path.join(FIXTURES, family), dtype='bfloat16'),
                   golden['input_ids'])
  assert np.abs(logits - golden['logits']).max() <= 2 * hf_error


def test_sharded_checkpoint_loads_the_same_parameters():
  one = io.load_model(os.path.join(FIXTURES, 'qwen2'))
  many = io.load_model(os.path.join(FIXTURES, 'qwen2_sharded'))
  assert jax.tree.structure(one.params) == jax.tree.structure(many.params)
  jax.tree.map(np.testing.assert_array_equal, one.params, many.params)


def test_placed_on_a_mesh_each_tensor_lands_in_its_shards():
  devices = np.asarray(jax.devices()[:8])
  mesh = jax.sharding.Mesh(devices.reshape(1, 2, 4, 1), ('data', 'fsdp', 'tensor', 'seq'))
  placed = io.load_model(os.path.join(FIXTURES, 'llama'), mesh=mesh)
  host = io.load_model(os.path.join(FIXTURES, 'llama'))
  emb = placed.params['embedder']['input_embedding']
  assert len(emb.sharding.device_set) == 8 and not emb.sharding.is_fully_replicated
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), placed.params,
               host.params)


def _copy(tmp_path, family):
  dst = tmp_path / family
  shutil.copytree(os.path.join(FIXTURES, family), dst)
  return dst


def _edit_tensors(folder, fn):
  tensors = load_file(str(folder / 'model.safetensors'))
  fn(tensors)
  save_file(tensors, str(folder / 'model.safetensors'))


def _edit_config(folder, **changes):
  config = json.loads((folder / 'config.json').read_text())
  config.update(changes)
  (folder / 'config.json').write_text(json.dumps(config))


def test_missing_tensor_is_one_line_naming_it(tmp_path):
  folder = _copy(tmp_path, 'qwen3')
  _edit_tensors(folder, lambda t: t.pop('model.layers.1.self_attn.k_norm.weight'))
  with pytest.raises(ConfigError, match=r"no tensor 'model\.layers\.1\.self_attn\.k_norm"):
    io.load_model(str(folder))


def test_unmapped_tensor_is_one_line_naming_it(tmp_path):
  folder = _copy(tmp_path, 'llama')
  _edit_tensors(folder, lambda t: t.update({'model.layers.0.self_attn.o_proj.bias':
                                            np.zeros(64, np.float32)}))
  with pytest.raises(ConfigError, match=r"tensor 'model\.layers\.0\.self_attn\.o_proj\.bias'"):
    io.load_model(str(folder))


def test_shape_mismatch_is_one_line_naming_the_tensor(tmp_path):
  folder = _copy(tmp_path, 'gemma2')
  _edit_tensors(folder, lambda t: t.update({'model.layers.1.mlp.down_proj.weight': np.zeros(
      (64, 95), np.float32)}))
  with pytest.raises(ConfigError, match=r'layers\.1\.mlp\.down_proj\.weight \(64, 95\)'):
    io.load_model(str(folder))


@pytest.mark.parametrize('family, changes, named', [
    ('qwen2', {'use_sliding_window': True}, 'use_sliding_window'),
    ('llama', {'rope_parameters': {'rope_type': 'su', 'rope_theta': 1e4}}, "rope_type='su'"),
    ('llama', {'rope_parameters': {'rope_type': 'yarn', 'rope_theta': 1e4, 'factor': 4.0,
                                   'mscale': 0.7}}, 'mscale'),
    ('gemma4', {'enable_moe_block': True, 'num_experts': 8}, 'enable_moe_block'),
    ('qwen2', {'model_type': 'qwen3_moe'}, 'mixture-of-experts'),
    ('llama', {'model_type': 'gpt2'}, "model_type='gpt2'"),
    ('llama', {'attention_bias': True}, 'attention_bias'),
])
def test_an_unimplemented_field_is_one_line_naming_it(tmp_path, family, changes, named):
  folder = _copy(tmp_path, family)
  _edit_config(folder, **changes)
  with pytest.raises(ConfigError) as err:
    io.load_model(str(folder))
  assert named in str(err.value) and '\n' not in str(err.value)


@pytest.mark.parametrize('family', [f for f in FAMILIES if f != 'gemma4'])
def test_hub_form_of_config_builds_the_same_model(tmp_path, family):
  """config.hub.json: the transformers 4.x form the Hub releases carry (rope_theta +
  rope_scaling, rope_local_base_freq, sliding_window_pattern, no layer_types), which the
  fixtures helper checked gives transformers the same logits; ropex reads it alike."""
  folder = _copy(tmp_path, family)
  shutil.copy(folder / 'config.hub.json', folder / 'config.json')
  new, _ = io.read_model(os.path.join(FIXTURES, family))
  old, _ = io.read_model(str(folder))
  assert ModelConfig.from_config(old) == ModelConfig.from_config(new)


def test_init_from_a_released_folder_starts_a_scanned_run_from_its_weights(tmp_path):
  """train.init_from=<HF folder>: the imported weights, restacked for a scanned run, sharded
  over 8 devices; the run records the source."""
  from ropex.config import defaults  # pylint: disable=g-import-not-at-top
  from ropex.training import init_from, sharding, step  # pylint: disable=g-import-not-at-top
  imported = io.load_model(os.path.join(FIXTURES, 'qwen3'))
  c = defaults.base_config('tiny')
  c.model = imported.model
  c.model.scan_layers = True
  c.train.init_from = os.path.join(FIXTURES, 'qwen3')
  c.mesh.update(data=2, fsdp=2, tensor=2)
  setup = step.make_setup(c, sharding.make_mesh(c))
  pretrained = init_from.load(c, setup)
  cfg = ModelConfig.from_config(c.model)
  unstacked = model_lib.unstack_layers(jax.device_get(pretrained.params), cfg)
  jax.tree.map(np.testing.assert_array_equal, unstacked, imported.params)
  assert pretrained.record['family'] == 'qwen3' and pretrained.record['format'] == 'huggingface'


_MEASURE = '''
import sys, jax
sys.path.insert(0, 'tests')                  # the working directory is the repository root
from peak_rss import peak_rss, reset_peak_rss
from ropex.model import io
jax.numpy.zeros(1).block_until_ready()
base = reset_peak_rss()
imported = io.load_model(sys.argv[1])
print((peak_rss() - base) // 1024)
'''


def test_tensors_are_read_one_at_a_time(tmp_path):
  """Peak host memory of an import (a fresh process, VmHWM: tests/peak_rss.py) stays below the
  parameters plus two of the largest tensors; reading every tensor first and converting after
  needs about twice the parameters."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import cli_runs  # pylint: disable=g-import-not-at-top
  D, F, L, V = 256, 1024, 8, 8192
  config = dict(model_type='llama', hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                vocab_size=V, num_attention_heads=4, num_key_value_heads=4, head_dim=64,
                hidden_act='silu', tie_word_embeddings=False, rope_theta=1e4)
  (tmp_path / 'config.json').write_text(json.dumps(config))
  w = lambda *shape: np.full(shape, 0.01, np.float32)
  tensors = {'model.embed_tokens.weight': w(V, D), 'lm_head.weight': w(V, D),
             'model.norm.weight': w(D)}
  for i in range(L):
    p = f'model.layers.{i}.'
    tensors.update({p + f'self_attn.{n}_proj.weight': w(D, D) for n in 'qkvo'})
    tensors.update({p + 'mlp.gate_proj.weight': w(F, D), p + 'mlp.up_proj.weight': w(F, D),
                    p + 'mlp.down_proj.weight': w(D, F), p + 'input_layernorm.weight': w(D),
                    p + 'post_attention_layernorm.weight': w(D)})
  save_file(tensors, str(tmp_path / 'model.safetensors'))
  total_kib = sum(t.nbytes for t in tensors.values()) / 1024      # 48 MiB
  largest_kib = max(t.nbytes for t in tensors.values()) / 1024    # 8 MiB
  out = subprocess.run([sys.executable, '-c', _MEASURE, str(tmp_path)], cwd=cli_runs.ROOT,
                       capture_output=True, text=True, check=True).stdout
  growth_kib = int(out.split()[-1])
  assert total_kib <= growth_kib < total_kib + 2 * largest_kib   # the params are held: measured


@pytest.mark.parametrize('family', FAMILIES + ('qwen2_sharded',))
def test_describe_counts_from_config_json_equal_the_checkpoints_tensors(family):
  """``describe --model`` reads config.json only; its parameter count equals the number of
  values the safetensors hold (their headers, summed)."""
  from safetensors import safe_open  # pylint: disable=g-import-not-at-top
  from ropex.tools.describe import describe  # pylint: disable=g-import-not-at-top
  folder = os.path.join(FIXTURES, family)
  stored = 0
  for file in sorted(f for f in os.listdir(folder) if f.endswith('.safetensors')):
    with safe_open(os.path.join(folder, file), framework='np') as f:
      stored += sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())
  block, source = io.read_model(folder)
  assert describe(ModelConfig.from_config(block))['params_total'] == stored
  assert source['format'] == 'huggingface'


def test_describe_cli_model_flag_prints_per_layer_encodings():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = subprocess.run([sys.executable, '-m', 'ropex.describe', '--model',
                        os.path.join(FIXTURES, 'gemma4'), '--json'], capture_output=True,
                       text=True, check=True).stdout
  d = json.loads(out)
  kinds = [(l['pe_kind'], l['head_dim'], len(l['rotated_chunks'])) for l in d['layers']]
  assert kinds == [('rope', 16, 8), ('proportional', 32, 4)] * 2
  assert d['source']['family'] == 'gemma4'


def test_gemma4_last_layer_is_global_whatever_layer_types_says(tmp_path, caplog):
  """transformers' Gemma 4 config forces the last layer to full attention (with a warning) when
  layer_types ends with a sliding one; ropex reads such a file alike and says so."""
  folder = _copy(tmp_path, 'gemma4')
  config = json.loads((folder / 'config.json').read_text())
  text = config.get('text_config', config)
  text['layer_types'] = text['layer_types'][:-1] + ['sliding_attention']
  (folder / 'config.json').write_text(json.dumps(config))
  edited, _ = io.read_model(str(folder))
  original, _ = io.read_model(os.path.join(FIXTURES, 'gemma4'))
  assert ModelConfig.from_config(edited) == ModelConfig.from_config(original)
  assert any('makes the last layer full_attention' in r.getMessage() for r in caplog.records)
