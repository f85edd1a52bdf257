"""ropex.paths: local paths resolve as before, URLs stay URLs, unusable schemes are refused."""

import os
import subprocess
import sys

import pytest

import cli_runs
from ropex import paths
from ropex.errors import ConfigError
from ropex.training import checkpoint


def test_a_local_workdir_becomes_absolute_and_a_url_stays_as_given(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert checkpoint.resolve('run') == str(tmp_path / 'run')
  assert checkpoint.resolve('~/run') == os.path.expanduser('~/run')
  assert checkpoint.resolve('gs://bucket/run') == 'gs://bucket/run'
  assert checkpoint.checkpoint_dir('gs://bucket/run') == 'gs://bucket/run/checkpoints'
  assert paths.join('gs://bucket/run', 'eval', 'results.json') == (
      'gs://bucket/run/eval/results.json')
  assert not os.path.exists(tmp_path / 'gs:')


def test_an_unknown_scheme_is_a_config_error_naming_the_flag():
  with pytest.raises(ConfigError) as e:
    checkpoint.resolve('foo://bucket/run')
  assert str(e.value) == ("--workdir='foo://bucket/run': foo:// is not supported; allowed: a "
                          'local path or a gs://, s3://, az://, hf:// URL')


def test_a_url_without_its_backend_is_a_config_error(monkeypatch):
  monkeypatch.setenv('EPATH_USE_TF', 'false')  # fsspec serves s3:// only through s3fs
  monkeypatch.setitem(sys.modules, 's3fs', None)   # absent, whether installed or not
  with pytest.raises(ConfigError, match=r"^--out='s3://b/x': no backend for s3:// \("):
    paths.path('s3://b/x', '--out')


def test_a_local_glob_matches_files_recursively(tmp_path):
  (tmp_path / 'a' / 'b').mkdir(parents=True)
  for name in ('a/x.txt', 'a/b/y.txt', 'z.jsonl'):
    (tmp_path / name).write_text('text')
  assert paths.glob(str(tmp_path / '**' / '*.txt')) == [str(tmp_path / 'a' / 'b' / 'y.txt'),
                                                       str(tmp_path / 'a' / 'x.txt')]
  with pytest.raises(ConfigError, match=r'\*\* is not supported on gs://'):
    paths.glob('gs://b/corpus/**/*.txt', 'data.text_glob')


def test_train_refuses_an_unknown_scheme_and_creates_nothing(tmp_path):
  r = subprocess.run([sys.executable, '-m', 'ropex.train',
                      f'--config={cli_runs.ROOT}/configs/tiny.py', '--workdir=foo://b/run'],
                     cwd=tmp_path, env=cli_runs.env(), capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 2, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1] == (
      "ropex.train: --workdir='foo://b/run': foo:// is not supported; allowed: a local path "
      'or a gs://, s3://, az://, hf:// URL')
  assert os.listdir(tmp_path) == []
