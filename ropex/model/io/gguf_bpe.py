"""A GGUF ``gpt2`` vocabulary (byte-level BPE: Llama 3, Qwen 2/3, GPT-2) rebuilt as a real
``tokenizers`` tokenizer, serialised as a ``tokenizer.json`` in memory.

The file holds the tokens in id order (byte-level spelled, ``Ġ`` for a space), their types
(``tokenizer.ggml.token_type``: 3 control, 4 user-defined), the merges (``'a b'`` strings, in
rank order; llama.cpp splits each at its first space after the first character), the bos / eos
ids, ``add_bos_token`` / ``add_eos_token``, and the name of the pre-tokenizer
(``tokenizer.ggml.pre``), whose regex llama.cpp keeps in C++ (``llama-vocab.cpp``). Each name
ropex reads becomes the pipeline of the published ``tokenizer.json`` of its family:

* ``llama-bpe`` (what the converter writes for Llama 3.x; ``llama3`` and ``llama-v3`` are
  llama.cpp's aliases): ``Split`` (isolated) with Llama 3's regex (digit runs of 1-3), then
  ``ByteLevel`` without its own regex; BPE with ``ignore_merges`` (a whole pre-token in the
  vocabulary is one token); bos added (llama.cpp's default for the name, unless the file says).
* ``qwen2`` (Qwen 2, 2.5, 3): NFC normalisation, ``Split`` with Qwen 2's regex (single
  digits), ``ByteLevel``; no bos. (llama.cpp itself does not NFC-normalise.)
* ``gpt-2``: ``ByteLevel`` with GPT-2's own regex.

Regex strings are the ones transformers' ``TikTokenConverter`` (Llama 3) and
``tokenization_qwen2.PRETOKENIZE_REGEX`` write into those files; llama.cpp runs the same
expressions (case-insensitive contractions spelled out). Control tokens are special added
tokens (matched whole in text, skipped when decoding), user-defined ones plain added tokens; the
decoder is ``ByteLevel``. Any other ``tokenizer.ggml.pre`` (or none: llama.cpp would then fall
back to a regex no published tokenizer uses) is a :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses

from ropex.errors import ConfigError

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_CONTROL, _USER_DEFINED = 3, 4


@dataclasses.dataclass(frozen=True)
class Pre:
  """What a ``tokenizer.ggml.pre`` name stands for in the family's ``tokenizer.json``."""
  split: str | None               # Split regex before ByteLevel (None: ByteLevel's GPT-2 regex)
  nfc: bool = False               # NFC normaliser
  ignore_merges: bool = False     # BPE keeps a pre-token found whole in the vocabulary
  add_bos: bool = False           # llama.cpp's default where the file has no add_bos_token


_LLAMA3 = Pre(LLAMA3_SPLIT, ignore_merges=True, add_bos=True)
PRES = {'llama-bpe': _LLAMA3, 'llama3': _LLAMA3, 'llama-v3': _LLAMA3,
        'qwen2': Pre(QWEN2_SPLIT, nfc=True), 'gpt-2': Pre(None)}


def pre_of(reader) -> tuple[str, Pre]:
  name = reader.field('tokenizer.ggml.pre')
  if name not in PRES:
    raise ConfigError(f'{reader.path}: tokenizer.ggml.pre={name!r} is not a byte-level BPE '
                      f'pre-tokenizer ropex rebuilds; allowed: {", ".join(PRES)}')
  return name, PRES[name]


def tokenizer_json(reader) -> str:
  """The ``tokenizer.json`` text of the file's ``gpt2`` vocabulary."""
  # pylint: disable=g-import-not-at-top
  import tokenizers
  from tokenizers import decoders, models, normalizers, pre_tokenizers
  # pylint: enable=g-import-not-at-top
  _, pre = pre_of(reader)
  tokens = list(reader.field('tokenizer.ggml.tokens'))
  merges = [pair(m) for m in reader.field('tokenizer.ggml.merges') or []]
  bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                   ignore_merges=pre.ignore_merges, fuse_unk=False, byte_fallback=False)
  tok = tokenizers.Tokenizer(bpe)
  if pre.nfc:
    tok.normalizer = normalizers.NFC()
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre.split is None)
  tok.pre_tokenizer = byte_level if pre.split is None else pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(pre.split), behavior='isolated', invert=False),
      byte_level])
  tok.decoder = decoders.ByteLevel()
  add_file_tokens(tok, reader, tokens, default_bos=pre.add_bos)
  return tok.to_str()


def pair(merge: str) -> tuple[str, str]:
  cut = merge.find(' ', 1)   # as llama.cpp: the first space after the first character
  return merge[:cut], merge[cut + 1:]


def add_file_tokens(tok, reader, tokens, default_bos: bool) -> None:
  """The file's control tokens as special added tokens (matched whole in text, skipped when
  decoding), its user-defined ones as plain added tokens, and the bos / eos post-processor."""
  types = reader.field('tokenizer.ggml.token_type') or [1] * len(tokens)
  tok.add_special_tokens([_added(t, True) for t, k in zip(tokens, types) if int(k) == _CONTROL])
  tok.add_tokens([_added(t, False) for t, k in zip(tokens, types) if int(k) == _USER_DEFINED])
  processor = _post_processor(reader, tokens, default_bos)
  if processor is not None:
    tok.post_processor = processor


def _added(content: str, special: bool):
  from tokenizers import AddedToken  # pylint: disable=g-import-not-at-top
  return AddedToken(content, special=special, normalized=False)


def _post_processor(reader, tokens, default_bos: bool):
  """bos / eos around every text, as ``add_bos_token`` / ``add_eos_token`` say (bos:
  ``default_bos`` where the file is silent)."""
  from tokenizers import processors  # pylint: disable=g-import-not-at-top
  add_bos = reader.field('tokenizer.ggml.add_bos_token')
  add_bos = default_bos if add_bos is None else bool(add_bos)
  add_eos = bool(reader.field('tokenizer.ggml.add_eos_token'))
  ids = {k: reader.field(f'tokenizer.ggml.{k}_token_id') for k in ('bos', 'eos')}
  head = [int(ids['bos'])] if add_bos and ids['bos'] is not None else []
  tail = [int(ids['eos'])] if add_eos and ids['eos'] is not None else []
  if not head and not tail:
    return None
  seq = lambda seq_id, name: ([f'{tokens[i]}:{seq_id}' for i in head] + [f'${name}:{seq_id}']
                              + [f'{tokens[i]}:{seq_id}' for i in tail])
  return processors.TemplateProcessing(
      single=seq(0, 'A'), pair=seq(0, 'A') + seq(1, 'B'),
      special_tokens=[(tokens[i], i) for i in dict.fromkeys(head + tail)])
