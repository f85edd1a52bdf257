"""Every entry point fails on bad input like ``ropex.train``: exit status 2, one line on stderr
naming the flag, field or file, no traceback, and nothing created or changed (a checksum listing
of the workdir, or its absence, is the same before and after)."""

import hashlib
import os
import subprocess
import sys

import pytest

import cli_runs
from ropex.config import defaults as config_base
from ropex.training import loop


def _listing(root) -> dict | None:
  if not os.path.exists(root):
    return None
  if os.path.isfile(root):
    return {'': hashlib.sha256(open(root, 'rb').read()).hexdigest()}
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      path = os.path.join(d, f)
      out[os.path.relpath(path, root)] = hashlib.sha256(open(path, 'rb').read()).hexdigest()
  return out


@pytest.fixture(scope='module')
def bad(tmp_path_factory):
  """Bad input files, and a finished 2-step run to point evaluate / analyze at."""
  root = tmp_path_factory.mktemp('bad')
  (root / 'syntax.py').write_text('def get_config(:\n')
  (root / 'noget.py').write_text('X = 1\n')
  (root / 'notdict.py').write_text('def get_config(arg=None):\n  return {"a": 1}\n')
  (root / 'broken.jsonl').write_text('{"text": "ok"}\n{"text": broken\n')
  (root / 'nofield.jsonl').write_text('{"body": "some text"}\n')
  (root / 'empty.txt').write_text('')
  (root / 'garbage.model').write_bytes(bytes(range(256)) * 2)
  (root / 'afile').write_text('hi\n')
  (root / 'results.json').write_text('{garbage')
  c = config_base.base_config('tiny')
  c.train.update(steps=2, batch_size=8, seq_len=64, warmup_steps=1, log_every_steps=1)
  c.checkpoint.every_steps, c.eval.steps = 2, 0
  loop.train(c, str(root / 'run'))
  return root


