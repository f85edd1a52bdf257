"""``python -m ropex.evaluate`` end to end on a 2-step training run: evaluate, override, compare."""

import json
import os
import subprocess
import sys

import pytest

import cli_runs

MICRO = ('--config.train.steps=2', '--config.train.batch_size=4', '--config.train.seq_len=32',
         '--config.checkpoint.every_steps=2', '--config.checkpoint.async_save=False',
         '--config.eval.steps=0', '--config.model.num_layers=1', '--config.model.embed_dim=32',
         '--config.model.hidden_dim=32', '--config.model.head_dim=16')
QUICK = ('--lengths=16,40', '--depths=0,1', '--examples=2', '--task_examples=2',
         '--tasks=copy_offset,assoc_recall')


def evaluate(*args):
  return subprocess.run([sys.executable, '-m', 'ropex.evaluate', *args], cwd=cli_runs.ROOT,
                        env=cli_runs.env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('run') / 'tiny')
  done = cli_runs.run(path, *MICRO)
  assert done.returncode == 0, done.stderr[-2000:]
  return path


def test_evaluate_then_compare(workdir, tmp_path):
  done = evaluate(f'--workdir={workdir}', *QUICK)
  assert done.returncode == 0, done.stderr[-2000:]
  with open(os.path.join(workdir, 'eval', 'results.json')) as f:
    plain = json.load(f)
  assert plain['run']['step'] == 2 and plain['overrides'] == {}
  assert plain['perplexity']['lengths'] == [16, 40]          # exactly the lengths asked
  assert sorted(plain['tasks']) == ['assoc_recall', 'copy_offset']
  assert 'perplexity (± 95% interval over rows): L=16:' in done.stdout
  assert 'rows (--examples): L=16: 2, L=40: 2' in done.stdout
  for name in ('perplexity.png', 'loss_by_position.png', 'accuracy.png'):
    assert os.path.getsize(os.path.join(workdir, 'eval', name)) > 1000

  done = evaluate(f'--workdir={workdir}', *QUICK, '--retrieval=none', '--tasks=none',
                  '--override=model.pe.max_wavelength=500000')
  assert done.returncode == 0, done.stderr[-2000:]
  theta_dir = os.path.join(workdir, 'eval_pe.max_wavelength=500000')
  with open(os.path.join(theta_dir, 'results.json')) as f:
    theta = json.load(f)
  assert theta['overrides'] == {'model.pe.max_wavelength': 500000.0}
  assert theta['retrieval'] == {} and theta['tasks'] == {}

  out = str(tmp_path / 'cmp')
  done = evaluate('compare', workdir, theta_dir, f'--out={out}')
  assert done.returncode == 0, done.stderr[-2000:]
  with open(os.path.join(out, 'comparison.md')) as f:
    table = f.read()
  assert '| tiny_rope | rope θ=10000 | 2 |' in table
  assert '| tiny_rope [pe.max_wavelength=500000.0] | rope θ=500000 | 2 |' in table
  paired = table[table.index('Paired differences'):]    # the override against the run: same rows
  row = next(l for l in paired.splitlines() if l.startswith('| tiny_rope [pe.max_wavelength'))
  assert row.count('(unpaired ± ') == 2 and 'unpaired: rows differ' not in row

  # --noreuse: a workdir is evaluated again rather than its eval/results.json read
  done = evaluate('compare', workdir, theta_dir, '--noreuse', *QUICK, '--retrieval=none',
                  '--tasks=none', f'--out={tmp_path / "cmp2"}')
  assert done.returncode == 0, done.stderr[-2000:]
  assert f'{workdir}: using' not in done.stdout and f'{theta_dir}: using' in done.stdout
  assert 'perplexity (± 95% interval over rows): L=16:' in done.stdout   # the summary of the fresh evaluation


def test_bad_flags_fail_with_one_sentence(tmp_path):
  workdir = str(tmp_path)   # flags are checked before any checkpoint is read
  done = evaluate(f'--workdir={workdir}', '--lengths=16,16')
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      'ropex.evaluate: --lengths lists 16 twice; allowed: distinct lengths']
  done = evaluate(f'--workdir={workdir}')
  assert done.returncode == 2 and 'holds no config.json' in done.stderr


def test_ruler_suite_from_the_command_line(workdir, tmp_path):
  out = str(tmp_path / 'ruler')
  done = evaluate(f'--workdir={workdir}', '--suite=ruler', '--ruler=niah_single,cwe',
                  '--lengths=40,64', '--depths=0,1', '--task_examples=2', f'--out={out}')
  assert done.returncode == 0, done.stderr[-2000:]
  with open(os.path.join(out, 'results.json')) as f:
    results = json.load(f)
  assert sorted(results['ruler']) == ['cwe', 'niah_single'] and 'perplexity' not in results
  assert results['ruler']['niah_single']['lengths'] == [40, 64]
  assert 'RULER average recall %: L=40:' in done.stdout
  assert os.path.getsize(os.path.join(out, 'ruler.png')) > 1000
  done = evaluate(f'--workdir={workdir}', '--suite=rular')
  assert done.returncode == 2 and '--suite names \'rular\'' in done.stderr
