"""Two processes on loopback (gloo CPU collectives), 2 devices each, train a few steps and
match a single-process, single-device run; only process 0 writes logs."""

import os

import jax
import numpy as np

import cli_runs
from ropex.training import metrics, inference

# After SMALL, so that these win over its eval.steps=0: evaluation runs at the last step.
FLAGS = (*cli_runs.SMALL, '--config.train.steps=4', '--config.eval.steps=1',
         '--config.eval.every_steps=0')


def test_two_processes_match_one_process(tmp_path):
  multi, single = str(tmp_path / 'multi'), str(tmp_path / 'single')
  outs = _two_processes(multi, *FLAGS, devices=2)
  assert 'finished at step 4' in outs[0][0] and 'finished' not in outs[1][0]
  r = cli_runs.run(single, *FLAGS, devices=1)
  assert r.returncode == 0, r.stderr[-3000:]

  got, want = metrics.read_metrics(multi), metrics.read_metrics(single)
  assert [m['step'] for m in got] == [m['step'] for m in want] == [1, 2, 3, 4]
  for key in ('train/loss', 'train/grad_norm'):
    np.testing.assert_allclose([m[key] for m in got], [m[key] for m in want], rtol=1e-5)
  # Evaluation really ran in both (only at the last step) and gave a real, finite value.
  assert [m['step'] for m in got if 'eval/loss' in m] == [4]
  assert [m['step'] for m in want if 'eval/loss' in m] == [4]
  assert np.isfinite(got[-1]['eval/loss']) and got[-1]['eval/loss'] > 0
  np.testing.assert_allclose(got[-1]['eval/loss'], want[-1]['eval/loss'], rtol=1e-5)
  with open(os.path.join(multi, 'metrics.jsonl')) as f:
    assert len(f.readlines()) == 4  # one writer
  assert sorted(os.listdir(multi)) == ['checkpoints', 'config.json', 'metrics.jsonl', 'tb']
  _, params_multi, _ = inference.load_for_inference(multi)
  _, params_single, _ = inference.load_for_inference(single)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               params_multi, params_single)


def test_auto_detection_of_multi_process_environments(monkeypatch):
  from ropex.training import distributed  # pylint: disable=g-import-not-at-top
  for var in ('TPU_WORKER_HOSTNAMES', 'TPU_PROCESS_ADDRESSES', 'MEGASCALE_COORDINATOR_ADDRESS',
              'SLURM_JOB_ID', 'SLURM_NTASKS', 'SLURM_NPROCS', 'JAX_COORDINATOR_ADDRESS',
              'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'):
    monkeypatch.delenv(var, raising=False)
  assert not distributed.auto_detected()
  assert distributed.initialize() is False  # a single process: nothing to initialise
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'host0')
  assert not distributed.auto_detected()  # a single-host TPU VM
  monkeypatch.setenv('TPU_WORKER_HOSTNAMES', 'host0,host1')
  assert distributed.auto_detected()
  assert distributed.initialize(mode='off') is False
  monkeypatch.delenv('TPU_WORKER_HOSTNAMES')
  monkeypatch.setenv('SLURM_JOB_ID', '7')
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert not distributed.auto_detected()
  monkeypatch.setenv('SLURM_NTASKS', '4')
  assert distributed.auto_detected()


def _two_processes(workdir, *flags, devices=1):
  """Runs ``ropex.train`` as two processes on loopback; returns their (stdout, stderr)."""
  address = f'127.0.0.1:{cli_runs.free_port()}'
  procs = [cli_runs.start(workdir, *flags, f'--coordinator_address={address}',
                          '--num_processes=2', f'--process_id={i}', devices=devices)
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def test_a_two_process_checkpoint_resumes_on_one_process(tmp_path):
  """Elastic resume: the data state is global (one entry per batch row), so a checkpoint of a
  2-process run continues on 1 process with the batches of the uninterrupted run."""
  elastic, ref = str(tmp_path / 'elastic'), str(tmp_path / 'ref')
  short = (*cli_runs.SMALL, '--config.train.steps=4', '--config.data.prefetch=0')
  _two_processes(elastic, *short)
  r = cli_runs.run(elastic, *cli_runs.SMALL, '--config.train.steps=8',
                   '--config.data.prefetch=0', devices=1)
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'resumed from the checkpoint at step 4' in r.stdout + r.stderr
  r = cli_runs.run(ref, *cli_runs.SMALL, '--config.train.steps=8', '--config.data.prefetch=0')
  assert r.returncode == 0, r.stderr[-3000:]
  got = {m['step']: m['train/loss'] for m in metrics.read_metrics(elastic)}
  want = {m['step']: m['train/loss'] for m in metrics.read_metrics(ref)}
  assert sorted(got) == sorted(want) == list(range(1, 9))
  np.testing.assert_allclose([got[s] for s in range(1, 9)], [want[s] for s in range(1, 9)],
                             rtol=1e-5)
