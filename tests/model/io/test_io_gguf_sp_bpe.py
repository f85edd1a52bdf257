"""GGUF ``gemma4`` vocabularies (Gemma 4: BPE over raw UTF-8, '▁' for spaces) rebuilt through the
tokenizers library (ropex.model.io.gguf_sp_bpe), against the reference tokenizer.json the file was
written from (scripts/make_gguf_fixtures.py: a BPE trained in the pipeline of Gemma's
tokenizer.json, written as llama.cpp's Gemma4Model.set_vocab writes it), id for id."""

import json
import os
import types

import pytest
import tokenizers

from ropex.data import tokenizers as data_tokenizers
from ropex.data.tokenizers import HuggingFaceTokenizer
from ropex.model.io import gguf as gguf_io
from ropex.model.io import gguf_sp_bpe, gguf_tokenizer
from ropex.model.io import tokenizer as tokenizer_io

BPE = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'gguf', 'bpe')
PATH, REF = os.path.join(BPE, 'gemma4.gguf'), os.path.join(BPE, 'gemma4')

# a leading space, runs of spaces and tabs, newline runs (with spaces after them), digits,
# accents composed and decomposed (NFD e + U+0301), characters outside the small alphabet
# ('H', 'q', CJK, emoji with ZWJ and skin tone: byte fallback), code
TEXT = (" Hello  world,\tthe café (NFD: cafe\u0301) served crème brûlée in 2023 and 42 more.\n\n"
        "  Quiz: 日本語 🚀🦙 👍🏽 😶\u200d🌫️   three spaces,\r\nnew lines\n\n\n"
        "def main():\n    return {'key': [1, 22, 333, 4444]}\n")
CONTROL, VISIBLE = '<|turn>', '<|channel>'


def _reference():
  with open(os.path.join(REF, 'config.json')) as f:
    return HuggingFaceTokenizer(os.path.join(REF, 'tokenizer.json'), json.load(f))


def _ids(spec: dict, text: str) -> list[int]:
  return tokenizers.Tokenizer.from_str(json.dumps(spec)).encode(
      text, add_special_tokens=False).ids


def test_rebuilt_gemma4_tokenizer_equals_the_reference_id_for_id():
  """Through ropex's wrapper as an import uses it and through the data pipeline's 'gguf' kind:
  the same ids on TEXT with a control token and the visible (user-defined) token inside, byte
  fallback used, bos added before the text, the same special ids, decoding back to TEXT."""
  reader = gguf_io.Reader(PATH)
  assert reader.field('tokenizer.ggml.model') == 'gemma4'
  assert gguf_tokenizer.describe(reader)[0]
  theirs = _reference()
  text = TEXT + CONTROL + 'user\n' + VISIBLE + 'thought'
  for ours in (tokenizer_io.load(PATH),
               data_tokenizers.make_tokenizer(types.SimpleNamespace(tokenizer='gguf',
                                                                    tokenizer_path=PATH))):
    ids = ours.encode(text)
    assert ids == theirs.encode(text) and len(ids) > 100
    pieces = [theirs._tok.id_to_token(i) for i in ids]
    assert CONTROL in pieces and VISIBLE in pieces and '<0xF0>' in pieces and '<unk>' not in pieces
    assert ours._tok.encode(TEXT).ids == theirs._tok.encode(TEXT).ids   # with bos
    assert ours.adds_bos and ours._tok.encode(TEXT).ids[0] == 2
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (theirs.bos_id, theirs.eos_id,
                                                           theirs.vocab_size) == (2, 1, 624)
    assert ours.decode(ours.encode(TEXT)) == TEXT == theirs.decode(theirs.encode(TEXT))


def test_export_writes_the_rebuilt_tokenizer_json():
  """What export writes (tokenizer.file_of) is a tokenizer.json with the reference's ids."""
  name, data = tokenizer_io.file_of(PATH)
  assert name == 'tokenizer.json'
  written = tokenizers.Tokenizer.from_str(data.decode('utf-8'))
  reference = tokenizers.Tokenizer.from_file(os.path.join(REF, 'tokenizer.json'))
  assert written.encode(TEXT).ids == reference.encode(TEXT).ids


@pytest.mark.parametrize('wrong', ['no space replacement', 'dummy prefix', 'no byte fallback',
                                   'byte-level'])
def test_a_wrong_pipeline_choice_changes_the_ids(wrong):
  """Each choice of the rebuilt pipeline shows on TEXT: without the '▁' replacement, with
  SentencePiece's dummy-prefix space (Metaspace, prepend 'first'; TEXT without its leading
  space), without byte fallback, or read as a byte-level ('gpt2') vocabulary, the ids differ."""
  spec = json.loads(gguf_sp_bpe.tokenizer_json(gguf_io.Reader(PATH)))
  text = TEXT[1:] if wrong == 'dummy prefix' else TEXT
  ids = _ids(spec, text)
  assert ids == _reference()._tok.encode(text, add_special_tokens=False).ids
  if wrong == 'no space replacement':
    spec['normalizer'] = None
  elif wrong == 'dummy prefix':
    spec['normalizer'] = None
    spec['pre_tokenizer'] = {'type': 'Metaspace', 'replacement': '\u2581',
                             'prepend_scheme': 'first', 'split': False}
  elif wrong == 'no byte fallback':
    spec['model']['byte_fallback'] = False
  else:
    spec['normalizer'] = None
    spec['pre_tokenizer'] = {'type': 'ByteLevel', 'add_prefix_space': False,
                             'trim_offsets': True, 'use_regex': True}
  assert _ids(spec, text) != ids, wrong


def test_llama_cpp_newline_pre_split_gives_the_same_ids_on_this_vocabulary():
  """llama.cpp splits a 'gemma4' text into runs of newlines and runs of the rest ([^\\n]+|\\n+)
  before merging; where no token mixes newlines with other characters (Gemma's vocabulary, and
  this one) the ids are those of the tokenizer.json pipeline ropex rebuilds, here on TEXT and
  on newline runs of 1 to 5."""
  spec = json.loads(gguf_sp_bpe.tokenizer_json(gguf_io.Reader(PATH)))
  assert not [t for t in spec['model']['vocab'] if '\n' in t and t.strip('\n')]
  split = dict(spec, pre_tokenizer={'type': 'Split', 'pattern': {'Regex': '[^\\n]+|\\n+'},
                                    'behavior': 'Isolated', 'invert': False})
  for text in [TEXT] + [f'a{chr(10) * n}b' for n in range(1, 6)]:
    assert _ids(split, text) == _ids(spec, text), repr(text)


def test_gemma4_vocabulary_without_merges_has_no_tokenizer_and_says_why():
  """A 'gemma4' vocabulary without tokenizer.ggml.merges (its scores are placeholders: nothing
  orders the merges) is not rebuilt; the reason names the field, and loading it is one line."""

  class NoMerges:
    path = PATH

    def __init__(self):
      self._reader = gguf_io.Reader(PATH)

    def field(self, key, default=None):
      return None if key == 'tokenizer.ggml.merges' else self._reader.field(key, default)

  rebuilt, why = gguf_tokenizer.describe(NoMerges())
  assert not rebuilt and 'tokenizer.ggml.merges' in why and "'gemma4'" in why
  assert '\n' not in why
