"""The committed reference fixtures (tests/fixtures/hf, scripts/make_hf_fixtures.py) are complete
and self-consistent: every tensor the family's transformers layout needs is there with the shape
config.json implies, every weight was perturbed away from its structured init, the goldens have
the documented shapes, and the Gemma tokenizer reproduces the committed input ids.

No torch, no transformers: this only reads the files, so a broken regeneration fails here in the
fast suite.  Whether the goldens are transformers' own logits is checked by tests/hf_live (opt-in).
"""
import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import sentencepiece as spm

HF_ROOT = Path(__file__).resolve().parents[1] / 'fixtures' / 'hf'
SUMMARY = json.loads((HF_ROOT / 'fixtures.json').read_text())
FAMILIES = sorted(SUMMARY['families'])
GEMMA = ('gemma', 'gemma2', 'gemma3', 'gemma4')


def load_tensors(directory):
  """All tensors of a checkpoint directory, single-file or sharded (index.json)."""
  index = directory / 'model.safetensors.index.json'
  if not index.exists():
    return safetensors.numpy.load_file(directory / 'model.safetensors')
  weight_map = json.loads(index.read_text())['weight_map']
  tensors = {}
  for shard in sorted(set(weight_map.values())):
    loaded = safetensors.numpy.load_file(directory / shard)
    assert {n for n, s in weight_map.items() if s == shard} == set(loaded), shard
    tensors.update(loaded)
  return tensors


def layer_geometry(config, i):
  """(head_dim, kv_heads, has_k, has_v, mlp width) of layer i as transformers builds it."""
  layer_types = config.get('layer_types') or ['full_attention'] * config['num_hidden_layers']
  full = layer_types[i] == 'full_attention'
  head_dim = config.get('head_dim') or config['hidden_size'] // config['num_attention_heads']
  kv_heads = config['num_key_value_heads']
  if config['model_type'] != 'gemma4_text':
    return head_dim, kv_heads, True, True, config['intermediate_size']
  if full:
    head_dim = config['global_head_dim']
    if config['attention_k_eq_v']:
      kv_heads = config['num_global_key_value_heads']
  shared = i >= config['num_hidden_layers'] - config['num_kv_shared_layers']
  width = config['intermediate_size'] * (2 if shared and config['use_double_wide_mlp'] else 1)
  has_v = not shared and not (full and config['attention_k_eq_v'])
  return head_dim, kv_heads, not shared, has_v, width


def expected_shapes(config):
  """Tensor name -> shape for the family's transformers checkpoint layout."""
  d, n, v = config['hidden_size'], config['num_attention_heads'], config['vocab_size']
  shapes = {'model.embed_tokens.weight': (v, d), 'model.norm.weight': (d,)}
  if not config['tie_word_embeddings']:
    shapes['lm_head.weight'] = (v, d)
  qk_norm = config['model_type'] in ('qwen3', 'gemma3_text', 'gemma4_text')
  norms = ['input_layernorm', 'post_attention_layernorm']
  if config['model_type'] in ('gemma2', 'gemma3_text', 'gemma4_text'):
    norms += ['pre_feedforward_layernorm', 'post_feedforward_layernorm']
  for i in range(config['num_hidden_layers']):
    p = f'model.layers.{i}.'
    h, k, has_k, has_v, f = layer_geometry(config, i)
    shapes.update({p + 'self_attn.q_proj.weight': (n * h, d),
                   p + 'self_attn.o_proj.weight': (d, n * h),
                   p + 'mlp.gate_proj.weight': (f, d), p + 'mlp.up_proj.weight': (f, d),
                   p + 'mlp.down_proj.weight': (d, f)})
    shapes.update({p + name + '.weight': (d,) for name in norms})
    if has_k:
      shapes[p + 'self_attn.k_proj.weight'] = (k * h, d)
    if has_v:
      shapes[p + 'self_attn.v_proj.weight'] = (k * h, d)
    if config['model_type'] == 'qwen2':
      shapes.update({p + 'self_attn.q_proj.bias': (n * h,), p + 'self_attn.k_proj.bias': (k * h,),
                     p + 'self_attn.v_proj.bias': (k * h,)})
    if qk_norm:
      shapes[p + 'self_attn.q_norm.weight'] = (h,)
      if has_k:
        shapes[p + 'self_attn.k_norm.weight'] = (h,)
    if config['model_type'] == 'gemma4_text':
      e = config['hidden_size_per_layer_input']
      shapes.update({p + 'layer_scalar': (1,), p + 'per_layer_input_gate.weight': (e, d),
                     p + 'per_layer_projection.weight': (d, e),
                     p + 'post_per_layer_input_norm.weight': (d,)})
  if config['model_type'] == 'gemma4_text':
    e, layers = config['hidden_size_per_layer_input'], config['num_hidden_layers']
    shapes.update({
        'model.embed_tokens_per_layer.weight': (config['vocab_size_per_layer_input'], layers * e),
        'model.per_layer_model_projection.weight': (layers * e, d),
        'model.per_layer_projection_norm.weight': (e,)})
  return shapes


def test_summary_lists_every_family_directory():
  dirs = {p.name for p in HF_ROOT.iterdir() if p.is_dir()}
  assert dirs == set(FAMILIES) | {'qwen2_sharded'}
  assert set(FAMILIES) == {'llama', 'qwen2', 'qwen3'} | set(GEMMA)
  assert SUMMARY['transformers'].startswith('5.') and SUMMARY['torch']


