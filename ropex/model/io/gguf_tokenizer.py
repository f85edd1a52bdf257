"""The tokenizer of a GGUF file, rebuilt from its own vocabulary (``tokenizer.ggml.*``).

``tokenizer.ggml.model = 'llama'`` (SentencePiece: Llama 1/2, Gemma) becomes a real
SentencePiece model: a ``ModelProto`` (``sentencepiece_model_pb2``) of the pieces, scores and
token types in id order, BPE (llama.cpp's SPM tokenizer merges by score, as SentencePiece's BPE
does), byte fallback when the vocabulary has byte pieces, identity normalisation, and the
dummy-prefix space of ``tokenizer.ggml.add_space_prefix`` (llama.cpp's default: on), read by
ropex's SentencePiece wrapper from memory.

``tokenizer.ggml.model = 'gpt2'`` (byte-level BPE: Llama 3, Qwen 2/3) becomes a ``tokenizers``
``tokenizer.json`` with the pre-tokenizer its ``tokenizer.ggml.pre`` names
(:mod:`ropex.model.io.gguf_bpe`; an unknown name is an error naming the field), with the bos /
eos ids of the file, read by ropex's ``tokenizer.json`` wrapper from memory.

``tokenizer.ggml.model = 'gemma4'`` (Gemma 4: merge-ranked BPE over raw UTF-8, ``▁`` for a
space) becomes a ``tokenizers`` ``tokenizer.json`` in the pipeline of Gemma's published one
(:mod:`ropex.model.io.gguf_sp_bpe`); a file without ``tokenizer.ggml.merges`` has no tokenizer,
and :func:`describe` says why.

Nothing is written: the tokenizer is rebuilt from the file whenever it is loaded
(:func:`load`), so an import's ``tokenizer_path`` and a run's ``data.tokenizer_path``
(``data.tokenizer='gguf'``) name the ``.gguf`` file itself, which records keep. Any other
vocabulary (``bert``, ``t5``, ``rwkv``, ``none`` ...) is not rebuilt: the import then has no
tokenizer, and :func:`describe` says why (``source['tokenizer']``), which the entry points that
need one print.
"""

from __future__ import annotations

import functools

# GGUF token types are SentencePiece's piece types (NORMAL 1, UNKNOWN 2, CONTROL 3,
# USER_DEFINED 4, UNUSED 5, BYTE 6)
_BYTE = 6


def sentencepiece_proto(reader) -> bytes | None:
  """The serialized SentencePiece model of a GGUF file's vocabulary (None: not SentencePiece)."""
  if reader.field('tokenizer.ggml.model') != 'llama':
    return None
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=g-import-not-at-top
  tokens = reader.field('tokenizer.ggml.tokens')
  scores = reader.field('tokenizer.ggml.scores') or [0.0] * len(tokens)
  types = reader.field('tokenizer.ggml.token_type') or [1] * len(tokens)
  m = sentencepiece_model_pb2.ModelProto()
  for piece, score, kind in zip(tokens, scores, types):
    p = m.pieces.add()
    p.piece, p.score, p.type = piece, float(score), int(kind)
  m.trainer_spec.model_type = sentencepiece_model_pb2.TrainerSpec.BPE
  m.trainer_spec.vocab_size = len(tokens)
  m.trainer_spec.byte_fallback = _BYTE in set(int(t) for t in types)
  for field, key in (('unk_id', 'unknown_token_id'), ('bos_id', 'bos_token_id'),
                     ('eos_id', 'eos_token_id'), ('pad_id', 'padding_token_id')):
    value = reader.field(f'tokenizer.ggml.{key}')
    setattr(m.trainer_spec, field, -1 if value is None else int(value))
    if value is not None:   # the processor finds its special ids by these pieces
      setattr(m.trainer_spec, field.replace('_id', '_piece'), tokens[int(value)])
  m.normalizer_spec.name = 'identity'
  prefix = reader.field('tokenizer.ggml.add_space_prefix')
  m.normalizer_spec.add_dummy_prefix = True if prefix is None else bool(prefix)
  m.normalizer_spec.remove_extra_whitespaces = False
  return m.SerializeToString()


KINDS = ('llama', 'gpt2', 'gemma4')


def describe(reader) -> tuple[bool, str]:
  """(whether ropex rebuilds the file's tokenizer, what it is / why there is none); an unknown
  BPE pre-tokenizer is a ConfigError naming the field."""
  kind = reader.field('tokenizer.ggml.model')
  if kind == 'llama':
    return True, 'SentencePiece rebuilt from the GGUF vocabulary'
  if kind == 'gpt2':
    from ropex.model.io import gguf_bpe  # pylint: disable=g-import-not-at-top
    pre, _ = gguf_bpe.pre_of(reader)
    return True, f'byte-level BPE (pre-tokenizer {pre!r}) rebuilt from the GGUF vocabulary'
  if kind == 'gemma4':
    from ropex.model.io import gguf_sp_bpe  # pylint: disable=g-import-not-at-top
    why = gguf_sp_bpe.missing(reader)
    if why is not None:
      return False, why
    return True, 'Gemma 4 BPE (raw UTF-8, \u2581 for spaces) rebuilt from the GGUF vocabulary'
  return False, (f'tokenizer.ggml.model={kind!r} is not rebuilt by ropex; allowed: '
                 f'{", ".join(KINDS)}')


def file_of(path: str) -> tuple[str, bytes]:
  """The rebuilt tokenizer of the local ``.gguf`` file ``path`` as a Hugging Face folder would
  hold it: (``tokenizer.model``, the SentencePiece model) or (``tokenizer.json``, its JSON)."""
  from ropex.model.io import gguf  # pylint: disable=g-import-not-at-top
  return _rebuilt(gguf.Reader(path))


def _rebuilt(reader) -> tuple[str, bytes]:
  from ropex.errors import ConfigError  # pylint: disable=g-import-not-at-top
  rebuilt, why = describe(reader)
  if not rebuilt:
    raise ConfigError(f'{reader.path} has no tokenizer: {why}')
  proto = sentencepiece_proto(reader)
  if proto is not None:
    return 'tokenizer.model', proto
  from ropex.model.io import gguf_bpe, gguf_sp_bpe  # pylint: disable=g-import-not-at-top
  build = gguf_sp_bpe if reader.field('tokenizer.ggml.model') == 'gemma4' else gguf_bpe
  return 'tokenizer.json', build.tokenizer_json(reader).encode('utf-8')


@functools.lru_cache(maxsize=4)   # a run's data pipeline, evaluation and report each ask
def load(path: str):
  """The ropex tokenizer rebuilt in memory from the local ``.gguf`` file ``path`` (its bos /
  eos ids from the file)."""
  from ropex.data import tokenizers  # pylint: disable=g-import-not-at-top
  from ropex.model.io import gguf  # pylint: disable=g-import-not-at-top
  reader = gguf.Reader(path)
  name, data = _rebuilt(reader)
  if name == 'tokenizer.model':
    return tokenizers.SentencePieceTokenizer(path, proto=data)
  ids = {f'{k}_token_id': reader.field(f'tokenizer.ggml.{k}_token_id') for k in ('bos', 'eos')}
  return tokenizers.HuggingFaceTokenizer(
      path, {k: int(v) for k, v in ids.items() if v is not None}, text=data.decode('utf-8'))
