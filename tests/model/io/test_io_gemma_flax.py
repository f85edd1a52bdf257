"""Gemma v1 import: tiny checkpoints written here in both released layouts, loaded, and run
against an independent numpy forward pass."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from safetensors.numpy import save_file

from ropex.model.io import gemma_flax as gemma_import
from ropex import model as model_lib
from ropex.errors import ConfigError
import reference

V, D, H, F, L = 40, 16, 8, 24, 2


def official_tree(num_heads, num_kv_heads, seed=0):
  """A random official Gemma v1 tree (nested; 'mlp' holds gating_einsum / linear)."""
  rng = np.random.default_rng(seed)
  w = lambda *s: (rng.standard_normal(s) / math.sqrt(s[-2])).astype(np.float32)
  tree = {'embedder': {'input_embedding': rng.standard_normal((V, D)).astype(np.float32) * 0.5},
          'final_norm': {'scale': rng.standard_normal(D).astype(np.float32) * 0.2}}
  for i in range(L):
    N, K = num_heads, num_kv_heads
    attn = ({'qkv_einsum': {'w': w(3, N, D, H)}} if N == K else
            {'q_einsum': {'w': w(N, D, H)}, 'kv_einsum': {'w': w(2, K, D, H)}})
    attn['attn_vec_einsum'] = {'w': w(N, H, D)}
    tree[f'layer_{i}'] = {
        'attn': attn, 'mlp': {'gating_einsum': w(2, D, F), 'linear': w(F, D)},
        'pre_attention_norm': {'scale': rng.standard_normal(D).astype(np.float32) * 0.2},
        'pre_ffw_norm': {'scale': rng.standard_normal(D).astype(np.float32) * 0.2}}
  return tree


def save_flax(tree, path, remapped):
  """Flat 'transformer/...' keys as in the released checkpoints (mlp params as '{w}' leaves,
  or already remapped under 'mlp')."""
  flat = {'transformer/embedder': tree['embedder'], 'transformer/final_norm': tree['final_norm']}
  for i in range(L):
    layer = tree[f'layer_{i}']
    for name, leaf in layer['attn'].items():
      flat[f'transformer/layer_{i}/attn/{name}'] = leaf
    for name in set(layer) - {'attn', 'mlp'}:   # the norms (and any extra Gemma 2 norm)
      flat[f'transformer/layer_{i}/{name}'] = layer[name]
    if remapped:
      flat[f'transformer/layer_{i}/mlp'] = dict(layer['mlp'])
    else:
      for name, value in layer['mlp'].items():
        flat[f'transformer/layer_{i}/mlp/{name}'] = {'w': value}
  ocp.PyTreeCheckpointer().save(os.path.abspath(path), flat)


def save_hf(tree, folder, num_heads, num_kv_heads):
  """GemmaForCausalLM names and [out, in] layouts."""
  N, K = num_heads, num_kv_heads
  t = {'model.embed_tokens.weight': tree['embedder']['input_embedding'],
       'model.norm.weight': tree['final_norm']['scale']}
  for i in range(L):
    layer, pre = tree[f'layer_{i}'], f'model.layers.{i}.'
    attn = layer['attn']
    if 'qkv_einsum' in attn:
      q, k, v = attn['qkv_einsum']['w']
    else:
      q, (k, v) = attn['q_einsum']['w'], attn['kv_einsum']['w']
    t[pre + 'self_attn.q_proj.weight'] = q.transpose(0, 2, 1).reshape(N * H, D)
    t[pre + 'self_attn.k_proj.weight'] = k.transpose(0, 2, 1).reshape(K * H, D)
    t[pre + 'self_attn.v_proj.weight'] = v.transpose(0, 2, 1).reshape(K * H, D)
    t[pre + 'self_attn.o_proj.weight'] = attn['attn_vec_einsum']['w'].reshape(N * H, D).T
    t[pre + 'mlp.gate_proj.weight'] = layer['mlp']['gating_einsum'][0].T
    t[pre + 'mlp.up_proj.weight'] = layer['mlp']['gating_einsum'][1].T
    t[pre + 'mlp.down_proj.weight'] = layer['mlp']['linear'].T
    t[pre + 'input_layernorm.weight'] = layer['pre_attention_norm']['scale']
    t[pre + 'post_attention_layernorm.weight'] = layer['pre_ffw_norm']['scale']
  os.makedirs(folder, exist_ok=True)
  half = len(t) // 2   # two shards, like the released 2B / 7B
  keys = sorted(t)
  save_file({k: np.ascontiguousarray(t[k]) for k in keys[:half]},
            os.path.join(folder, 'model-00001-of-00002.safetensors'))
  save_file({k: np.ascontiguousarray(t[k]) for k in keys[half:]},
            os.path.join(folder, 'model-00002-of-00002.safetensors'))
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump({'model_type': 'gemma', 'head_dim': H, 'num_attention_heads': N,
               'num_key_value_heads': K, 'hidden_size': D, 'rope_theta': 10000.0,
               'num_hidden_layers': L, 'vocab_size': V, 'intermediate_size': F}, f)


def numpy_forward(tree, tokens_T, num_heads, num_kv_heads):
  """Gemma v1 in float64 (the shared reference; head counts are read from the tree)."""
  del num_heads, num_kv_heads
  return reference.gemma_forward(tree, np.asarray(tokens_T)[None], L)[0]


TOKENS = np.asarray([2, 5, 17, 33, 5, 9, 39, 1, 12, 7], np.int32)


@pytest.mark.parametrize('heads', [(4, 1), (2, 2)], ids=['mqa', 'mha'])
@pytest.mark.parametrize('layout', ['flax', 'flax_remapped', 'hf'])
def test_imported_logits_match_an_independent_forward(tmp_path, heads, layout):
  N, K = heads
  tree = official_tree(N, K)
  path = str(tmp_path / 'ckpt')
  if layout == 'hf':
    save_hf(tree, path, N, K)
  else:
    save_flax(tree, path, remapped=layout == 'flax_remapped')
  imported = gemma_import.load(path)
  assert imported.source == ('hf' if layout == 'hf' else 'flax')
  cfg = imported.cfg
  assert (cfg.vocab_size, cfg.num_layers, cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads,
          cfg.head_dim, cfg.hidden_dim) == (V, L, D, N, K, H, F)
  assert imported.model_block.arch == 'imported' and not cfg.scan_layers
  pe = cfg.layers[0].pe
  assert pe.kind == 'rope' and pe.max_wavelength == 10_000.0 and pe.layout == 'half'
  apply = jax.jit(lambda p, t: model_lib.Transformer(cfg).apply({'params': p}, t))
  logits = np.asarray(apply(imported.params, jnp.asarray(TOKENS)[None])[0], np.float64)
  expected = numpy_forward(tree, TOKENS, N, K)
  np.testing.assert_allclose(logits, expected, rtol=2e-4, atol=2e-4)


def test_scanned_import_and_bfloat16(tmp_path):
  tree = official_tree(4, 1)
  save_flax(tree, str(tmp_path / 'ckpt'), remapped=False)
  scanned = gemma_import.load(str(tmp_path / 'ckpt'), scan_layers=True)
  assert scanned.cfg.scan_layers and scanned.params['layers']['layer_0']['pre_ffw_norm'][
      'scale'].shape == (L, D)
  apply = jax.jit(lambda p, t: model_lib.Transformer(scanned.cfg).apply({'params': p}, t))
  logits = apply(scanned.params, jnp.asarray(TOKENS)[None])[0]
  np.testing.assert_allclose(logits, numpy_forward(tree, TOKENS, 4, 1), rtol=2e-4, atol=2e-4)
  bf16 = gemma_import.load(str(tmp_path / 'ckpt'), dtype='bfloat16')
  assert bf16.params['embedder']['input_embedding'].dtype == jnp.bfloat16
  assert bf16.cfg.dtype == bf16.cfg.param_dtype == 'bfloat16'


def test_presets_are_recognised_from_shapes():
  tree = {'embedder': {'input_embedding': np.zeros((256_128, 2048))},
          'layer_0': {'attn': {'q_einsum': {'w': np.zeros((8, 2048, 256))},
                               'kv_einsum': {'w': np.zeros((2, 1, 2048, 256))}},
                      'mlp': {'linear': np.zeros((16_384, 2048))}}}
  tree.update({f'layer_{i}': tree['layer_0'] for i in range(1, 18)})
  assert gemma_import.infer_model_block(tree).arch == 'gemma_2b'


def test_gemma2_and_bad_paths_are_refused(tmp_path):
  tree = official_tree(2, 1)
  tree['layer_0']['post_ffw_norm'] = {'scale': np.zeros(D, np.float32)}
  save_flax(tree, str(tmp_path / 'g2'), remapped=True)
  with pytest.raises(ConfigError, match='Gemma v1'):
    gemma_import.load(str(tmp_path / 'g2'))
  with pytest.raises(ConfigError, match='--gemma'):
    gemma_import.load(str(tmp_path))
  save_hf(official_tree(2, 1), str(tmp_path / 'hf2'), 2, 1)
  with open(tmp_path / 'hf2' / 'config.json', 'w') as f:
    json.dump({'model_type': 'gemma2'}, f)
  with pytest.raises(ConfigError, match='model_type'):
    gemma_import.load(str(tmp_path / 'hf2'))


def train_tokenizer(path):
  import sentencepiece as spm
  sentences = ['the quick brown fox jumps over the lazy dog', 'rotary positions turn',
               'a b c d e f g h i j k l m n o p', 'lighthouse keeper bread river'] * 50
  spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences),
                                 model_prefix=str(path), vocab_size=V, pad_id=0, eos_id=1,
                                 bos_id=2, unk_id=3, model_type='unigram',
                                 hard_vocab_limit=False, minloglevel=2)


def test_analyze_cli_on_gemma_weights_with_their_tokenizer(tmp_path):
  tree = official_tree(4, 1)
  save_hf(tree, str(tmp_path / 'weights'), 4, 1)
  train_tokenizer(tmp_path / 'weights' / 'tokenizer')   # found next to the weights
  out = tmp_path / 'out'
  (tmp_path / 'prompts.jsonl').write_text('{"text": "the quick brown fox"}\n'
                                           '{"text": "a b c d e f g h"}\n')
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'ropex.analyze', f'--gemma={tmp_path / "weights"}', f'--out={out}',
       f'--prompts={tmp_path / "prompts.jsonl"}', '--top_heads=0', '--max_len=24'],
      capture_output=True, text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = (out / 'report.md').read_text()
  assert 'format: huggingface' in report and 'tokenizer.model' in report
  arrays = np.load(out / 'arrays.npz')
  assert arrays['q_chunk_norm_LNC'].shape == (L, 4, H // 2)
  assert arrays['k_chunk_norm_LKC'].shape == (L, 1, H // 2)
  import sentencepiece as spm
  sp = spm.SentencePieceProcessor(model_file=str(tmp_path / 'weights' / 'tokenizer.model'))
  expected = [[2] + sp.encode(t) for t in ('the quick brown fox', 'a b c d e f g h')]
  for row, length, ids in zip(arrays['tokens_PT'], arrays['lengths_P'], expected):
    assert row[:length].tolist() == ids                      # BOS (2) + SentencePiece ids


# ---- Gemma 2 / Gemma 3: the official Flax twins of the HF fixtures (tests/fixtures/flax) ----

import shutil

import ml_dtypes

from ropex.model import io
from ropex.model.config import model_block
from ropex.model.io import gemma_flax_config, gemma2_flax

FIXTURES = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures')
TWINS = ['gemma2', 'gemma3']


def twin(family):
  return os.path.join(FIXTURES, 'flax', family, 'tiny')


def hf_twin(family):
  return os.path.join(FIXTURES, 'hf', family)


def logits_of(imported, tokens):
  cfg = imported.cfg
  return np.asarray(model_lib.Transformer(cfg).apply({'params': imported.params},
                                                     jnp.asarray(tokens)))


@pytest.mark.parametrize('family', TWINS)
def test_flax_twin_reproduces_transformers_golden_logits(family):
  """The Flax twin, its config from twin.json's gemma library fields, gives transformers'
  float32 logits of the same weights (golden.npz) and the same greedy tokens."""
  imported = io.load_model(twin(family))
  assert imported.source['family'] == family and imported.source['config'].endswith('twin.json')
  assert imported.tokenizer_path.endswith('tokenizer.model')
  golden = np.load(os.path.join(hf_twin(family), 'golden.npz'))
  logits = logits_of(imported, golden['input_ids'])
  diff = float(np.abs(logits - golden['logits']).max())
  print(f'{family}: max |ropex - transformers| logit = {diff:.3g}')
  assert diff < 1e-4
  np.testing.assert_array_equal(logits.argmax(-1), golden['greedy'])


@pytest.mark.parametrize('family', TWINS)
def test_flax_twin_equals_the_hf_import(family):
  """Independent paths agree exactly: the Flax reader (library config table, FLAT tree,
  gating layout) and the Hugging Face reader (config.json, safetensors) build the same model
  block and bit-identical parameters; read_model (no weights) gives the same block."""
  flax_model = io.load_model(twin(family))
  hf_model = io.load_model(hf_twin(family))
  assert flax_model.model.to_dict() == hf_model.model.to_dict()
  assert io.read_model(twin(family))[0].to_dict() == hf_model.model.to_dict()
  flat_f = dict(gemma2_flax._flat(flax_model.params))
  flat_h = dict(gemma2_flax._flat(hf_model.params))
  assert set(flat_f) == set(flat_h)
  for path, value in flat_h.items():
    np.testing.assert_array_equal(flat_f[path], value, err_msg='/'.join(path))
  bf16 = io.load_model(twin(family), dtype='bfloat16')
  assert bf16.params['embedder']['input_embedding'].dtype == ml_dtypes.bfloat16
  assert bf16.cfg.param_dtype == 'bfloat16'


# The gemma library's model classes (google-deepmind/gemma, gemma/gm/nn/_gemma.py at
# 7691fd4e7f26c9ec5db38110dddb3addfab4d767), written out as a sidecar would hold them.
_G3_TYPES = ['LOCAL_SLIDING'] * 5 + ['GLOBAL']
_G3 = dict(final_logit_softcap=None, head_dim=256, use_post_attn_norm=True,
           use_post_ffw_norm=True, use_qk_norm=True,
           query_pre_attn_norm='BY_ONE_OVER_SQRT_HEAD_DIM',
           attn_logits_soft_cap=None, transpose_gating_einsum=True, local_base_frequency=10_000,
           global_base_frequency=1_000_000)
LIBRARY_CLASSES = {
    'gemma2_2b': dict(num_embed=256128, embed_dim=2304, hidden_dim=9216, num_heads=8, head_dim=256,
                      num_kv_heads=4, final_logit_softcap=30.0,
                      attention_types=['LOCAL_SLIDING', 'GLOBAL'] * 13, use_post_attn_norm=True,
                      use_post_ffw_norm=True, query_pre_attn_norm='BY_ONE_OVER_SQRT_HEAD_DIM',
                      attn_logits_soft_cap=50.0, sliding_window_size=4096),
    'gemma3_270m': dict(_G3, num_embed=262144, embed_dim=640, hidden_dim=2048, num_heads=4,
                        num_kv_heads=1, attention_types=(_G3_TYPES * 3)[:18],
                        sliding_window_size=512),
    'gemma3_1b': dict(_G3, num_embed=262144, embed_dim=1152, hidden_dim=6 * 1152, num_heads=4,
                      num_kv_heads=1, attention_types=(_G3_TYPES * 5)[:26],
                      sliding_window_size=512),
    'gemma3_4b': dict(_G3, num_embed=262_144, embed_dim=2560, hidden_dim=2560 * 8 // 2,
                      num_heads=8, num_kv_heads=4, attention_types=(_G3_TYPES * 6)[:34],
                      sliding_window_size=1024, global_scale_factor=8.0),
}


@pytest.mark.parametrize('arch', sorted(LIBRARY_CLASSES))
def test_library_model_classes_map_to_the_family_presets(arch):
  """The field table turns the gemma library's own config of a released model into the ropex
  preset built from the Hugging Face config.json of the same model (vocab aside: the Flax
  releases' embedding differs), and the preset is found from the shapes alone."""
  lib = LIBRARY_CLASSES[arch]
  block, transpose = gemma_flax_config.block_from_library(lib, 'test')
  preset = model_block(arch)
  skip = {'vocab_size', 'arch', 'scan_layers'}
  got, want = block.to_dict(), preset.to_dict()
  assert {k: v for k, v in got.items() if k not in skip} == {
      k: v for k, v in want.items() if k not in skip}
  D, F = lib['embed_dim'], lib['hidden_dim']
  shapes = gemma_flax_config.Shapes(
      vocab_size=lib['num_embed'], num_layers=len(lib['attention_types']), embed_dim=D,
      num_heads=lib['num_heads'], num_kv_heads=lib['num_kv_heads'], head_dim=lib['head_dim'],
      hidden_dim=F, qk_norm=lib.get('use_qk_norm', False), post_attention_norm=True,
      post_ffw_norm=True, gating=(2, F, D) if transpose else (2, D, F))
  matched, name = gemma_flax_config.block_from_preset(shapes, 'ckpt')
  assert name == arch and matched.vocab_size == lib['num_embed'] and not matched.scan_layers
  assert gemma_flax_config.transpose_from_shapes(shapes, 'ckpt') == transpose


def copy_twin(family, tmp_path, sidecar=True):
  """The twin's Kaggle-like folder (checkpoint in tiny/), optionally without twin.json."""
  folder = tmp_path / family
  shutil.copytree(os.path.dirname(twin(family)), folder)
  if not sidecar:
    os.remove(folder / 'twin.json')
  return folder


def resave(folder, edit):
  raw = gemma_import.read_flax(str(folder / 'tiny'))
  edit(raw)
  shutil.rmtree(folder / 'tiny')
  ocp.PyTreeCheckpointer().save(os.path.abspath(folder / 'tiny'), raw)


def test_unmatched_shapes_without_sidecar_are_one_line(tmp_path):
  folder = copy_twin('gemma3', tmp_path, sidecar=False)
  with pytest.raises(ConfigError) as e:
    io.load_model(str(folder / 'tiny'))
  msg = str(e.value)
  assert '\n' not in msg and 'num_layers=3, embed_dim=64' in msg
  assert 'gemma2_2b' in msg and 'gemma3_1b' in msg and 'gemma_config.json' in msg


def test_bad_tensors_and_sidecars_are_one_line(tmp_path):
  folder = copy_twin('gemma3', tmp_path)
  ckpt = str(folder / 'tiny')

  def fails(match):
    with pytest.raises(ConfigError, match=match) as e:
      io.load_model(ckpt)
    assert '\n' not in str(e.value)

  resave(folder, lambda raw: raw.pop('transformer/layer_1/post_ffw_norm'))
  fails(r'no tensor transformer/layer_1/post_ffw_norm/scale')
  shutil.rmtree(folder)
  folder = copy_twin('gemma3', tmp_path)
  resave(folder, lambda raw: raw['transformer/layer_2/attn/kv_einsum'].update(
      w=np.zeros((2, 1, 64, 32), np.float32)))
  fails(r'transformer/layer_2/attn/kv_einsum/w has shape \(2, 1, 64, 32\); this model needs '
        r'\(2, 2, 64, 32\)')
  shutil.rmtree(folder)
  folder = copy_twin('gemma3', tmp_path)
  config = json.loads((folder / 'twin.json').read_text())
  lib = config['gemma_library_config']
  for field, value, match in [
      ('use_qk_norm', False,
       r'use_qk_norm gives qk_norm=False, but the checkpoint has qk_norm=True'),
      ('transpose_gating_einsum', False,
       r'gating_einsum of shape \(2, 64, 96\); the checkpoint has \(2, 96, 64\)'),
      ('attention_types', ['GLOBAL'] * 4, r'attention_types \(its length\) gives num_layers=4'),
      ('query_pre_attn_norm', 'BY_TWO', r'query_pre_attn_norm=.BY_TWO. is not known'),
      ('rope_theta', 1.0, r"field 'rope_theta' is not a gemma library TransformerConfig field")]:
    (folder / 'twin.json').write_text(json.dumps(dict(config, gemma_library_config=dict(
        lib, **{field: value}))))
    fails(match)


def test_gemma_v1_flax_still_goes_through_load_model(tmp_path):
  save_flax(official_tree(4, 1), str(tmp_path / 'v1'), remapped=False)
  imported = io.load_model(str(tmp_path / 'v1'))
  assert imported.source['family'] == 'gemma' and imported.cfg.num_kv_heads == 1


def test_sidecar_rule_gemma_config_json_in_the_checkpoint_folder(tmp_path):
  """gemma_config.json (library fields at the top level) inside the checkpoint folder is read
  like twin.json beside it; two sidecars in one folder are refused in one line."""
  folder = copy_twin('gemma2', tmp_path)
  lib = json.loads((folder / 'twin.json').read_text())['gemma_library_config']
  os.remove(folder / 'twin.json')
  (folder / 'tiny' / 'gemma_config.json').write_text(json.dumps(lib))
  block, source = io.read_model(str(folder / 'tiny'))
  assert source['config'].endswith(os.path.join('tiny', 'gemma_config.json'))
  assert block.to_dict() == io.read_model(hf_twin('gemma2'))[0].to_dict()
  (folder / 'tiny' / 'twin.json').write_text(json.dumps(lib))
  with pytest.raises(ConfigError, match='holds both gemma_config.json and twin.json'):
    io.read_model(str(folder / 'tiny'))
