"""`python -m ropex.sweep`: listing, validation, launch commands, and an end-to-end runlocal
sweep whose workdirs feed `ropex.experiments.report`."""
import csv
import io
import os
import subprocess
import sys

import pytest

from ropex.config import overrides as overrides_lib
from ropex.experiments import paper, report, run_summary, sweep
from ropex.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE2 = os.path.join(ROOT, 'configs', 'paper_table2.py')
STEMS = ['nope', 'rope10k', 'rope500k', 'prope_reversed0.75', 'partial0.75', 'prope0.25',
         'prope0.75']
FAST = [('train.steps', '3'), ('train.batch_size', '8'), ('train.seq_len', '64'),
        ('train.warmup_steps', '1'), ('train.log_every_steps', '1'), ('eval.every_steps', '3'),
        ('eval.steps', '1')]


def labels(run):
  cfg = sweep.validate(run)
  return run_summary.model_label(cfg.model.to_dict()), run_summary.dataset_label(
      cfg.data.to_dict())


def test_paper_table2_lists_every_row_on_both_datasets():
  runs = sweep.load_sweep(TABLE2, '/r')
  assert [r.name for r in runs] == [f'{s}_{d}' for d in ('wiki', 'flan') for s in STEMS]
  assert all(r.workdir == f'/r/{r.name}' for r in runs)
  assert all(os.path.isfile(r.config.split(':')[0]) for r in runs)
  cells = [labels(r) for r in runs]
  assert sorted(cells) == sorted((row, d) for row in paper.PAPER_TABLE2
                                 for d in ('wiki', 'flan'))


def test_runlocal_sweep_has_one_synthetic_run_per_row():
  runs = sweep.load_sweep(TABLE2 + ':runlocal', 'w/')
  assert [r.name for r in runs] == [f'{s}_local' for s in STEMS]
  assert [r.workdir for r in runs] == [f'w/{s}_local' for s in STEMS]
  cells = [labels(r) for r in runs]
  assert sorted(row for row, _ in cells) == sorted(paper.PAPER_TABLE2)
  assert {d for _, d in cells} == {'synthetic'}


def test_config_paths_are_relative_to_the_sweep_file(monkeypatch):
  monkeypatch.chdir(ROOT)
  run = sweep.load_sweep('configs/paper_table2.py:data=flan', 'out')[0]
  assert run.config == 'configs/nope_2b.py:data=flan'
  assert sweep.train_command(run, 'py') == [
      'py', '-m', 'ropex.train', '--config=configs/nope_2b.py:data=flan', '--workdir=out/nope_flan']


def test_overrides_are_validated_and_passed_as_config_flags():
  overrides = [('train.steps', '7'), ('model.remat', 'dots')]
  runs = sweep.load_sweep(TABLE2 + ':data=wiki', 'r', overrides)
  assert sweep.validate(runs[0]).train.steps == 7
  assert sweep.train_command(runs[3], 'python')[-2:] == [
      '--config.train.steps=7', '--config.model.remat=dots']
  with pytest.raises(ConfigError, match="override train.stpes='7' names no config field"):
    sweep.load_sweep(TABLE2, 'r', [('train.stpes', '7')])
  with pytest.raises(ConfigError, match="override train.steps='many' must be a int"):
    sweep.load_sweep(TABLE2, 'r', [('train.steps', 'many')])
  with pytest.raises(ConfigError, match='model.remat=.sometimes. is not allowed'):
    sweep.load_sweep(TABLE2, 'r', [('model.remat', 'sometimes')])
  with pytest.raises(ConfigError, match='train.seq_len'):  # 8192 is no multiple of 1000
    sweep.load_sweep(TABLE2, 'r', [('train.loss_chunk', '1000')])
  with pytest.raises(ConfigError, match='must look like key=value'):
    overrides_lib.parse('train.steps')


