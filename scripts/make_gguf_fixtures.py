"""Writes tests/fixtures/gguf/*.gguf from the Hugging Face fixtures (tests/fixtures/hf), the way
llama.cpp's convert_hf_to_gguf.py does, with gguf.GGUFWriter:

* metadata: general.architecture and the <arch>.* keys the converter writes (context length,
  sizes, head counts, head dim as key/value length, rms eps, rope base, soft-caps, sliding
  window, linear rope scaling) and the tokenizer (tokenizer.ggml.*: SentencePiece pieces,
  scores and types as model 'llama'; a tokenizer.json as model 'gpt2': tokens in id order with
  their types, the pre-tokenizer's name, merges / special ids / add_bos_token through
  gguf.SpecialVocab, as the converter's _set_vocab_gpt2);
* tensors under llama.cpp's names (gguf.TensorNameMap); Gemma 1-3 norm weights + 1; Llama's
  q/k rows permuted to interleaved pairs; Llama 3 rope scaling as the precomputed rope_freqs
  tensor (float32 factors, the converter's formula); no lm_head when tied;
* Gemma 4 (llama.cpp's Gemma4Model): per-layer metadata arrays (sliding pattern, kv heads, MLP
  widths), head dims per layer type, shared-KV / per-layer-input sizes, norms unshifted,
  layer_scalar as layer_output_scale, proportional RoPE as rope_freqs (1 / 1e30 factors), the
  'gemma4' vocabulary keys (from the fixture's SentencePiece pieces: it has no tokenizer.json);
* F32 for every family; quantised copies (gguf.quants.quantize: Q8_0, Q4_0, Q5_0 — the types
  gguf-py can quantise; 1-D tensors stay F32 as in llama.cpp) for qwen3 and gemma;
* K-quantised copies of qwen3 (Q4_K, Q5_K, Q6_K: scripts/gguf_kquants.py, as `llama-quantize
  --pure`): a 2-D tensor whose rows are whole 256-value super-blocks gets the K type, any other
  llama.cpp's fallback (Q5_0, Q5_1, Q8_0). The fixture's rows (64, 96, 128) are all shorter, so
  these copies widen the MLP from 96 to 256 units without changing the function (_widened_mlp:
  new units with up_proj rows 0, so their output is exactly 0): ffn_down's rows are 256 long and
  K-quantised, and transformers' logits of the qwen3 fixture still apply;
* tests/fixtures/gguf/bpe/: vocabulary-only GGUF files of tokenizers trained here
  (scripts/make_gguf_vocab_fixtures.py, run from main() below).

Run: PYTHONPATH=$PWD python scripts/make_gguf_fixtures.py (gguf, tokenizers, sentencepiece and
safetensors: all in the main install)
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_kquants  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF = os.path.join(ROOT, 'tests', 'fixtures', 'hf')
OUT = os.path.join(ROOT, 'tests', 'fixtures', 'gguf')
ARCH = {'llama': 'llama', 'qwen2': 'qwen2', 'qwen3': 'qwen3', 'gemma': 'gemma',
        'gemma2': 'gemma2', 'gemma3_text': 'gemma3', 'gemma4_text': 'gemma4'}
QUANTISED = {'qwen3': ('Q8_0', 'Q4_0', 'Q5_0', 'Q4_K', 'Q5_K', 'Q6_K'), 'gemma': ('Q8_0',)}


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


def _bpe_vocab(w: gguf.GGUFWriter, folder: str, pre: str) -> None:
  """As the converter's ``_set_vocab_gpt2``: tokens in id order with their types (an added token:
  CONTROL if special, else USER_DEFINED; a hole: ``[PAD<i>]``, UNUSED), the pre-tokenizer's
  name, then merges, bos/eos ids and add_bos/add_eos through ``gguf.SpecialVocab``."""
  import tokenizers  # pylint: disable=import-outside-toplevel
  path = os.path.join(folder, 'tokenizer.json')
  with open(path, encoding='utf-8') as f:
    added = {t['content']: t['special'] for t in json.load(f).get('added_tokens', [])}
  vocab = tokenizers.Tokenizer.from_file(path).get_vocab(with_added_tokens=True)
  by_id = {i: t for t, i in vocab.items()}
  tokens, types = [], []
  for i in range(max(by_id) + 1):
    token = by_id.get(i, f'[PAD{i}]')
    tokens.append(token)
    types.append(gguf.TokenType.UNUSED if i not in by_id else gguf.TokenType.NORMAL
                 if token not in added else gguf.TokenType.CONTROL if added[token] else
                 gguf.TokenType.USER_DEFINED)
  w.add_tokenizer_model('gpt2')
  w.add_tokenizer_pre(pre)
  w.add_token_list(tokens)
  w.add_token_types(types)
  gguf.SpecialVocab(folder, load_merges=True).add_to_gguf(w, quiet=True)


def _llama3_rope_freqs(c: dict) -> np.ndarray | None:
  """The converter's rope_freqs: float32 frequencies, one factor per chunk (llama.cpp divides
  the frequency by it). L0 is the config's rope original_max_position_embeddings, the value
  transformers uses (the converter reads the config's top level, default 8192: the same for
  every Llama 3.x release, not for this fixture's 64)."""
  rope = _rope(c)
  if rope.get('rope_type') != 'llama3':
    return None
  head_dim = int(c.get('head_dim') or c['hidden_size'] // c['num_attention_heads'])
  return converter_rope_freqs(float(rope['rope_theta']), head_dim, float(rope['factor']),
                              float(rope['low_freq_factor']), float(rope['high_freq_factor']),
                              float(rope['original_max_position_embeddings']))


def converter_rope_freqs(theta: float, head_dim: int, factor: float, low: float, high: float,
                         original: float) -> np.ndarray:
  """llama.cpp's convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors): float32
  frequencies, one float32 factor per chunk (also the reference of
  tests/model/io/test_io_gguf_rope.py)."""
  freqs = (1.0 / np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32)
                                       / np.float32(head_dim))).astype(np.float32)
  out = []
  for freq in freqs:
    wavelen = 2 * math.pi / float(freq)
    if wavelen < original / high:
      out.append(1.0)
    elif wavelen > original / low:
      out.append(factor)
    else:
      smooth = (original / wavelen - low) / (high - low)
      out.append(1 / ((1 - smooth) / factor + smooth))
  return np.asarray(out, np.float32)


