"""The 'gemma4' vocabulary fixture (tests/fixtures/gguf/bpe/gemma4.gguf and its reference folder)
against LIVE transformers and gguf-py's converter code: the file is what llama.cpp's
Gemma4Model.set_vocab writes from the folder, and the reference tokenizer.json tokenizes as
transformers' Gemma tokenizer does (ropex's rebuild equals the reference id for id:
tests/model/io/test_io_gguf_sp_bpe.py).

Opt-in (marker ``hf``): needs transformers (gguf.LlamaHfVocab loads the folder through
AutoTokenizer). Without pytest: ``python tests/hf_live/test_gguf_gemma4_vocab_live.py``.
"""
import json
from pathlib import Path

if __name__ != '__main__':
  import pytest  # pylint: disable=g-import-not-at-top
  pytestmark = pytest.mark.hf

BPE = Path(__file__).resolve().parents[1] / 'fixtures' / 'gguf' / 'bpe'
VISIBLE = {'<|channel>', '<channel|>', '<|tool_call>', '<tool_call|>', '<|tool_response>',
           '<tool_response|>', '<|"|>'}   # Gemma4Model.set_vocab's USER_DEFINED tokens
TEXT = (" Hello  world,\tthe café (NFD: cafe\u0301) served crème brûlée in 2023 and 42 more.\n\n"
        "  Quiz: 日本語 🚀🦙 👍🏽 😶\u200d🌫️   three spaces,\r\nnew lines\n\n\n"
        "def main():\n    return {'key': [1, 22, 333, 4444]}\n")


def _array(reader, key):
  field = reader.get_field(key)
  return [field.contents(i) for i in range(len(field.data))]


def test_fixture_is_what_the_converter_writes_from_the_reference_folder():
  """gguf.LlamaHfVocab (what Gemma4Model.set_vocab reads) gives the file's tokens, scores and
  types (its visible tokens USER_DEFINED, as set_vocab marks them)."""
  import gguf  # pylint: disable=import-outside-toplevel
  vocab = list(gguf.LlamaHfVocab(BPE / 'gemma4').all_tokens())
  reader = gguf.GGUFReader(str(BPE / 'gemma4.gguf'))
  assert [t.decode() for t, _, _ in vocab] == _array(reader, 'tokenizer.ggml.tokens')
  assert [s for _, s, _ in vocab] == _array(reader, 'tokenizer.ggml.scores')
  types = [int(gguf.TokenType.USER_DEFINED) if t.decode() in VISIBLE else int(k)
           for t, _, k in vocab]
  assert types == _array(reader, 'tokenizer.ggml.token_type')


def test_reference_tokenizes_as_transformers_gemma_tokenizer():
  """transformers' GemmaTokenizer built from the vocabulary and merges (its own pipeline) and
  AutoTokenizer of the folder give the reference tokenizer.json's ids."""
  # pylint: disable=import-outside-toplevel
  import tokenizers
  from transformers import AutoTokenizer
  from transformers.models.gemma.tokenization_gemma import GemmaTokenizer
  # pylint: enable=import-outside-toplevel
  path = BPE / 'gemma4' / 'tokenizer.json'
  reference = tokenizers.Tokenizer.from_file(str(path))
  model = json.loads(path.read_text())['model']
  gemma = GemmaTokenizer(vocab=model['vocab'], merges=[tuple(m) for m in model['merges']])
  ids = reference.encode(TEXT, add_special_tokens=False).ids
  assert gemma(TEXT, add_special_tokens=False)['input_ids'] == ids and len(ids) > 100
  text = TEXT + '<|turn>user\n<|channel>x'
  assert AutoTokenizer.from_pretrained(BPE / 'gemma4')(text)['input_ids'] == reference.encode(
      text).ids


if __name__ == '__main__':
  for test in (test_fixture_is_what_the_converter_writes_from_the_reference_folder,
               test_reference_tokenizes_as_transformers_gemma_tokenizer):
    test()
    print('ok', test.__name__)
