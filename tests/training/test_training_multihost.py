"""Several processes on loopback (gloo CPU collectives): two processes match one; only process
0 writes logs; a SIGTERM to one process stops both at one step (JAX's preemption sync point);
kill -9 of both and a restart reproduce the uninterrupted run bitwise; checkpoints resume
elastically (2 -> 1 and 1 -> 2 processes)."""

import json
import os
import re
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp

import cli_runs
from ropex.training import checkpoint, inference, metrics, signals

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


def _one_then_two_processes(module, tmp_path, *args) -> list:
  """Trains a run, then runs ``module --workdir RUN`` once as one process (``--out`` one/) and
  once as two processes on loopback (``--out`` two/); returns the two processes' outputs."""
  workdir = str(tmp_path / 'run')
  r = cli_runs.run(workdir, *FLAGS)
  assert r.returncode == 0, r.stderr[-3000:]
  one = cli_runs.run_module(module, f'--workdir={workdir}', f'--out={tmp_path}/one', *args)
  assert one.returncode == 0, one.stderr[-3000:]
  address = f'127.0.0.1:{cli_runs.free_port()}'
  procs = [cli_runs.start_module(module, f'--workdir={workdir}', f'--out={tmp_path}/two', *args,
                                 f'--coordinator_address={address}', '--num_processes=2',
                                 f'--process_id={i}') for i in range(2)]
  outs = _finish(procs)
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


EVAL_FLAGS = ('--lengths=16,40', '--depths=0,1', '--examples=3', '--task_examples=3',
              '--tasks=copy_offset,assoc_recall', '--retrieval=needle')


def test_evaluate_on_two_processes_matches_one_process(tmp_path):
  """``ropex.evaluate`` as two processes (one device each: the run's data=2 mesh spans both):
  parameters restored into both processes' shards, every batch split over them, the results
  gathered; process 0 alone writes them, and they equal a one-process evaluation."""
  outs = _one_then_two_processes('ropex.evaluate', tmp_path, *EVAL_FLAGS)
  assert 'perplexity (± 95% interval over rows): L=16:' in outs[0][0]
  assert 'perplexity' not in outs[1][0]
  with open(tmp_path / 'one' / 'results.json') as f:
    want = json.load(f)
  with open(tmp_path / 'two' / 'results.json') as f:
    got = json.load(f)
  assert got['run']['step'] == want['run']['step'] == 4
  ppl = want['perplexity']['perplexity']
  assert len(ppl) == 2 and all(np.isfinite(p) and p > 1 for p in ppl)   # really computed
  np.testing.assert_allclose(got['perplexity']['perplexity'], ppl, rtol=1e-5)
  np.testing.assert_allclose(got['perplexity']['loss'], want['perplexity']['loss'], rtol=1e-5)
  assert got['perplexity']['accuracy'] == want['perplexity']['accuracy']
  assert sorted(got['tasks']) == ['assoc_recall', 'copy_offset'] and got['retrieval']
  assert json.dumps(got['tasks'], sort_keys=True) == json.dumps(want['tasks'], sort_keys=True)
  assert json.dumps(got['retrieval'], sort_keys=True) == json.dumps(want['retrieval'],
                                                                     sort_keys=True)


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


def _start_two(workdir, *flags, devices=1) -> list:
  """Starts ``ropex.train`` as two processes on loopback."""
  address = f'127.0.0.1:{cli_runs.free_port()}'
  return [cli_runs.start(workdir, *flags, f'--coordinator_address={address}',
                         '--num_processes=2', f'--process_id={i}', devices=devices)
          for i in range(2)]


