"""GGUF ``gpt2`` vocabularies (byte-level BPE) rebuilt through the tokenizers library
(ropex.model.io.gguf_bpe), against the reference tokenizer.json each file was written from
(scripts/make_gguf_fixtures.py: tokenizers trained with Llama 3's and Qwen 2's pre-tokenizers,
and the Hugging Face fixtures' GPT-2-style ones), id for id."""

import json
import os
import re
import struct
import unicodedata

import pytest
import tokenizers

import cli_runs

from ropex.data.tokenizers import HuggingFaceTokenizer
from ropex.errors import ConfigError
from ropex.model import io
from ropex.model.io import gguf as gguf_io
from ropex.model.io import gguf_bpe, gguf_tokenizer
from ropex.model.io import tokenizer as tokenizer_io

ROOT = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures')
GGUF, BPE, HF = (os.path.join(ROOT, 'gguf'), os.path.join(ROOT, 'gguf', 'bpe'),
                 os.path.join(ROOT, 'hf'))

# contractions (any case), digit runs of 1-7, punctuation before newlines, runs of spaces, tabs,
# \r\n, accents composed and decomposed (NFD e + U+0301), other scripts, emoji with ZWJ and
# skin tone, code, and ' ropex' (in the Llama 3 vocabulary as one token no merge reaches)
TEXT = ("I'm sure they'LL say it's fine, WE'VE seen 7, 42, 314, 2718, 31415, 4444, 55555, 12451 "
        "and 1234567. "
        "DON'T do that.\n  two  spaces,   three,\t\ttabs\r\nand\n\n\nnewlines.\n"
        "Café crème brûlée, naïve (NFD: cafe\u0301 cre\u0300me), 日本語のテキスト, Ελληνικά, "
        "русский 🚀🦙 ✅ 👍🏽 😶\u200d🌫️\nreturn {'key': x}\n\nWe'RE 2024-06-30 12:45:07 +3.14 "
        "with ropex ")
SPECIAL = {'llama-bpe': '<|end_of_text|>', 'qwen2': '<|im_start|>'}


class _Overridden:
  """A GGUF reader with some metadata fields replaced."""

  def __init__(self, reader, **fields):
    self._reader, self._fields, self.path = reader, fields, reader.path

  def field(self, key, default=None):
    return self._fields[key] if key in self._fields else self._reader.field(key, default)


def _rebuilt(reader):
  return tokenizers.Tokenizer.from_str(gguf_bpe.tokenizer_json(reader))


@pytest.mark.parametrize('pre', ['llama-bpe', 'qwen2'])
def test_rebuilt_tokenizer_equals_the_reference_id_for_id(pre):
  """Through ropex's wrapper as an import uses it (bos / eos from the file), with and without
  special tokens around the text, a control token inside the text matched whole, decoding back
  (Qwen 2: to the NFC form, as its tokenizer.json normalises)."""
  path = os.path.join(BPE, f'{pre}.gguf')
  rebuilt, what = gguf_tokenizer.describe(gguf_io.Reader(path))
  assert rebuilt and repr(pre) in what
  ours = tokenizer_io.load(path)
  with open(os.path.join(BPE, pre, 'config.json')) as f:
    theirs = HuggingFaceTokenizer(os.path.join(BPE, pre, 'tokenizer.json'), json.load(f))
  text = TEXT + SPECIAL[pre] + ' after'
  assert ours.encode(text) == theirs.encode(text) and len(ours.encode(text)) > 100
  assert SPECIAL[pre] in (theirs._tok.id_to_token(i) for i in theirs.encode(text))
  assert ours._tok.encode(TEXT).ids == theirs._tok.encode(TEXT).ids   # with bos for Llama 3
  assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (theirs.bos_id, theirs.eos_id,
                                                         theirs.vocab_size)
  expected = unicodedata.normalize('NFC', TEXT) if pre == 'qwen2' else TEXT
  assert ours.decode(ours.encode(TEXT)) == expected == theirs.decode(theirs.encode(TEXT))


@pytest.mark.parametrize('pre', ['llama-bpe', 'qwen2'])
def test_the_text_tells_the_pre_tokenizers_apart(pre):
  """The same vocabulary under another name's pipeline (and Qwen 2's without NFC, Llama 3's
  without ignore_merges) gives other ids on TEXT: the comparison above would catch a wrong
  regex, normaliser or merge rule."""
  reader = gguf_io.Reader(os.path.join(BPE, f'{pre}.gguf'))
  reference = tokenizers.Tokenizer.from_file(os.path.join(BPE, pre, 'tokenizer.json'))
  ids = reference.encode(TEXT, add_special_tokens=False).ids
  for other in set(gguf_bpe.PRES) - {pre}:
    if gguf_bpe.PRES[other] != gguf_bpe.PRES[pre]:
      wrong = _rebuilt(_Overridden(reader, **{'tokenizer.ggml.pre': other}))
      assert wrong.encode(TEXT, add_special_tokens=False).ids != ids, other
  if pre == 'qwen2':
    no_nfc = _rebuilt(reader)
    no_nfc.normalizer = None
    assert no_nfc.encode(TEXT, add_special_tokens=False).ids != ids
  spec = json.loads(gguf_bpe.tokenizer_json(reader))
  spec['model']['ignore_merges'] = not spec['model']['ignore_merges']
  flipped = tokenizers.Tokenizer.from_str(json.dumps(spec))
  assert (flipped.encode(TEXT, add_special_tokens=False).ids != ids) == (pre == 'llama-bpe')


