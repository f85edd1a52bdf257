"""``python -m ropex.train`` end to end in subprocesses: bad configs fail cleanly before
anything is written, kill -9 + restart reproduces the uninterrupted run bitwise, and SIGTERM
saves a checkpoint and exits cleanly."""

import os
import signal

import numpy as np

import cli_runs
from ropex.training import metrics, inference


def test_bad_config_value_fails_cleanly_without_touching_workdir(tmp_path):
  workdir = tmp_path / 'never'
  r = cli_runs.run(workdir, '--config.train.schedule=linear')
  assert r.returncode == 2
  assert "train.schedule='linear' is not allowed" in r.stderr
  assert 'cosine, rsqrt, constant' in r.stderr and 'Traceback' not in r.stderr
  assert not workdir.exists()
  for flags, message in (
      (('--config.train.steps=abc',), "--config.train.steps=abc: invalid literal"),
      (('--config.train.stepz=3',), "'stepz'; did you mean 'steps'?"),
      (('--config.mesh.tensor=3',), 'need the device count (1) to be a multiple of 3'),
      (('--config.model.pe.fraction=0.5',), "model.pe.fraction=0.5 is not used by kind 'rope'")):
    r = cli_runs.run(workdir, *flags)
    assert r.returncode == 2 and message in r.stderr and 'Traceback' not in r.stderr, r.stderr
  r = cli_runs.run(workdir, config='configs/tiny.py:pe=bogus')
  assert r.returncode == 2 and 'Traceback' not in r.stderr
  assert r.stderr.strip() == ("ropex.train: config argument pe='bogus' is not known; allowed: "
                              "nope, rope, prope, prope_reversed, partial")
  assert not workdir.exists()


def test_kill_9_and_restart_reproduces_the_uninterrupted_run(tmp_path):
  ref, killed = str(tmp_path / 'ref'), str(tmp_path / 'killed')
  r = cli_runs.run(ref, '--config.train.steps=16', *cli_runs.SMALL)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'finished at step 16' in r.stdout

  # A long run (constant schedule: the horizon does not change the learning rates), killed
  # with SIGKILL once it has passed step 9 (checkpoints are written at 4, 8, ...).
  proc = cli_runs.start(killed, '--config.train.steps=100000', *cli_runs.SMALL)
  try:
    assert cli_runs.wait_for_step(proc, killed, 9), proc.communicate()[1][-3000:]
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  r = cli_runs.run(killed, '--config.train.steps=16', *cli_runs.SMALL)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'resumed from the checkpoint at step' in r.stderr + r.stdout

  want = {m['step']: m['train/loss'] for m in metrics.read_metrics(ref)}
  got = {m['step']: m['train/loss'] for m in metrics.read_metrics(killed)}
  assert sorted(want) == sorted(got) == list(range(1, 17))
  assert got == want  # bitwise-equal losses, including the re-done steps
  _, params_ref, _ = inference.load_for_inference(ref, 16)
  _, params_killed, _ = inference.load_for_inference(killed, 16)
  for a, b in zip(jax_leaves(params_ref), jax_leaves(params_killed)):
    np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.leaves(tree)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  workdir = str(tmp_path / 'term')
  proc = cli_runs.start(workdir, '--config.train.steps=100000', *cli_runs.SMALL)
  try:
    assert cli_runs.wait_for_step(proc, workdir, 2), proc.communicate()[1][-3000:]
  finally:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  last = max(cli_runs.logged_steps(workdir))
  assert f'stopped by SIGTERM at step {last}' in out
  saved = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  assert saved[-1] == last
  _, _, step = inference.load_for_inference(workdir)
  assert step == last
