"""Byte tokenizer golden ids; SentencePiece training CLI, loading and use in the pipeline."""
import subprocess
import sys

import numpy as np
import pytest

from ropex import data
from ropex.tools import tokenizer_training as tokenizer_cli
from ropex.errors import ConfigError

_WORDS = ('rotary position encoding frequency attention head token model semantic band '
          'the of and to in is').split()


def test_byte_tokenizer_golden_ids(small_config):
  tok = data.make_tokenizer(small_config().data)
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 1, 2, 259)
  # 'h' = 0x68, 'é' = 0xc3 0xa9, '€' = 0xe2 0x82 0xac, each shifted by 3
  assert tok.encode('hé€!') == [0x68 + 3, 0xc3 + 3, 0xa9 + 3, 0xe2 + 3, 0x82 + 3, 0xac + 3,
                                0x21 + 3]
  assert tok.encode('') == []
  assert tok.decode([1, 0x68 + 3, 0xc3 + 3, 0xa9 + 3, 2, 0, 0]) == 'hé'
  text = 'Round and Round We Go! ∮ 漢字'
  assert tok.decode(tok.encode(text)) == text


def _corpus(path):
  rng = np.random.default_rng(0)
  for i in range(3):
    lines = [' '.join(rng.choice(_WORDS, size=10)) for _ in range(200)]
    (path / f'part{i}.txt').write_text('\n'.join(lines))


@pytest.fixture(scope='module')
def sp_model(tmp_path_factory):
  """A SentencePiece model trained by the CLI (a subprocess, as a user would run it)."""
  root = tmp_path_factory.mktemp('sp')
  _corpus(root)
  out = root / 'tok' / 'small.model'
  proc = subprocess.run([sys.executable, '-m', 'ropex.tokenizer', '--input', str(root / '*.txt'),
                         '--vocab_size', '300', '--output', str(out)],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  return root, out


def test_sentencepiece_cli_model_roundtrip(sp_model, small_config):
  _, path = sp_model
  tok = data.make_tokenizer(small_config(tokenizer='sentencepiece', tokenizer_path=str(path)).data)
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)  # Gemma's layout
  assert 260 <= tok.vocab_size <= 300
  text = 'rotary position encoding of the attention head'
  ids = tok.encode(text)
  assert len(ids) < len(text) / 3  # whole words became pieces
  assert tok.decode(ids) == text
  assert tok.decode(tok.encode('unseen ∮ 漢')) == 'unseen ∮ 漢'  # byte fallback


def test_sentencepiece_in_the_text_pipeline(sp_model, small_config):
  root, path = sp_model
  c = small_config(source='text', text_glob=str(root / '*.txt'), tokenizer='sentencepiece',
                   tokenizer_path=str(path), text_split_blank_lines=False, eval_fraction=0.0,
                   shuffle=False)
  tok = data.make_tokenizer(c.data)
  want = [2] + tok.encode((root / 'part0.txt').read_text()) + [1]
  b = next(data.make_iterator(c))
  np.testing.assert_array_equal(b['inputs'][0], want[:64])  # a long document fills the row
  np.testing.assert_array_equal(b['targets'][0], want[1:65])


def test_cli_function_rejects_bad_output(tmp_path):
  _corpus(tmp_path)
  with pytest.raises(Exception, match='.model'):
    tokenizer_cli.train(str(tmp_path / '*.txt'), 300, str(tmp_path / 'x.bin'))


def test_missing_tokenizer_file_is_a_config_error(small_config):
  with pytest.raises(ConfigError, match='data.tokenizer_path'):
    data.make_tokenizer(small_config(tokenizer='sentencepiece', tokenizer_path='/no/such').data)


def test_gguf_tokenizer_needs_a_gguf_file_and_names_the_field(small_config):
  """data.tokenizer=gguf rebuilds a .gguf file's vocabulary; any other path is one line naming
  data.tokenizer_path (never read as some other kind of tokenizer)."""
  with pytest.raises(ConfigError) as err:
    data.make_tokenizer(small_config(tokenizer='gguf', tokenizer_path='tok/my.model').data)
  assert str(err.value) == ("data.tokenizer_path='tok/my.model' is not a .gguf file; "
                            'data.tokenizer=gguf rebuilds the tokenizer of a .gguf file')
  with pytest.raises(ConfigError, match=r"data.tokenizer='gpt2' is not allowed; allowed: byte, "
                                        'sentencepiece, huggingface, gguf'):
    data.make_tokenizer(small_config(tokenizer='gpt2').data)