def test_bad_sweep_files(tmp_path):
  with pytest.raises(ConfigError, match="data='c4' is not known; allowed: both, wiki, flan"):
    sweep.load_sweep(TABLE2 + ':data=c4', 'r')
  with pytest.raises(ConfigError, match='defines no get_sweep'):
    sweep.load_sweep(os.path.join(ROOT, 'configs', 'nope_2b.py'), 'r')
  twice = tmp_path / 'twice.py'
  nope = os.path.join(ROOT, 'configs', 'nope_2b.py')
  twice.write_text(f'def get_sweep(arg):\n'
                   f'  return [("a", {nope!r}, {{}}), ("a", {nope!r}, {{}})]\n')
  with pytest.raises(ConfigError, match="names run 'a' twice"):
    sweep.load_sweep(str(twice), 'r')
  with pytest.raises(ConfigError, match='is not a file'):
    sweep.load_sweep(str(tmp_path / 'missing.py'), 'r')


def test_launch_commands():
  run = sweep.Run('nope_wiki', 'configs/nope_2b.py:data=wiki', (('train.steps', 5),), 'gs://b/w')
  train = ['python', '-m', 'ropex.train', '--config=configs/nope_2b.py:data=wiki',
           '--workdir=gs://b/w', '--config.train.steps=5']
  assert sweep.launch_command(run, 'local', python='python') == train
  assert sweep.launch_command(run, 'tpu', ['--name', 'pod', '--zone', 'z']) == [
      'bash', os.path.join(ROOT, 'scripts', 'tpu_pod.sh'), 'run', '--name', 'pod', '--zone', 'z',
      '--', *train]
  assert sweep.launch_command(run, 'slurm', ['--nodes=4']) == [
      'sbatch', '--job-name=nope_wiki', '--nodes=4',
      os.path.join(ROOT, 'scripts', 'slurm_train.sbatch'), *train]
  absolute = sweep.Run('n', os.path.join(ROOT, 'configs', 'prope_2b.py:p=0.25'), (), 'runs/n')
  assert sweep.launch_command(absolute, 'tpu')[3:] == [  # relative to the workers' checkout
      '--', 'python', '-m', 'ropex.train', '--config=configs/prope_2b.py:p=0.25',
      '--workdir=runs/n']
  with pytest.raises(ConfigError, match="--launcher='k8s' is not allowed; allowed: local, tpu"):
    sweep.launch_command(run, 'k8s')


def test_execute_runs_in_order_and_reports_failures(monkeypatch):
  runs = sweep.load_sweep(TABLE2 + ':runlocal', 'r')[:3]
  calls = []

  def fake_run(command, check):
    calls.append(command)
    return subprocess.CompletedProcess(command, 3 if len(calls) == 2 else 0)

  monkeypatch.setattr(sweep.subprocess, 'run', fake_run)
  out = io.StringIO()
  assert sweep.execute(runs, 'local', out=out) == [runs[1].name]
  assert calls == [sweep.launch_command(r, 'local') for r in runs]
  assert f'run {runs[1].name} FAILED' in out.getvalue()
  calls.clear()
  assert sweep.execute(runs, 'slurm', dry_run=True, out=out) == [] and calls == []


def test_cli_dry_run_lists_runs_and_runs_nothing(tmp_path):
  out = subprocess.run(
      [sys.executable, '-m', 'ropex.sweep', '--config', 'configs/paper_table2.py', '--dry_run',
       '--workdir_root', str(tmp_path), '--only', 'rope500k_flan,nope_wiki',
       '--override', 'train.steps=4'], capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0] == f'[1/2] nope_wiki  workdir={tmp_path}/nope_wiki'
  assert lines[2] == f'[2/2] rope500k_flan  workdir={tmp_path}/rope500k_flan'
  assert lines[3].strip().endswith(
      f'-m ropex.train --config=configs/rope_2b.py:theta=500000,data=flan '
      f'--workdir={tmp_path}/rope500k_flan --config.train.steps=4')
  assert list(tmp_path.iterdir()) == []
  bad = subprocess.run([sys.executable, '-m', 'ropex.sweep', '--config', TABLE2, '--dry_run',
                        '--only', 'nope'], capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and '--only names unknown run(s) nope' in bad.stderr


def _end_to_end(tmp_path, only):
  root = tmp_path / 'runs'
  command = [sys.executable, '-m', 'ropex.sweep', '--config', TABLE2 + ':runlocal',
             '--workdir_root', str(root)] + [f'--override={k}={v}' for k, v in FAST]
  if only:
    command.append('--only=' + ','.join(only))
  done = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=ROOT)
  assert done.returncode == 0, done.stderr[-3000:]
  workdirs = sorted(str(p) for p in root.iterdir())
  result = report.report(workdirs, str(tmp_path / 'report'))
  return workdirs, result


