"""The tokenizer of a GGUF file, rebuilt from its own vocabulary (``tokenizer.ggml.*``).

``tokenizer.ggml.model = 'llama'`` (SentencePiece: Llama 1/2, Gemma) becomes a real
SentencePiece model: a ``ModelProto`` (``sentencepiece_model_pb2``) of the pieces, scores and
token types in id order, BPE (llama.cpp's SPM tokenizer merges by score, as SentencePiece's BPE
does), byte fallback when the vocabulary has byte pieces, identity normalisation, and the
dummy-prefix space of ``tokenizer.ggml.add_space_prefix`` (llama.cpp's default: on). The model
is written to a temporary ``.model`` file (``Imported.tokenizer_path``) and read by ropex's
SentencePiece wrapper. Other vocabularies (``gpt2`` BPE, whose pre-tokenizer llama.cpp keeps in
C++ by ``tokenizer.ggml.pre`` name) are not rebuilt: the file then has no tokenizer.
"""

from __future__ import annotations

import os
import tempfile

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


def write_sentencepiece(reader) -> str | None:
  """A temporary ``.model`` file of the GGUF vocabulary (None if it is not SentencePiece)."""
  proto = sentencepiece_proto(reader)
  if proto is None:
    return None
  folder = tempfile.mkdtemp(prefix='ropex-gguf-tokenizer-')
  path = os.path.join(folder, os.path.basename(reader.path).removesuffix('.gguf') + '.model')
  with open(path, 'wb') as f:
    f.write(proto)
  return path
