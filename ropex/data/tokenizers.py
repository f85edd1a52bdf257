"""Tokenizers: UTF-8 bytes, a SentencePiece model file (Gemma's ``tokenizer.model`` as is), a
released model's ``tokenizer.json``, or the tokenizer a ``.gguf`` file's vocabulary rebuilds.

Both expose ``vocab_size``, ``encode(str) -> list[int]``, ``encode_array(str) -> int32 array``,
``decode(ids) -> str`` and the special ids ``pad_id`` (always 0), ``bos_id``, ``eos_id``.
"""

from __future__ import annotations

import numpy as np

from ropex import paths
from ropex.errors import ConfigError

TOKENIZERS = ('byte', 'sentencepiece', 'huggingface', 'gguf')


class ByteTokenizer:
  """ids: 0 pad, 1 bos, 2 eos, 3 + b for UTF-8 byte b (vocab 259)."""

  pad_id, bos_id, eos_id = 0, 1, 2
  offset = 3
  vocab_size = 256 + 3

  def encode_array(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode('utf-8'), np.uint8).astype(np.int32) + self.offset

  def encode(self, text: str) -> list[int]:
    return self.encode_array(text).tolist()

  def decode(self, ids) -> str:
    ids_N = np.asarray(ids, np.int64).reshape(-1)
    ids_N = ids_N[(ids_N >= self.offset) & (ids_N < self.vocab_size)] - self.offset
    return ids_N.astype(np.uint8).tobytes().decode('utf-8', errors='replace')


class SentencePieceTokenizer:
  """A SentencePiece model; its pad id must be 0 (Gemma: pad 0, eos 1, bos 2). ``proto``: the
  serialized model itself (a GGUF's rebuilt vocabulary), ``path`` then names where it came
  from."""

  adds_bos = True   # SentencePiece models begin a text with bos (Gemma, Llama 2)

  def __init__(self, path: str, proto: bytes | None = None):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if proto is None and (not path or not paths.path(path, 'data.tokenizer_path').is_file()):
      raise ConfigError(f'data.tokenizer_path={path!r} is not a file; set it to a SentencePiece '
                        '.model file (e.g. Gemma tokenizer.model or one from python -m '
                        'ropex.tokenizer)')
    try:  # the model's bytes read through epath: local paths and gs:// alike
      self._sp = spm.SentencePieceProcessor(
          model_proto=paths.path(path).read_bytes() if proto is None else proto)
    except (RuntimeError, OSError) as e:
      raise ConfigError(f'data.tokenizer_path={path!r} is not a SentencePiece model '
                        f'({str(e).splitlines()[0][:120]}); give a .model file') from None
    self.vocab_size = int(self._sp.get_piece_size())
    self.pad_id, self.bos_id, self.eos_id = (int(self._sp.pad_id()), int(self._sp.bos_id()),
                                             int(self._sp.eos_id()))
    if self.pad_id != 0 or self.bos_id < 0 or self.eos_id < 0:
      raise ConfigError(f'data.tokenizer_path={path!r} has pad/bos/eos ids {self.pad_id}/'
                        f'{self.bos_id}/{self.eos_id}; allowed: pad 0 and bos, eos defined '
                        '(train one with python -m ropex.tokenizer)')

  def encode_array(self, text: str) -> np.ndarray:
    return np.asarray(self._sp.encode(text), np.int32)

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text))

  def decode(self, ids) -> str:
    ids = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) != self.pad_id]
    return self._sp.decode(ids)


class HuggingFaceTokenizer:
  """A ``tokenizer.json`` (the ``tokenizers`` library: Llama 3, Qwen) with the bos/eos ids of
  the model's ``config.json``; ``pad_id`` is 0 as for every ropex tokenizer (padded positions
  are masked, never scored). ``text``: the JSON itself (a GGUF's rebuilt vocabulary), ``path``
  then names where it came from."""

  pad_id = 0

  def __init__(self, path: str, hf_config: dict | None = None, text: str | None = None):
    try:
      import tokenizers  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ConfigError(f'{path!r} needs the tokenizers package (pip install '
                        '"tokenizers>=0.20,<1")') from None
    self._tok = tokenizers.Tokenizer.from_str(  # read through epath: local paths and gs://
        paths.path(path, 'data.tokenizer_path').read_text() if text is None else text)
    self.vocab_size = int(self._tok.get_vocab_size())
    hf_config = hf_config or {}
    ids = lambda v: (v[0] if isinstance(v, list) and v else v)
    self.bos_id = int(ids(hf_config.get('bos_token_id')) or 0)
    self.eos_id = int(ids(hf_config.get('eos_token_id')) or 0)

  def encode_array(self, text: str) -> np.ndarray:
    return np.asarray(self.encode(text), np.int32)

  def encode(self, text: str) -> list[int]:
    return list(self._tok.encode(text, add_special_tokens=False).ids)

  def decode(self, ids) -> str:
    return self._tok.decode([int(i) for i in np.asarray(ids).reshape(-1)])

  @property
  def adds_bos(self) -> bool:
    """Whether the tokenizer's post-processor begins a text with bos (Llama 3 yes, Qwen no)."""
    ids = self._tok.encode('x', add_special_tokens=True).ids
    return bool(ids) and ids[0] == self.bos_id


def make_tokenizer(data_cfg):
  """The tokenizer named by ``data.tokenizer`` (``byte``, ``sentencepiece``, ``huggingface``: a
  ``tokenizer.json``, or ``gguf``: rebuilt from the vocabulary of the ``.gguf`` file
  ``data.tokenizer_path``). A URL inside released weights this process copied is read from the
  copy (:func:`ropex.model.io.tokenizer.readable`)."""
  kind = data_cfg.tokenizer
  if kind == 'byte':
    return ByteTokenizer()
  from ropex.model.io import tokenizer  # pylint: disable=g-import-not-at-top
  if kind == 'sentencepiece':
    return SentencePieceTokenizer(tokenizer.readable(data_cfg.tokenizer_path))
  if kind == 'gguf' and tokenizer.kind(data_cfg.tokenizer_path or '') != 'gguf':
    raise ConfigError(f'data.tokenizer_path={data_cfg.tokenizer_path!r} is not a .gguf file; '
                      'data.tokenizer=gguf rebuilds the tokenizer of a .gguf file')
  if kind in ('huggingface', 'gguf'):   # a released model's tokenizer (ropex.model.io)
    return tokenizer.load(data_cfg.tokenizer_path)
  raise ConfigError(f'data.tokenizer={kind!r} is not allowed; allowed: {", ".join(TOKENIZERS)}')