@pytest.mark.parametrize('family', ['llama', 'qwen2', 'qwen3'])
def test_model_fixtures_gpt2_vocabulary_equals_their_tokenizer_json(family):
  """The Hugging Face fixtures' tokenizers split with GPT-2's ByteLevel regex (llama.cpp's
  'gpt-2'); the Llama one adds bos, as its GGUF's add_bos_token says."""
  reader = gguf_io.Reader(os.path.join(GGUF, f'{family}.gguf'))
  assert reader.field('tokenizer.ggml.pre') == 'gpt-2'
  ours = _rebuilt(reader)
  theirs = tokenizers.Tokenizer.from_file(os.path.join(HF, family, 'tokenizer.json'))
  assert ours.encode(TEXT).ids == theirs.encode(TEXT).ids
  assert (ours.encode('x').ids[0] == 0) == (family == 'llama')


def test_imported_gguf_carries_its_tokenizer_with_the_files_special_ids():
  imported = io.load_model(os.path.join(GGUF, 'llama.gguf'))
  theirs = tokenizer_io.load(os.path.join(HF, 'llama', 'tokenizer.json'))
  assert imported.tokenizer.encode(TEXT) == theirs.encode(TEXT)
  assert (imported.tokenizer.bos_id, imported.tokenizer.eos_id) == (0, 1) == (theirs.bos_id,
                                                                             theirs.eos_id)
  assert "'gpt-2'" in imported.source['tokenizer']


@pytest.mark.parametrize('pre', ['default', 'gpt2', 'qwen35', None])
def test_unknown_or_missing_pre_is_one_line_naming_the_field(pre):
  """No silent default regex: llama.cpp's 'default' (and its fallback for a missing name) is
  a regex no published tokenizer.json uses."""
  reader = _Overridden(gguf_io.Reader(os.path.join(BPE, 'qwen2.gguf')),
                       **{'tokenizer.ggml.pre': pre})
  with pytest.raises(ConfigError) as err:
    gguf_tokenizer.describe(reader)
  message = str(err.value)
  assert f'tokenizer.ggml.pre={pre!r}' in message and 'llama-bpe, llama3, llama-v3, qwen2, gpt-2' \
      in message and '\n' not in message


def test_other_vocabulary_kind_has_no_tokenizer_and_generate_says_why(tmp_path):
  """A vocabulary ropex does not rebuild (here 'bert') imports without a tokenizer; the entry
  points that need one (generate, evaluate) name the field in their one-line error."""
  data = open(os.path.join(GGUF, 'qwen2.gguf'), 'rb').read()
  key = b'tokenizer.ggml.model' + struct.pack('<IQ', 8, 4)   # string value of length 4
  assert data.count(key + b'gpt2') == 1
  path = tmp_path / 'bert.gguf'
  path.write_bytes(data.replace(key + b'gpt2', key + b'bert'))
  imported = io.load_model(str(path))
  assert imported.tokenizer_path is None and imported.tokenizer is None
  # the entry point in its own process (importing it here would define its flags twice)
  r = cli_runs.run_module('ropex.generate', f'--model={path}', '--prompt=hello',
                          '--max_new_tokens=1')
  lines = r.stderr.strip().splitlines()
  assert r.returncode == 2 and lines[-1].startswith('ropex.generate: '), r.stderr[-2000:]
  assert re.search(r"has no tokenizer: tokenizer\.ggml\.model='bert' is not rebuilt by ropex; "
                   r"allowed: llama, gpt2", lines[-1]), lines[-1]
  with pytest.raises(ConfigError, match=r"bert\.gguf has no tokenizer: tokenizer\.ggml\.model"):
    io.experiment_config(imported)   # evaluate's: never the byte tokenizer in its place


@pytest.mark.parametrize('pre, adds_bos', [('llama-bpe', True), ('qwen2', False)])
def test_file_without_add_bos_token_follows_llama_cpp_default_for_the_name(pre, adds_bos):
  """llama.cpp's llama-vocab.cpp turns bos on for the Llama 3 names, off otherwise, unless
  tokenizer.ggml.add_bos_token says; the file's flag wins either way."""
  reader = gguf_io.Reader(os.path.join(BPE, f'{pre}.gguf'))
  silent = _Overridden(reader, **{'tokenizer.ggml.add_bos_token': None,
                                  'tokenizer.ggml.bos_token_id': 0})
  assert (_rebuilt(silent).encode('x').ids[0] == 0) == adds_bos
  told = _Overridden(silent, **{'tokenizer.ggml.add_bos_token': not adds_bos})
  assert (_rebuilt(told).encode('x').ids[0] == 0) == (not adds_bos)
