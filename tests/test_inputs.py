"""The input-checking helpers every entry point uses (ropex.inputs) and the one rule that
chooses the checkpoint to load (ropex.training.integrity.choose), in-process."""

import json
import logging
import os

import pytest

from ropex import inputs
from ropex.errors import ConfigError
from ropex.training import integrity


def _listing(root):
  return sorted(os.path.relpath(os.path.join(d, n), root)
                for d, dirs, files in os.walk(root) for n in dirs + files)


def test_output_accepts_a_new_folder_and_creates_nothing(tmp_path):
  (tmp_path / 'keep.txt').write_text('x')
  inputs.output(tmp_path / 'a' / 'b', '--out')
  inputs.output(tmp_path, '--out')
  assert _listing(tmp_path) == ['keep.txt']


@pytest.mark.parametrize('where, expected', [
    ('file', "--out='{p}' is a file, not a directory"),
    ('under_file', "lies under '{f}', which is a file"),
    ('proc', "--out='/proc/ropex-test/x' cannot be written (no such file or directory at /proc)"),
])
def test_output_refuses_in_one_sentence(tmp_path, where, expected):
  f = tmp_path / 'afile'
  f.write_text('x')
  p = {'file': str(f), 'under_file': str(f / 'x'), 'proc': '/proc/ropex-test/x'}[where]
  with pytest.raises(ConfigError) as e:
    inputs.output(p, '--out')
  assert expected.format(p=p, f=f) in str(e.value)
  assert f.read_text() == 'x'


def test_reading_maps_format_and_storage_errors(tmp_path):
  bad_utf8 = tmp_path / 'm.jsonl'
  bad_utf8.write_bytes(b'{"a": 1}\n\xff\n')
  with pytest.raises(ConfigError, match=r"metrics='.*m.jsonl' cannot be read: it is not UTF-8 "
                     r"text \(byte 0xff at offset 9\); allowed: JSON lines"):
    with inputs.reading('metrics', bad_utf8, 'JSON lines'):
      bad_utf8.read_text()
  with pytest.raises(ConfigError, match=r'it is not valid JSON \(Expecting value: line 1 '
                     r'column 1\)'):
    with inputs.reading('results', 'r.json', 'a results.json'):
      json.loads('{garbage'[1:])
  with pytest.raises(ConfigError, match=r"cannot be read: no such file or directory"):
    with inputs.reading('--prompts', tmp_path / 'none.txt', 'a text file'):
      open(tmp_path / 'none.txt', encoding='utf-8')
  import safetensors.numpy as safetensors_numpy  # pylint: disable=import-outside-toplevel
  weights = tmp_path / 'w.safetensors'
  weights.write_bytes(bytes((i * 31 + 7) % 256 for i in range(4096)))
  with pytest.raises(ConfigError, match='it is not a readable safetensors file'):
    with inputs.reading('--model', weights, 'safetensors'):
      safetensors_numpy.load_file(str(weights))


def test_reading_keeps_errors_it_does_not_know():
  """A ValueError that is not a format error (a bug) keeps its type and traceback; one the
  caller declares as its format's (``formats``) is mapped."""
  with pytest.raises(ValueError, match='invalid literal'):
    with inputs.reading('--x', 'f', 'y'):
      int('x')
  with pytest.raises(ConfigError, match=r"--model='f.gguf' cannot be read: it is not in the "
                     r'expected format \(IndexError'):
    with inputs.reading('--model', 'f.gguf', 'a GGUF file', formats=(IndexError,)):
      [][0]


def _verdicts(table):
  def verdict(step):
    v = table[step]
    if v == 'unverified':
      raise integrity.Unverified(str(step))
    return v
  return verdict


@pytest.mark.parametrize('table, requested, step, verified', [
    ({2: None, 4: None}, None, 4, True),                          # newest verified
    ({2: None, 4: 'unverified'}, None, 2, True),                  # verified before newer unverified
    ({2: None, 4: 'a.bin does not match'}, None, 2, True),        # damaged newer step passed over
    ({2: 'unverified', 4: 'unverified'}, None, 4, False),         # none verified: newest unverified
    ({2: 'x does not match', 4: 'unverified'}, None, 4, False),
    ({2: 'x does not match', 4: 'y does not match'}, None, None, False),  # nothing readable
    ({2: None, 4: 'unverified'}, 4, 4, False),                    # asked for: loaded, with warning
    ({2: None, 4: None}, 2, 2, True),
])
def test_one_rule_chooses_the_checkpoint(table, requested, step, verified, caplog):
  with caplog.at_level(logging.WARNING, logger='ropex'):
    choice = integrity.choose(sorted(table), _verdicts(table), requested, where='w')
  assert (choice.step, choice.verified) == (step, verified)
  assert step not in choice.passed_over
  # passed over: the steps looked at and not used (newer ones when a verified step was found;
  # every other one when none was)
  looked_at = [s for s in table if requested is None and (not verified or s > step)]
  assert sorted(choice.passed_over) == [s for s in looked_at if s != step]
  if step is not None and not verified:
    assert f'CHECKPOINT {step} IN w IS UNVERIFIED' in caplog.text