def _widened_mlp(weights: dict, width: int) -> dict:
  """The MLP widened to ``width`` units with the same function: new unit k repeats gate_proj row
  k mod F and down_proj column k mod F (F: the checkpoint's units) and has an up_proj row of 0,
  so silu(gate) * up is exactly 0 for it. A no-op for an MLP at least ``width`` wide (Gemma 4's
  double-wide layers)."""
  out = dict(weights)
  for name, w in weights.items():
    if name.endswith(('gate_proj.weight', 'up_proj.weight')) and w.shape[0] < width:
      rows = w[np.arange(width) % w.shape[0]]
      out[name] = rows if 'gate' in name else np.concatenate(
          [w, np.zeros((width - w.shape[0], w.shape[1]), w.dtype)])
    elif name.endswith('down_proj.weight') and w.shape[1] < width:
      out[name] = w[:, np.arange(width) % w.shape[1]]
  return out


def _quantised(value: np.ndarray, quant: str):
  """(bytes, type) of a 2-D tensor: a K type where its rows are whole super-blocks, else
  llama.cpp's fallback for the K type (llama-quant.cpp); other types through gguf-py."""
  if quant in gguf_kquants.FALLBACK and value.shape[-1] % gguf_kquants.QK_K == 0:
    return gguf_kquants.quantize(value, quant), gguf.GGMLQuantizationType[quant]
  qtype = gguf.GGMLQuantizationType[gguf_kquants.FALLBACK.get(quant, quant)]
  return gguf.quants.quantize(value, qtype), qtype


