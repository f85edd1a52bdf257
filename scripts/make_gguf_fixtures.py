"""Writes tests/fixtures/gguf/*.gguf from the Hugging Face fixtures (tests/fixtures/hf), the way
llama.cpp's convert_hf_to_gguf.py does, with gguf.GGUFWriter:

* metadata: general.architecture and the <arch>.* keys the converter writes (context length,
  sizes, head counts, head dim as key/value length, rms eps, rope base, soft-caps, sliding
  window, linear rope scaling) and the tokenizer (tokenizer.ggml.*: SentencePiece pieces,
  scores and types as model 'llama'; a tokenizer.json's vocabulary and merges as model 'gpt2');
* tensors under llama.cpp's names (gguf.TensorNameMap); Gemma 1-3 norm weights + 1; Llama's
  q/k rows permuted to interleaved pairs; Llama 3 rope scaling as the precomputed rope_freqs
  tensor; no lm_head when tied;
* F32 for every family; quantised copies (gguf.quants.quantize: Q8_0, Q4_0, Q5_0 — the types
  gguf-py can quantise; 1-D tensors stay F32 as in llama.cpp) for qwen3 and gemma.

Run: PYTHONPATH=$PWD:/path/to/gguf python scripts/make_gguf_fixtures.py
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gguf  # noqa: E402  pylint: disable=wrong-import-position

from ropex.model.io import gguf as ropex_gguf  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF = os.path.join(ROOT, 'tests', 'fixtures', 'hf')
OUT = os.path.join(ROOT, 'tests', 'fixtures', 'gguf')
ARCH = {'llama': 'llama', 'qwen2': 'qwen2', 'qwen3': 'qwen3', 'gemma': 'gemma',
        'gemma2': 'gemma2', 'gemma3_text': 'gemma3'}
QUANTISED = {'qwen3': ('Q8_0', 'Q4_0', 'Q5_0'), 'gemma': ('Q8_0',)}


def _rope(c: dict, kind: str = 'full_attention') -> dict:
  rope = c.get('rope_parameters') or {}
  return rope.get(kind, rope) if kind in rope else rope


def _metadata(w: gguf.GGUFWriter, arch: str, c: dict) -> None:
  w.add_context_length(int(c['max_position_embeddings']))
  w.add_embedding_length(int(c['hidden_size']))
  w.add_block_count(int(c['num_hidden_layers']))
  w.add_feed_forward_length(int(c['intermediate_size']))
  w.add_head_count(int(c['num_attention_heads']))
  w.add_head_count_kv(int(c['num_key_value_heads']))
  w.add_layer_norm_rms_eps(float(c['rms_norm_eps']))
  head_dim = int(c.get('head_dim') or c['hidden_size'] // c['num_attention_heads'])
  w.add_key_length(head_dim)
  w.add_value_length(head_dim)
  w.add_rope_dimension_count(head_dim)
  rope = _rope(c)
  w.add_rope_freq_base(float(rope.get('rope_theta', 10_000.0)))
  if rope.get('rope_type') == 'linear':
    w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
    w.add_rope_scaling_factor(float(rope['factor']))
  if c.get('attn_logit_softcapping'):
    w.add_attn_logit_softcapping(float(c['attn_logit_softcapping']))
  if c.get('final_logit_softcapping'):
    w.add_final_logit_softcapping(float(c['final_logit_softcapping']))
  if arch in ('gemma2', 'gemma3') and c.get('sliding_window'):
    w.add_sliding_window(int(c['sliding_window']))


def _sentencepiece_vocab(w: gguf.GGUFWriter, path: str) -> None:
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=path)
  tokens, scores, types = [], [], []
  for i in range(sp.get_piece_size()):
    tokens.append(sp.id_to_piece(i).encode('utf-8'))
    scores.append(sp.get_score(i))
    types.append(gguf.TokenType.CONTROL if sp.is_control(i) else gguf.TokenType.UNKNOWN
                 if sp.is_unknown(i) else gguf.TokenType.BYTE if sp.is_byte(i) else
                 gguf.TokenType.UNUSED if sp.is_unused(i) else gguf.TokenType.NORMAL)
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel
  proto = sentencepiece_model_pb2.ModelProto()
  with open(path, 'rb') as f:
    proto.ParseFromString(f.read())
  w.add_tokenizer_model('llama')
  w.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
  w.add_token_list(tokens)
  w.add_token_scores(scores)
  w.add_token_types(types)
  w.add_bos_token_id(sp.bos_id())
  w.add_eos_token_id(sp.eos_id())
  if sp.pad_id() >= 0:
    w.add_pad_token_id(sp.pad_id())
  if sp.unk_id() >= 0:
    w.add_unk_token_id(sp.unk_id())


def _bpe_vocab(w: gguf.GGUFWriter, path: str, c: dict) -> None:
  with open(path, encoding='utf-8') as f:
    tok = json.load(f)
  vocab = dict(tok['model']['vocab'])
  special = {t['content']: t['id'] for t in tok.get('added_tokens', [])}
  vocab.update(special)
  by_id = sorted(vocab.items(), key=lambda kv: kv[1])
  assert [i for _, i in by_id] == list(range(len(by_id))), 'vocabulary ids are not contiguous'
  merges = [m if isinstance(m, str) else ' '.join(m) for m in tok['model'].get('merges', [])]
  w.add_tokenizer_model('gpt2')
  w.add_token_list([t for t, _ in by_id])
  w.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL
                     for t, _ in by_id])
  w.add_token_merges(merges)
  w.add_bos_token_id(int(c['bos_token_id']))
  w.add_eos_token_id(int(c['eos_token_id']))


def _llama3_rope_freqs(c: dict) -> np.ndarray | None:
  rope = _rope(c)
  if rope.get('rope_type') != 'llama3':
    return None
  head_dim = int(c.get('head_dim') or c['hidden_size'] // c['num_attention_heads'])
  base, factor = float(rope['rope_theta']), float(rope['factor'])
  low, high = float(rope['low_freq_factor']), float(rope['high_freq_factor'])
  old = float(rope['original_max_position_embeddings'])
  out = []
  for freq in 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim):
    wavelen = 2 * math.pi / freq
    if wavelen < old / high:
      out.append(1.0)
    elif wavelen > old / low:
      out.append(factor)
    else:
      smooth = (old / wavelen - low) / (high - low)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, np.float32)


def _tensors(arch: str, c: dict, folder: str):
  """(GGUF name, float32 array) in llama.cpp's conventions."""
  weights = load_file(os.path.join(folder, 'model.safetensors'))
  layers = int(c['num_hidden_layers'])
  arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch)
  names = ropex_gguf.hf_to_gguf_names(gguf.get_tensor_name_map(arch_enum, layers), layers)
  shift = ropex_gguf.ARCHS[arch].norm_shift
  for hf, value in weights.items():
    if hf == 'lm_head.weight' and c.get('tie_word_embeddings'):
      continue
    value = np.asarray(value, np.float32)
    if shift and hf.endswith('norm.weight'):
      value = value + np.float32(shift)
    if ropex_gguf.ARCHS[arch].permute_qk and hf.endswith(('q_proj.weight', 'k_proj.weight')):
      n = c['num_attention_heads' if 'q_proj' in hf else 'num_key_value_heads']
      value = ropex_gguf.permute(value, int(n))
    yield names[hf], value
  freqs = _llama3_rope_freqs(c)
  if freqs is not None:
    yield 'rope_freqs.weight', freqs


def write(family: str, quant: str | None = None) -> str:
  folder = os.path.join(HF, family)
  with open(os.path.join(folder, 'config.json')) as f:
    c = json.load(f)
  arch = ARCH[c['model_type']]
  name = f'{family}.{quant}.gguf' if quant else f'{family}.gguf'
  path = os.path.join(OUT, name)
  w = gguf.GGUFWriter(path, arch)
  w.add_name(f'ropex fixture {family}')
  _metadata(w, arch, c)
  if os.path.isfile(os.path.join(folder, 'tokenizer.model')):
    _sentencepiece_vocab(w, os.path.join(folder, 'tokenizer.model'))
  else:
    _bpe_vocab(w, os.path.join(folder, 'tokenizer.json'), c)
  qtype = gguf.GGMLQuantizationType[quant] if quant else None
  for tensor_name, value in _tensors(arch, c, folder):
    if qtype is not None and value.ndim == 2:
      w.add_tensor(tensor_name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
    else:
      w.add_tensor(tensor_name, value)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def main():
  os.makedirs(OUT, exist_ok=True)
  for family in ('llama', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3'):
    print(write(family))
    for quant in QUANTISED.get(family, ()):
      print(write(family, quant))


if __name__ == '__main__':
  main()
