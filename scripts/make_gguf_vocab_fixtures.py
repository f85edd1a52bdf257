"""The vocabulary-only GGUF fixtures of tests/fixtures/gguf/bpe/ (run by
scripts/make_gguf_fixtures.py): tokenizers trained here with the tokenizers library, each saved
as the reference tokenizer.json and written as llama.cpp's converter writes its vocabulary:

* byte-level BPE in Llama 3's and Qwen 2's tokenizer.json pipelines (model 'gpt2', pre-tokenizer
  names llama-bpe, qwen2; the converter's _set_vocab_gpt2);
* a Gemma 4 style BPE ('\u2581' for spaces, byte fallback) in Gemma's tokenizer.json pipeline
  (model 'gemma4', as Gemma4Model.set_vocab writes it).
"""

from __future__ import annotations

import json
import os
import re
import string

import gguf

from make_gguf_fixtures import OUT, _bpe_vocab  # pylint: disable=protected-access


# Byte-level BPE tokenizers trained here with the tokenizers library in the pipeline of the
# published tokenizer.json of their family (regexes as transformers writes them: Llama 3's
# TikTokenConverter pattern, Qwen 2's PRETOKENIZE_REGEX), saved as the reference tokenizer.json,
# then written as llama.cpp's converter writes a GGUF vocabulary (vocab only, no tensors).
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BPE_FIXTURES = {   # llama.cpp pre name: (arch, regex, NFC, ignore_merges, special tokens, bos)
    'llama-bpe': ('llama', _LLAMA3_REGEX, False, True,
                  ['<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>'], '<|begin_of_text|>'),
    'qwen2': ('qwen2', _QWEN2_REGEX, True, False,
              ['<|endoftext|>', '<|im_start|>', '<|im_end|>'], None),
}
CORPUS = [
    "I'm sure they'll say it's fine; we've been here before, you'd think. DON'T they KNOW?",
    "The café served crème brûlée and a naïve piñata in 2023, then 1999 and 42 more in 7 days.",
    "Prices: 3 apples for 12 dollars, 128 pears, 4096 plums, 31415 figs, 271828 dates.",
    "def main():\n    x = [1, 2, 3]\n    return {'key': x, \"n\": 100}\n\n",
    "Ünïcödé text — 日本語のテキストです。 Ελληνικά γράμματα, русский язык, עברית.",
    "Emoji 🚀🦙 ✅ 👍🏽 😶\u200d🌫️ and tabs\tand  double  spaces   triple\r\nnew lines\n\n\n.",
    "She said: \"What's the plan?\" He'd answered: \"We'll see, I've no idea.\"",
    "Numbers 0 1 22 333 4444 55555 666666 in 2024-06-30 at 12:45:07, +3.14 and -2.71.",
] * 4


def _trained_bpe(regex: str, nfc: bool, ignore_merges: bool, special: list, bos):
  # pylint: disable=import-outside-toplevel
  import tokenizers
  from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
  # pylint: enable=import-outside-toplevel
  tok = tokenizers.Tokenizer(models.BPE())
  if nfc:
    tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(regex), behavior='isolated', invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=420, special_tokens=special, show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.model.ignore_merges = ignore_merges
  if ignore_merges:   # a whole-word token no merge reaches, as tiktoken-made vocabularies (Llama
    spec = json.loads(tok.to_str())   # 3's) have: only ignore_merges encodes ' ropex' as it
    spec['model']['vocab']['Ġropex'] = max(spec['model']['vocab'].values()) + 1
    tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
  if bos is not None:
    tok.post_processor = processors.TemplateProcessing(
        single=f'{bos} $A', pair=f'{bos} $A {bos}:1 $B:1',
        special_tokens=[(bos, tok.token_to_id(bos))])
  return tok


def write_bpe_fixture(pre: str) -> str:
  """tests/fixtures/gguf/bpe/<pre>/ (the reference tokenizer.json, tokenizer_config.json,
  config.json with the special ids) and tests/fixtures/gguf/bpe/<pre>.gguf (its vocabulary)."""
  arch, regex, nfc, ignore_merges, special, bos = BPE_FIXTURES[pre]
  tok = _trained_bpe(regex, nfc, ignore_merges, special, bos)
  folder = os.path.join(OUT, 'bpe', pre)
  os.makedirs(folder, exist_ok=True)
  tok.save(os.path.join(folder, 'tokenizer.json'))
  eos = special[1] if bos else special[0]
  with open(os.path.join(folder, 'tokenizer_config.json'), 'w') as f:
    json.dump({'bos_token': bos, 'eos_token': eos}, f, indent=1)
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump({'bos_token_id': None if bos is None else tok.token_to_id(bos),
               'eos_token_id': tok.token_to_id(eos)}, f, indent=1)
  path = os.path.join(OUT, 'bpe', f'{pre}.gguf')
  w = gguf.GGUFWriter(path, arch)
  w.add_name(f'ropex fixture {pre} vocabulary')
  _bpe_vocab(w, folder, pre)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