@pytest.mark.parametrize('family', FAMILIES)
def test_safetensors_match_config(family):
  config = json.loads((HF_ROOT / family / 'config.json').read_text())
  tensors = load_tensors(HF_ROOT / family)
  assert {n: t.shape for n, t in tensors.items()} == expected_shapes(config)
  for name, tensor in tensors.items():
    assert tensor.dtype == np.float32 and np.isfinite(tensor).all(), name
    # Perturbed: no tensor kept a constant init (norms at 0 or 1, layer_scalar at 1).
    assert tensor.size == 1 or tensor.std() > 0.05, name
    assert tensor.size > 1 or tensor.item() != 1.0, name


def test_sharded_copy_equals_qwen2():
  index = json.loads((HF_ROOT / 'qwen2_sharded' / 'model.safetensors.index.json').read_text())
  assert len(set(index['weight_map'].values())) >= 2
  sharded, single = load_tensors(HF_ROOT / 'qwen2_sharded'), load_tensors(HF_ROOT / 'qwen2')
  assert sharded.keys() == single.keys()
  for name in single:
    np.testing.assert_array_equal(sharded[name], single[name], err_msg=name)
  config = lambda d: (HF_ROOT / d / 'config.json').read_text()
  assert config('qwen2_sharded') == config('qwen2')


@pytest.mark.parametrize('family', FAMILIES)
def test_golden_shapes_and_consistency(family):
  config = json.loads((HF_ROOT / family / 'config.json').read_text())
  golden = np.load(HF_ROOT / family / 'golden.npz')
  ids, logits, bf16 = golden['input_ids'], golden['logits'], golden['logits_bf16']
  t, v = SUMMARY['seq_len'], config['vocab_size']
  assert ids.shape == (2, t) and ids.min() >= 0 and ids.max() < v
  if 'sliding_attention' in (config.get('layer_types') or []):
    assert config['sliding_window'] < t  # the window really cuts the test input
  assert logits.shape == bf16.shape == (2, t, v) and logits.dtype == np.float32
  assert np.isfinite(logits).all() and np.isfinite(bf16).all()
  np.testing.assert_array_equal(golden['greedy'], logits.argmax(-1))
  stats = SUMMARY['families'][family]
  bf16_error = np.abs(bf16.astype(np.float32) - logits).max()
  assert bf16_error == pytest.approx(stats['bf16_max_abs_diff'], abs=1e-6)
  # Each recorded misreading (no soft-cap, no window, w for 1+w, ...) moves the logits far
  # beyond float32 noise, so the goldens tell a right import from a wrong one.
  assert stats['feature_effects'] and min(stats['feature_effects'].values()) > 0.05
  if config.get('final_logit_softcapping'):
    assert np.abs(logits).max() < config['final_logit_softcapping']


@pytest.mark.parametrize('family', GEMMA)
def test_gemma_tokenizer_reproduces_input_ids(family):
  config = json.loads((HF_ROOT / family / 'config.json').read_text())
  sp = spm.SentencePieceProcessor(model_file=str(HF_ROOT / family / 'tokenizer.model'))
  assert sp.get_piece_size() == config['vocab_size']
  assert (sp.pad_id(), sp.eos_id(), sp.bos_id()) == (config['pad_token_id'], config['eos_token_id'],
                                                     config['bos_token_id'])
  ids = np.load(HF_ROOT / family / 'golden.npz')['input_ids']
  expected = [sp.bos_id()] + sp.encode(SUMMARY['sentence'])
  np.testing.assert_array_equal(ids[0], expected[:SUMMARY['seq_len']])


@pytest.mark.parametrize('family', ('llama', 'qwen2', 'qwen3'))
def test_bpe_tokenizer_vocab_matches_model(family):
  config = json.loads((HF_ROOT / family / 'config.json').read_text())
  tokenizer = json.loads((HF_ROOT / family / 'tokenizer.json').read_text())
  ids = set(tokenizer['model']['vocab'].values()) | {t['id'] for t in tokenizer['added_tokens']}
  assert ids == set(range(config['vocab_size']))
  assert tokenizer['pre_tokenizer']['type'] == 'ByteLevel'


@pytest.mark.parametrize('family', sorted(set(FAMILIES) - {'gemma4'}))
def test_hub_config_is_the_v4_form_of_config_json(family):
  """config.hub.json: the transformers 4.x form the family's Hub releases carry; every field
  but the RoPE / layer-type / dtype ones equals config.json's."""
  v5 = json.loads((HF_ROOT / family / 'config.json').read_text())
  v4 = json.loads((HF_ROOT / family / 'config.hub.json').read_text())
  assert 'rope_parameters' not in v4 and 'layer_types' not in v4 and 'rope_theta' in v4
  changed = {'rope_parameters', 'layer_types', 'dtype', 'torch_dtype', 'rope_theta',
             'rope_scaling', 'rope_local_base_freq', 'sliding_window_pattern'}
  same = lambda c: {k: v for k, v in c.items() if k not in changed and not k.startswith('_')}
  assert same(v4) == same(v5)
  rope = v5['rope_parameters'].get('full_attention', v5['rope_parameters'])
  assert v4['rope_theta'] == rope['rope_theta']
  assert (v4['rope_scaling'] or {'rope_type': 'default'})['rope_type'] == rope['rope_type']
