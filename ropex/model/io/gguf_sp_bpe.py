"""A GGUF ``gemma4`` vocabulary (Gemma 4: merge-ranked BPE over raw UTF-8 text, ``▁`` for a
space) rebuilt as a real ``tokenizers`` tokenizer, serialised as a ``tokenizer.json`` in memory.

llama.cpp's converter (``Gemma4Model.set_vocab``) writes it from the published
``tokenizer.json`` through ``gguf.LlamaHfVocab`` (which takes only a BPE model with byte fallback
and a ``Sequence`` decoder): the tokens in id order (``▁`` spelled, ``<0xNN>`` byte tokens of
type BYTE, special ids CONTROL, the chat-channel tokens USER_DEFINED), placeholder scores, the
merges (``'a b'`` strings in rank order), bos / eos / unk / pad ids, ``add_space_prefix`` false
and ``add_bos_token`` true. The pipeline of that ``tokenizer.json`` (transformers'
``GemmaConverter``: Gemma's SentencePiece model as a ``tokenizers`` BPE) is:

* normaliser ``Replace(' ', '▁')`` (no dummy prefix, no other normalisation);
* pre-tokenizer ``Split(' ', merged_with_previous)`` (after the normaliser there is no space
  left: the merges run over the whole text);
* BPE of the tokens and merges, ``byte_fallback`` (a character no token holds becomes its UTF-8
  bytes as ``<0xNN>`` tokens), ``fuse_unk``, ``<unk>`` the file's unknown token;
* decoder ``Replace('▁', ' ')``, ``ByteFallback``, ``Fuse``;
* bos before every text (``add_bos_token``); control tokens as special added tokens,
  user-defined ones as plain added tokens (rendered when decoding, as llama.cpp does).

Byte fallback is on when the vocabulary has BYTE tokens (every published Gemma vocabulary
has the 256). Without ``tokenizer.ggml.merges`` the merge order is unknown (scores are
placeholders), so there is nothing to rebuild from: :func:`missing` says so and the import has
no tokenizer (llama.cpp refuses such a file too).
"""

from __future__ import annotations

from ropex.model.io import gguf_bpe

SPACE = '\u2581'   # SentencePiece's space
_BYTE = 6


def missing(reader) -> str | None:
  """Why the file's ``gemma4`` vocabulary cannot be rebuilt (None: it can)."""
  if not reader.field('tokenizer.ggml.merges'):
    return ("tokenizer.ggml.model='gemma4' has no tokenizer.ggml.merges: its merge order is "
            'not in the file, so the tokenizer cannot be rebuilt; convert the model with its '
            'tokenizer.json (llama.cpp writes the merges)')
  return None


def tokenizer_json(reader) -> str:
  """The ``tokenizer.json`` text of the file's ``gemma4`` vocabulary."""
  # pylint: disable=g-import-not-at-top
  import tokenizers
  from tokenizers import decoders, models, normalizers, pre_tokenizers
  # pylint: enable=g-import-not-at-top
  tokens = list(reader.field('tokenizer.ggml.tokens'))
  types = [int(t) for t in reader.field('tokenizer.ggml.token_type') or [1] * len(tokens)]
  unk = reader.field('tokenizer.ggml.unknown_token_id')
  bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                   merges=[gguf_bpe.pair(m) for m in reader.field('tokenizer.ggml.merges')],
                   unk_token=None if unk is None else tokens[int(unk)], fuse_unk=True,
                   byte_fallback=_BYTE in types)
  tok = tokenizers.Tokenizer(bpe)
  tok.normalizer = normalizers.Replace(' ', SPACE)
  tok.pre_tokenizer = pre_tokenizers.Split(' ', 'merged_with_previous')
  tok.decoder = decoders.Sequence([decoders.Replace(SPACE, ' '), decoders.ByteFallback(),
                                   decoders.Fuse()])
  gguf_bpe.add_file_tokens(tok, reader, tokens, default_bos=True)
  return tok.to_str()