# A Gemma 4 style vocabulary: BPE over raw UTF-8 with '▁' for spaces, trained here in the
# pipeline transformers' GemmaConverter writes into Gemma's tokenizer.json, with Gemma's special
# tokens first, the 256 <0xNN> byte tokens after them (byte fallback), a fixed small alphabet
# (ASCII without H, Q, X, Z, plus é è û: other characters need the bytes); written as llama.cpp's
# Gemma4Model.set_vocab writes it.
# name: (arch, special tokens (CONTROL), the visible one among them (USER_DEFINED))
SP_BPE_FIXTURES = {'gemma4': ('gemma4', ['<pad>', '<eos>', '<bos>', '<unk>', '<mask>',
                                         '<|turn>', '<turn|>', '<|channel>'], '<|channel>')}


def _trained_sp_bpe(special: list):
  """A BPE trained on CORPUS (its fixed alphabet; newline runs apart from the other text, as in
  Gemma's vocabulary, which llama.cpp's newline pre-split relies on) in GemmaConverter's
  pipeline, rebuilt with the special tokens first (ids 0..), then the 256 byte tokens, then
  the trained tokens; bos before every text."""
  # pylint: disable=import-outside-toplevel
  import tokenizers
  from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
  # pylint: enable=import-outside-toplevel

  def pipeline(t):   # GemmaConverter's normalizer, pre-tokenizer and decoder
    t.normalizer = normalizers.Replace(' ', '\u2581')
    t.pre_tokenizer = pre_tokenizers.Split(' ', 'merged_with_previous')
    t.decoder = decoders.Sequence([decoders.Replace('\u2581', ' '), decoders.ByteFallback(),
                                   decoders.Fuse()])

  trained = tokenizers.Tokenizer(models.BPE())
  pipeline(trained)
  alphabet = set(string.ascii_letters + string.digits + string.punctuation + ' \n\t') - set(
      'HQqXxZz') | set('éèû')   # a fixed alphabet (limit_alphabet breaks ties at random)
  runs = [r for line in CORPUS for r in re.findall(r'[^\n]+|\n+', line)]   # no token mixes
  trained.train_from_iterator([''.join(c for c in r if c in alphabet) for r in runs],  # newlines
                              trainers.BpeTrainer(vocab_size=360, show_progress=False))
  model = json.loads(trained.to_str())['model']
  vocab = special + [f'<0x{b:02X}>' for b in range(256)] + sorted(
      model['vocab'], key=model['vocab'].get)
  tok = tokenizers.Tokenizer(models.BPE(
      vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m) for m in model['merges']],
      unk_token='<unk>', fuse_unk=True, byte_fallback=True))
  pipeline(tok)
  tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                          for t in special])
  tok.post_processor = processors.TemplateProcessing(
      single='<bos> $A', pair='<bos> $A <bos>:1 $B:1', special_tokens=[('<bos>', 2)])
  return tok, vocab


def write_sp_bpe_fixture(name: str) -> str:
  """tests/fixtures/gguf/bpe/<name>/ (reference tokenizer.json, tokenizer_config.json,
  config.json) and tests/fixtures/gguf/bpe/<name>.gguf: its vocabulary as Gemma4Model.set_vocab
  writes it (gguf.LlamaHfVocab's tokens, -1000 scores, BYTE / CONTROL / NORMAL types, the
  visible token USER_DEFINED; merges and special ids through gguf.SpecialVocab). LlamaHfVocab
  itself needs transformers: tests/hf_live/test_gguf_gemma4_vocab_live.py checks that it reads
  this folder to the same tokens, scores and types."""
  arch, special, visible = SP_BPE_FIXTURES[name]
  tok, vocab = _trained_sp_bpe(special)
  folder = os.path.join(OUT, 'bpe', name)
  os.makedirs(folder, exist_ok=True)
  tok.save(os.path.join(folder, 'tokenizer.json'))
  with open(os.path.join(folder, 'tokenizer_config.json'), 'w') as f:
    json.dump({'bos_token': '<bos>', 'eos_token': '<eos>', 'unk_token': '<unk>',
               'pad_token': '<pad>', 'mask_token': '<mask>', 'extra_special_tokens': special[5:],
               'add_bos_token': True}, f, indent=1)
  with open(os.path.join(folder, 'config.json'), 'w') as f:
    json.dump({'bos_token_id': 2, 'eos_token_id': 1, 'pad_token_id': 0}, f, indent=1)
  path = os.path.join(OUT, 'bpe', f'{name}.gguf')
  w = gguf.GGUFWriter(path, arch)
  w.add_name(f'ropex fixture {name} vocabulary')
  w.add_tokenizer_model(name)
  w.add_token_list(vocab)
  w.add_token_scores([-1000.0] * len(vocab))
  w.add_token_types([gguf.TokenType.USER_DEFINED if t == visible else gguf.TokenType.CONTROL
                     if t in special else gguf.TokenType.BYTE if t.startswith('<0x') else
                     gguf.TokenType.NORMAL for t in vocab])
  gguf.SpecialVocab(folder, load_merges=True).add_to_gguf(w, quiet=True)
  w.add_add_space_prefix(False)
  w.add_add_bos_token(True)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path
