"""A full disk: the run stops at the failed save with one line naming the checkpoint and the
last complete one, which stays intact and resumable. Needs root (mounts a 9 MiB tmpfs)."""

import os
import shutil
import subprocess

import pytest

import cli_runs
from ropex.training import checkpoint, inference, metrics

FLAGS = ('--config.train.steps=20', '--config.train.batch_size=8', '--config.train.seq_len=64',
         '--config.train.schedule=constant', '--config.train.log_every_steps=1',
         '--config.checkpoint.every_steps=4', '--config.eval.steps=0')


@pytest.fixture
def tiny_disk(tmp_path):
  mount = tmp_path / 'disk'
  mount.mkdir()
  if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=9m', 'tmpfs',
                                          str(mount)], capture_output=True).returncode:
    pytest.skip('mounting a tmpfs needs root')
  yield mount
  subprocess.run(['umount', str(mount)], check=True)


def test_a_full_disk_stops_the_run_at_the_failed_save(tiny_disk, tmp_path):
  workdir = tiny_disk / 'run'
  r = cli_runs.run(workdir, *FLAGS)  # one checkpoint (~6 MB) fits, the second does not
  assert r.returncode == 4, r.stderr[-3000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last == (f'ropex.train: no space left on device writing checkpoint 8 in '
                  f'{workdir}/checkpoints; the last complete checkpoint is step 4')
  assert 'RESOURCE_EXHAUSTED' not in r.stderr  # orbax's thread tracebacks are not printed
  steps = [m['step'] for m in metrics.read_metrics(workdir)]
  # Stopped at the first step after the background write reported the failure: how many steps
  # that takes depends on the write's speed, but never past the next checkpoint step (12),
  # whose save waits for the failed one; no later checkpoint was written.
  assert 8 <= max(steps) <= 12
  assert checkpoint.saved_steps(workdir) == [4]
  _, _, step = inference.load_for_inference(workdir)  # checksums verified
  assert step == 4
  resumed = tmp_path / 'resumed'
  shutil.copytree(workdir, resumed, ignore=shutil.ignore_patterns('*.orbax-checkpoint-tmp*'))
  r = cli_runs.run(resumed, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'resumed from the checkpoint at step 4' in r.stdout + r.stderr
  assert 'finished at step 20' in r.stdout