def _finish(procs) -> list:
  """Waits for ``procs``; returns their (stdout, stderr); kills what is still running."""
  try:
    return [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def _two_processes(workdir, *flags, devices=1):
  """Runs ``ropex.train`` as two processes on loopback; returns their (stdout, stderr)."""
  procs = _start_two(workdir, *flags, devices=devices)
  outs = _finish(procs)
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


# A long run (constant schedule: the horizon does not change the learning rates), stopped or
# killed by the test; checkpoints every 4 steps.
LONG = (*cli_runs.SMALL, '--config.train.steps=100000')


def _losses(workdir) -> dict:
  return {m['step']: m['train/loss'] for m in metrics.read_metrics(workdir)}


def _every_logged_loss(workdir) -> list:
  """(step, loss) of every line of metrics.jsonl, steps re-done after a restart included."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [(r['step'], r['train/loss']) for r in map(json.loads, f)]


def _assert_real_losses(losses: dict) -> None:
  """Computed, not defaults: finite, positive, and different at every step (it trains)."""
  values = list(losses.values())
  assert all(np.isfinite(v) and v > 0 for v in values)
  assert len(set(values)) == len(values)


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tmp_path):
  """JAX's preemption sync point (via orbax's reached_preemption): a SIGTERM to process 1
  alone makes both processes save at the same step and exit 0; the restart continues from that
  step with bitwise the losses of the uninterrupted 2-process run."""
  stopped, ref = str(tmp_path / 'stopped'), str(tmp_path / 'ref')
  procs = _start_two(stopped, *LONG)
  try:
    assert cli_runs.wait_for_step(procs[0], stopped, 2), procs[0].communicate()[1][-3000:]
  finally:
    procs[1].send_signal(signal.SIGTERM)  # the coordinator (process 0) is not signalled
    outs = _finish(procs)
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  k = max(cli_runs.logged_steps(stopped))
  assert f'stopped by {signals.PEER_NOTICE} at step {k}' in outs[0][0]
  for i, (_, err) in enumerate(outs):  # each process says where it stopped
    assert f'process {i} of 2 saved a checkpoint and stops at step {k},' in err, err[-3000:]
  assert checkpoint.saved_steps(stopped)[-1] == k

  end = k + 3
  outs = _two_processes(stopped, *cli_runs.SMALL, f'--config.train.steps={end}')
  assert f'resumed from the checkpoint at step {k} ' in outs[0][0] + outs[0][1]
  assert cli_runs.logged_steps(stopped) == list(range(1, end + 1))  # nothing re-done
  _two_processes(ref, *cli_runs.SMALL, f'--config.train.steps={end}')
  got, want = _losses(stopped), _losses(ref)
  assert sorted(got) == sorted(want) == list(range(1, end + 1))
  _assert_real_losses(want)
  assert got == want


def test_kill_9_of_both_processes_and_restart_reproduces_the_uninterrupted_run(tmp_path):
  killed, ref = str(tmp_path / 'killed'), str(tmp_path / 'ref')
  procs = _start_two(killed, *LONG)
  try:
    assert cli_runs.wait_for_step(procs[0], killed, 9), procs[0].communicate()[1][-3000:]
  finally:
    for p in procs:
      p.send_signal(signal.SIGKILL)
    _finish(procs)
  assert [p.returncode for p in procs] == [-signal.SIGKILL] * 2
  saved, logged = checkpoint.saved_steps(killed), cli_runs.logged_steps(killed)
  # A checkpoint is complete, and steps after it were trained (they are re-done on restart);
  # the save at step 8 may have been cut short by the kill.
  assert saved and saved[-1] >= 4 and max(logged) > saved[-1], (saved, logged)

  end = max(logged) + 3
  outs = _two_processes(killed, *cli_runs.SMALL, f'--config.train.steps={end}')
  resumed = re.search(r'resumed from the checkpoint at step (\d+) ', outs[0][0] + outs[0][1])
  assert resumed and int(resumed[1]) in saved, outs[0]
  restart = int(resumed[1])
  assert cli_runs.logged_steps(killed)[len(logged):] == list(range(restart + 1, end + 1))
  _two_processes(ref, *cli_runs.SMALL, f'--config.train.steps={end}')
  want = _losses(ref)
  assert sorted(want) == list(range(1, end + 1))
  _assert_real_losses(want)
  # Bitwise: every logged loss of both lives of the killed run, re-done steps included.
  assert [loss for _, loss in _every_logged_loss(killed)] == [
      want[s] for s, _ in _every_logged_loss(killed)]
  assert sorted(_losses(killed)) == sorted(want)
  _, params_ref, _ = inference.load_for_inference(ref, end)
  _, params_killed, _ = inference.load_for_inference(killed, end)
  jax.tree.map(np.testing.assert_array_equal, params_killed, params_ref)


def _saved_data_state(workdir, step) -> dict:
  manager = ocp.CheckpointManager(checkpoint.checkpoint_dir(workdir),
                                  item_handlers={'data': ocp.JsonCheckpointHandler()})
  try:
    return manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))['data']
  finally:
    manager.close()


def test_a_one_process_checkpoint_resumes_on_two_processes(tmp_path):
  """Elastic resume, 1 -> 2: the second process takes its rows of the global data state, so
  the run continues with exactly the batches (the saved stream positions at step 8 are equal)
  and the losses of the uninterrupted run."""
  elastic, ref = str(tmp_path / 'elastic'), str(tmp_path / 'ref')
  short = (*cli_runs.SMALL, '--config.data.prefetch=0')
  r = cli_runs.run(elastic, *short, '--config.train.steps=4', devices=1)
  assert r.returncode == 0, r.stderr[-3000:]
  outs = _two_processes(elastic, *short, '--config.train.steps=8')
  assert 'resumed from the checkpoint at step 4 ' in outs[0][0] + outs[0][1]
  assert cli_runs.logged_steps(elastic) == list(range(1, 9))
  r = cli_runs.run(ref, *short, '--config.train.steps=8', devices=1)
  assert r.returncode == 0, r.stderr[-3000:]
  got, want = _losses(elastic), _losses(ref)
  assert sorted(got) == sorted(want) == list(range(1, 9))
  _assert_real_losses(want)
  assert [got[s] for s in range(1, 5)] == [want[s] for s in range(1, 5)]  # the same process
  # Steps 5-8 ran on two processes (another reduction order): equal up to float rounding.
  np.testing.assert_allclose([got[s] for s in range(5, 9)], [want[s] for s in range(5, 9)],
                             rtol=1e-5)
  saved, wanted = _saved_data_state(elastic, 8), _saved_data_state(ref, 8)
  assert saved['step'] == wanted['step'] == 8
  assert saved['iterator'] == wanted['iterator']
  rows = saved['iterator']['doc_index']
  assert len(rows) == 8 and min(rows) > 0  # one position per global row, all moved on


def test_ctrl_c_on_the_coordinator_stops_both_processes_at_one_step(tmp_path):
  """SIGINT is forwarded to JAX's preemption notifier as a SIGTERM: both processes save at the
  same step and exit 0 (process 0 names SIGINT, process 1 the notice it received)."""
  workdir = str(tmp_path / 'interrupted')
  procs = _start_two(workdir, *LONG)
  try:
    assert cli_runs.wait_for_step(procs[0], workdir, 2), procs[0].communicate()[1][-3000:]
  finally:
    procs[0].send_signal(signal.SIGINT)
    outs = _finish(procs)
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  k = max(cli_runs.logged_steps(workdir))
  assert f'stopped by SIGINT at step {k}' in outs[0][0]
  assert f'process 0 of 2 saved a checkpoint and stops at step {k}, stopped by SIGINT' in outs[0][1]
  assert (f'process 1 of 2 saved a checkpoint and stops at step {k}, stopped by '
          f'{signals.PEER_NOTICE}') in outs[1][1]
  assert checkpoint.saved_steps(workdir)[-1] == k
  _, _, restored = inference.load_for_inference(workdir)
  assert restored == k


def test_several_processes_without_the_preemption_service_refuse_to_start(tmp_path,
                                                                          monkeypatch):
  """Without JAX's preemption service orbax would silently report no preemption, so a SIGTERM
  on one host would lose the steps since the last checkpoint: the run stops first."""
  workdir = tmp_path / 'refused'
  monkeypatch.setenv('JAX_ENABLE_PREEMPTION_SERVICE', 'false')
  procs = _start_two(str(workdir), *cli_runs.SMALL, '--config.train.steps=4')
  outs = _finish(procs)
  assert [p.returncode for p in procs] == [2, 2], outs[0][1][-3000:]
  for _, err in outs:
    assert "needs JAX's preemption service" in err and 'Traceback' not in err, err[-3000:]
  assert not workdir.exists()


def test_the_multi_process_stop_check_is_local_and_counts_this_process_steps(monkeypatch):
  """Per step: one call of orbax's reached_preemption with the steps this process has run
  (1, 2, ...), and no collective."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def no_collective(*args, **kwargs):
    raise AssertionError('a collective in the per-step stop check')

  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(multihost_utils, 'reached_preemption_sync_point', lambda step: False)
  monkeypatch.setattr(multihost_utils, 'process_allgather', no_collective)
  monkeypatch.setattr(multihost_utils, 'sync_global_devices', no_collective)
  calls = []
  stop = signals.StopRequest(lambda i: calls.append(i) or i == 3)
  assert [stop.requested(i) for i in (1, 2, 3)] == [False, False, True]
  assert calls == [1, 2, 3]
  assert stop.stopped_by() == signals.PEER_NOTICE