T = '--config=configs/tiny.py'
TEXT = ('--config.data.source=text',)
# (entry point, arguments, the path whose listing must not change, text the line must contain)
CASES = [
    ('train', ['--config={b}/syntax.py', '--workdir={new}'], '{new}', 'syntax error at line 1'),
    ('train', ['--config={b}/noget.py', '--workdir={new}'], '{new}', 'has no get_config'),
    ('train', ['--config={b}/notdict.py', '--workdir={new}'], '{new}', 'returned a dict'),
    ('train', ['--config=configs/missing.py', '--workdir={new}', '--config.train.steps=3'],
     '{new}', "--config='configs/missing.py' is not a file"),
    ('train', ['--config=configs/tiny.py:p=abc', '--workdir={new}'], '{new}', "p='abc'"),
    ('train', [T, '--workdir={b}/afile'], '{b}/afile', 'is a file, not a directory'),
    ('train', [T, '--workdir={new}', '--config.train.warmup_steps=' + '1' * 31], '{new}',
     'train.warmup_steps='),
    ('train', [T, '--workdir={new}', '--config.train.seq_len=100000000000'], '{new}',
     'train.seq_len='),
    ('train', [T, '--workdir={new}', *TEXT, '--config.data.text_glob={b}/broken.jsonl'],
     '{new}', 'broken.jsonl line 2 is not a JSON object'),
    ('train', [T, '--workdir={new}', *TEXT, '--config.data.text_glob={b}/nofield.jsonl'],
     '{new}', "nofield.jsonl line 1 has no field 'text'"),
    ('train', [T, '--workdir={new}', *TEXT, '--config.data.text_glob={b}/empty.txt'], '{new}',
     'data.text_glob matches only empty files'),
    ('train', [T, '--workdir={new}', '--config.data.tokenizer=sentencepiece',
               '--config.data.tokenizer_path={b}/garbage.model'], '{new}',
     'data.tokenizer_path='),
    ('train', [T, '--workdir={b}/run', '--config.train.batch_size=16'], '{b}/run',
     'train.batch_size=8 but this command has train.batch_size=16'),
    ('evaluate', ['--workdir={new}'], '{new}', 'holds no config.json'),
    ('evaluate', ['--workdir={b}/run', '--step=999'], '{b}/run', '--step 999 has no checkpoint'),
    ('evaluate', ['--workdir={b}/run', '--step=-1'], '{b}/run', '--step -1 has no checkpoint'),
    ('evaluate', ['--workdir={b}/run', '--lengths=100000000000'], '{b}/run', '--lengths has'),
    ('evaluate', ['compare', '{b}/results.json', '--out={new}'], '{new}', 'results.json'),
    ('evaluate', ['--workdir={b}/run', '--examples=many'], '{b}/run',
     "--examples='many'; allowed: a positive integer or auto"),
    ('evaluate', ['--workdir={b}/run', '--target_se=0'], '{b}/run',
     '--target_se=0.0 must be a positive number'),
    ('analyze', ['--workdir={b}/run', '--ablate_fraction=2'], '{b}/run', '--ablate_fraction'),
    ('analyze', ['--workdir={b}/run', '--top_heads=-3'], '{b}/run', '--top_heads'),
    ('analyze', ['--workdir={b}/run', '--batch_size=0'], '{b}/run', '--batch_size'),
    ('describe', ['--config=configs/missing.py'], '{new}', 'is not a file'),
    ('describe', [T, '--config.train.stepz=3'], '{new}', "did you mean 'steps'"),
    ('describe', ['--config={b}/syntax.py'], '{new}', 'syntax error'),
    ('describe', ['--config=configs/tiny.py:p=abc'], '{new}', "p='abc' must be a float"),
    ('compile', ['--config=configs/missing.py'], '{new}', 'is not a file'),
    ('tokenizer', ['--input={b}/nothing*.txt', '--output={new}/t.model'], '{new}', '--input='),
    ('tokenizer', ['--input={b}/broken.jsonl', '--output={new}/t.model', '--vocab_size=0'],
     '{new}', '--vocab_size'),
    ('tokenizer', ['--input={b}/broken.jsonl', '--output={new}/t.model', '--vocab_size=5'],
     '{new}', '--vocab_size'),
    ('tokenizer', ['--input={b}/empty.txt', '--output={new}/t.model'], '{new}', 'empty files'),
    ('tokenizer', ['--input={b}/garbage.model', '--output={new}/t.model'], '{new}',
     'allowed extensions'),
    ('tokenizer', ['--input={b}/broken.jsonl', '--output={new}/t.model'], '{new}', 'line 2'),
    ('tokenizer', ['--input={b}/nofield.jsonl', '--output={new}/t.model'], '{new}',
     '--text_field'),
    ('tokenizer', ['--input={b}/broken.jsonl', '--output={b}/afile/t.model'], '{b}/afile',
     'which is a file'),
    ('report', ['{new}'], '{new}', 'has no config.json'),
    ('demo', ['--config=configs/missing.py'], '{new}', "flag 'config'"),
]


@pytest.mark.parametrize('entry, args, watched, expected', CASES,
                         ids=[f'{c[0]}-{i}' for i, c in enumerate(CASES)])
def test_bad_input_fails_cleanly(bad, tmp_path, entry, args, watched, expected):
  fill = lambda s: s.format(b=bad, new=tmp_path / 'new')
  watched = fill(watched)
  before = _listing(watched)
  run_before = _listing(bad / 'run')
  r = subprocess.run([sys.executable, '-m', f'ropex.{entry}', *map(fill, args)],
                     cwd=cli_runs.ROOT, env=cli_runs.env(), capture_output=True, text=True,
                     timeout=300)
  lines = [line for line in r.stderr.splitlines() if line.startswith(f'ropex.{entry}: ')]
  assert r.returncode == 2, r.stderr[-2000:]
  assert 'Traceback' not in r.stderr, r.stderr[-2000:]
  assert len(lines) == 1 and expected in lines[0], r.stderr[-2000:]
  assert _listing(watched) == before
  assert _listing(bad / 'run') == run_before