def test_end_to_end_runlocal_sweep_then_report(tmp_path):
  workdirs, result = _end_to_end(tmp_path, ['prope0.75_local'])
  assert [os.path.basename(w) for w in workdirs] == ['prope0.75_local']
  [run] = result['runs']
  assert (run.row, run.column, run.status, run.step) == ('0.75-RoPE', 'synthetic', 'finished', 3)
  metrics = run_summary.read_metrics(run.workdir)
  assert [r['step'] for r in metrics] == [1, 2, 3]
  assert run.eval_perplexity == metrics[-1]['eval/perplexity']
  assert [loss for _, loss in run.train_curve] == [r['train/loss'] for r in metrics]
  with open(result['table_csv']) as f:
    rows = list(csv.reader(f))
  assert rows == [['PE', 'synthetic (ropex)', 'Wiki (paper)', 'FlanV2 (paper)'],
                  ['0.75-RoPE', f'{run.eval_perplexity:.4f}', '4.4414', '6.4422']]
  assert os.path.getsize(result['png']) > 0


@pytest.mark.slow
def test_end_to_end_full_runlocal_table(tmp_path):
  workdirs, result = _end_to_end(tmp_path, None)
  assert len(workdirs) == 7
  assert sorted(r.row for r in result['runs']) == sorted(paper.PAPER_TABLE2)
  assert all(r.status == 'finished' and r.eval_perplexity > 1 for r in result['runs'])


def test_seed_axis_repeats_every_run_with_its_seed(tmp_path):
  runs = sweep.load_sweep(TABLE2 + ':runlocal', '/r', seeds=sweep.parse_seeds('3'))
  assert [r.name for r in runs[:3]] == ['nope_local_s0', 'nope_local_s1', 'nope_local_s2']
  assert len(runs) == 3 * len(STEMS)
  for r in runs[:3]:
    seed = int(r.name[-1])
    assert dict(r.overrides) == {'train.seed': seed, 'data.seed': seed}
    cfg = sweep.validate(r)
    assert (cfg.train.seed, cfg.data.seed) == (seed, seed)
    assert sweep.train_command(r)[-2:] == [f'--config.train.seed={seed}',
                                           f'--config.data.seed={seed}']
  assert sweep.parse_seeds('0,5,7') == (0, 5, 7) and sweep.parse_seeds(2) == (0, 1)
  assert sweep.parse_seeds('') is None
  for bad in ('0', '1,1', '-1,2', 'x'):
    with pytest.raises(ConfigError, match='--seeds'):
      sweep.parse_seeds(bad)
  nope = os.path.join(ROOT, 'configs', 'nope_2b.py')
  seeded = tmp_path / 'seeded.py'
  seeded.write_text(f'SEEDS = (4, 9)\ndef get_sweep(arg):\n  return [("a", {nope!r}, {{}})]\n')
  assert [r.name for r in sweep.load_sweep(str(seeded), 'r')] == ['a_s4', 'a_s9']
  assert [r.name for r in sweep.load_sweep(str(seeded), 'r', seeds=(1,))] == ['a_s1']
  with pytest.raises(ConfigError, match='seed axis'):
    sweep.load_sweep(str(seeded), 'r', [('train.seed', '3')])
