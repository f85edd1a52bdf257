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