def test_analyze_on_two_processes_matches_one_process(tmp_path):
  """``ropex.analyze`` as two processes on the run's data=2 mesh: the capture and the ablations
  run sharded over both, process 0 writes the report, and its numbers equal one process's."""
  outs = _one_then_two_processes('ropex.analyze', tmp_path, '--prompts=text', '--max_len=24',
                                 '--top_heads=1', '--batch_size=2', '--nohtml')
  assert 'report:' in outs[0][0] and 'report:' not in outs[1][0]
  with open(tmp_path / 'one' / 'summary.json') as f:
    want = json.load(f)
  with open(tmp_path / 'two' / 'summary.json') as f:
    got = json.load(f)
  assert want['mesh'] == 'data=1 x fsdp=1 x tensor=1'   # one process, one device
  assert got['mesh'] == 'data=2 x fsdp=1 x tensor=1' and got['step'] == want['step'] == 4
  assert want['loss'] > 1.0 and len(want['ablations']) == 2   # really computed
  np.testing.assert_allclose(got['loss'], want['loss'], rtol=1e-5)
  np.testing.assert_allclose([r['loss_after'] for r in got['ablations']],
                             [r['loss_after'] for r in want['ablations']], rtol=1e-4)
  assert [(h['layer'], h['head']) for h in got['top_heads']] == [
      (h['layer'], h['head']) for h in want['top_heads']]