def gemma4_rope_freqs(c: dict) -> np.ndarray:
  """llama.cpp's Gemma4Model.generate_extra_tensors: the full layers' proportional RoPE as
  factors, global_head_dim * p / 2 of 1.0 then 1e30 (pairs that do not rotate)."""
  head_dim = int(c['global_head_dim'])
  rotated = int(head_dim * float(_rope(c)['partial_rotary_factor']) / 2)
  return np.asarray([1.0] * rotated + [1e30] * (head_dim // 2 - rotated), np.float32)


def _gemma4_metadata(w: gguf.GGUFWriter, c: dict) -> None:
  """The final values of llama.cpp's TextModel -> Gemma3Model -> Gemma4Model
  set_gguf_parameters chain (each key once; the converter writes some twice, the last wins)."""
  L, shared = int(c['num_hidden_layers']), int(c['num_kv_shared_layers'])
  swa = [t == 'sliding_attention' for t in c['layer_types']]
  n_ff = int(c['intermediate_size'])
  w.add_context_length(int(c['max_position_embeddings']))
  w.add_embedding_length(int(c['hidden_size']))
  w.add_block_count(L)
  w.add_feed_forward_length([n_ff if i < L - shared else 2 * n_ff for i in range(L)]
                            if c.get('use_double_wide_mlp') else n_ff)
  w.add_head_count(int(c['num_attention_heads']))
  kv, kv_full = int(c['num_key_value_heads']), c.get('num_global_key_value_heads')
  w.add_head_count_kv(kv if kv_full is None else [kv if s else int(kv_full) for s in swa])
  w.add_rope_freq_base(float(_rope(c)['rope_theta']))
  w.add_rope_freq_base_swa(float(_rope(c, 'sliding_attention')['rope_theta']))
  w.add_layer_norm_rms_eps(float(c['rms_norm_eps']))
  w.add_key_length(int(c['global_head_dim']))
  w.add_value_length(int(c['global_head_dim']))
  if c.get('final_logit_softcapping'):
    w.add_final_logit_softcapping(float(c['final_logit_softcapping']))
  w.add_sliding_window(int(c['sliding_window']))
  w.add_shared_kv_layers(shared)
  w.add_embedding_length_per_layer_input(int(c.get('hidden_size_per_layer_input') or 0))
  w.add_sliding_window_pattern(swa)
  w.add_key_length_swa(int(c['head_dim']))
  w.add_value_length_swa(int(c['head_dim']))
  w.add_rope_dimension_count(int(c['global_head_dim']))
  w.add_rope_dimension_count_swa(int(c['head_dim']))   # x the top-level partial factor: 1


def _gemma4_vocab(w: gguf.GGUFWriter, path: str) -> None:
  """Gemma4Model.set_vocab's keys (model 'gemma4', tokens, scores, types, special ids, no space
  prefix, bos added) for the fixture's SentencePiece pieces: the HF fixture has no
  tokenizer.json, so no merges (llama.cpp's gemma4 vocabulary is merge-ranked BPE)."""
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  sp = spm.SentencePieceProcessor(model_file=path)
  pieces = range(sp.get_piece_size())
  w.add_tokenizer_model('gemma4')
  w.add_token_list([sp.id_to_piece(i).encode('utf-8') for i in pieces])
  w.add_token_scores([sp.get_score(i) for i in pieces])
  w.add_token_types([gguf.TokenType.CONTROL if sp.is_control(i) else gguf.TokenType.UNKNOWN
                     if sp.is_unknown(i) else gguf.TokenType.BYTE if sp.is_byte(i) else
                     gguf.TokenType.NORMAL for i in pieces])
  w.add_bos_token_id(sp.bos_id())
  w.add_eos_token_id(sp.eos_id())
  w.add_pad_token_id(sp.pad_id())
  w.add_unk_token_id(sp.unk_id())
  w.add_add_space_prefix(False)
  w.add_add_bos_token(True)


def _tensors(arch: str, c: dict, folder: str):
  """(GGUF name, float32 array) in llama.cpp's conventions."""
  weights = _widened_mlp(load_file(os.path.join(folder, 'model.safetensors')),
                         int(c['intermediate_size']))
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
  freqs = _llama3_rope_freqs(c) if arch != 'gemma4' else gemma4_rope_freqs(c)
  if freqs is not None:
    yield 'rope_freqs.weight', freqs


def _vocab(w: gguf.GGUFWriter, folder: str) -> None:
  if os.path.isfile(os.path.join(folder, 'tokenizer.model')):
    _sentencepiece_vocab(w, os.path.join(folder, 'tokenizer.model'))
  else:   # the fixtures' tokenizer.json split with GPT-2's ByteLevel regex: llama.cpp's 'gpt-2'
    _bpe_vocab(w, folder, 'gpt-2')


def write(family: str, quant: str | None = None) -> str:
  folder = os.path.join(HF, family)
  with open(os.path.join(folder, 'config.json')) as f:
    c = json.load(f)
  if quant in gguf_kquants.FALLBACK:   # rows of ffn_down: whole K-quant super-blocks
    c = dict(c, intermediate_size=gguf_kquants.QK_K)
  arch = ARCH[c['model_type']]
  name = f'{family}.{quant}.gguf' if quant else f'{family}.gguf'
  path = os.path.join(OUT, name)
  w = gguf.GGUFWriter(path, arch)
  w.add_name(f'ropex fixture {family}')
  if arch == 'gemma4':   # per-layer keys and llama.cpp's 'gemma4' vocabulary
    _gemma4_metadata(w, c)
    _gemma4_vocab(w, os.path.join(folder, 'tokenizer.model'))
  else:
    _metadata(w, arch, c)
    _vocab(w, folder)
  for tensor_name, value in _tensors(arch, c, folder):
    if quant and value.ndim == 2:
      data, qtype = _quantised(value, quant)
      w.add_tensor(tensor_name, data, raw_dtype=qtype)
    else:
      w.add_tensor(tensor_name, value)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def main():
  os.makedirs(OUT, exist_ok=True)
  for family in ('llama', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3', 'gemma4'):
    print(write(family))
    for quant in QUANTISED.get(family, ()):
      print(write(family, quant))
  import make_gguf_vocab_fixtures  # pylint: disable=import-outside-toplevel
  for pre in make_gguf_vocab_fixtures.BPE_FIXTURES:
    print(make_gguf_vocab_fixtures.write_bpe_fixture(pre))
  for name in make_gguf_vocab_fixtures.SP_BPE_FIXTURES:
    print(make_gguf_vocab_fixtures.write_sp_bpe_fixture(name))


if __name__ == '__main__':
  main()
