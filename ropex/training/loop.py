"""The training loop: ``train(config, workdir)``, plus the pieces other tools build on.

* ``make_train_step(config, mesh) -> (train_step, abstract_state, abstract_batch)``: the jitted
  step and ShapeDtypeStructs (with shardings) to ``.lower(...).compile()`` it on any mesh.
* ``init_state(config, mesh)``: the initial TrainState, created directly sharded.

``train`` reads as its steps: :func:`_start` (validate, build, restore or initialise),
:func:`_run_steps` (the loop), :func:`_diverged` (a NaN/Inf loss), :func:`_summarize`.

One loop iteration: next process-local batch -> global ``jax.Array`` -> train step (state
donated). Metrics are fetched one step late so the host never stalls the device, except at
log / eval / checkpoint steps, where the step's loss is checked before anything is saved.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from etils import epath
import jax

from ropex import data, inputs
from ropex.training import (checkpoint, data_state, init_from, metrics, optim, sharding, signals,
                            step, validation)
from ropex.training import workdir as workdir_lib
from ropex.training.evaluator import Evaluator
from ropex.training.metrics import NonFiniteLossError
from ropex.training.signals import StopRequest
from ropex.training.workdir import format_summary

log = logging.getLogger('ropex')


def make_train_step(config, mesh):
  """``(train_step_jitted, abstract_state, abstract_batch)`` for ``config`` on ``mesh``."""
  setup = step.make_setup(config, mesh)
  return (step.make_train_step(setup), setup.abstract_state,
          step.abstract_batch(setup, int(config.train.batch_size)))


def init_state(config, mesh) -> step.TrainState:
  return step.init_state(step.make_setup(config, mesh))


@dataclasses.dataclass
class _Run:
  """Everything one training run holds while it trains."""
  config: Any
  workdir: str
  primary: bool
  setup: step.Setup
  train_step: Any
  evaluator: Evaluator
  it: Any
  ckpt: checkpoint.Checkpointer
  state: Any
  start: int
  writer: metrics.MetricsWriter
  progress: metrics.Progress
  last: dict = dataclasses.field(default_factory=dict)

  def close(self) -> None:
    self.ckpt.close()
    self.progress.close()
    self.writer.close()
    self.evaluator.close()
    if hasattr(self.it, 'close'):
      self.it.close()


def train(config, workdir: str) -> dict:
  """Trains (or resumes) ``config`` in ``workdir``; returns the final summary dict.

  Raises ConfigError (before anything is compiled or written) for a bad config, and
  NonFiniteLossError if the loss diverges (no checkpoint is written for a bad step)."""
  started = time.perf_counter()
  run = _start_or_leave_nothing(config, workdir)
  try:
    step_i, stop_signal = _run_steps(run)
  except NonFiniteLossError as e:
    raise _diverged(run, e) from None
  finally:
    run.close()
  return _summarize(run, step_i, stop_signal, time.perf_counter() - started)


def _check(config, workdir: str) -> None:
  """Everything that reads only: the config, the workdir (writable, reachable, resumable)."""
  validation.validate(config, jax.device_count(), jax.process_count())
  if jax.process_count() > 1:
    signals.require_preemption_service()  # before anything is compiled or written
  inputs.output(workdir, '--workdir')  # writable and reachable, before anything is built
  workdir_lib.check_resumable(config, workdir)  # reads only: a refused resume writes nothing


def _start_or_leave_nothing(config, workdir: str) -> _Run:
  """:func:`_check`, then :func:`_start`; when that fails or is interrupted (SIGTERM during
  set-up) in a workdir it created, the workdir is removed again: a run that never started
  leaves no partial workdir."""
  root = epath.Path(checkpoint.resolve(workdir))
  _check(config, str(root))
  fresh = not root.exists()
  try:
    return _start(config, workdir)
  except BaseException:
    if fresh and jax.process_index() == 0 and root.exists():
      root.rmtree()
    raise


def _start(config, workdir: str) -> _Run:
  """Builds the step and the data, writes ``config.json``, restores or initialises (the
  config and workdir are checked: :func:`_check`)."""
  process_index, process_count = jax.process_index(), jax.process_count()
  primary = process_index == 0
  workdir = checkpoint.resolve(workdir)
  setup = step.make_setup(config, sharding.make_mesh(config))
  train_step = step.make_train_step(setup)
  evaluator = Evaluator(config, setup, process_index, process_count)
  it = data.make_iterator(config, 'train', process_index, process_count)
  pretrained = None if checkpoint.has_checkpoints(workdir) else init_from.load(config, setup)
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint, json.loads(config.to_json()))
  restored = ckpt.restore_latest(setup.abstract_state)
  if restored:
    state, saved_data, start = restored
    mine = it.get_state()
    it.set_state(data_state.local(saved_data, mine['first_stream'], mine['num_streams']))
  else:
    state, start = init_from.initial_state(setup, pretrained, workdir), 0
  workdir_lib.write_config(config, workdir, primary)
  writer = metrics.MetricsWriter(workdir, primary)
  progress = metrics.Progress(start, int(config.train.steps), primary,
                              desc=config.get('name', 'train'))
  if restored and primary:
    progress.write(f'ropex: resumed from the checkpoint at step {start} in {workdir}')
  return _Run(config, workdir, primary, setup, train_step, evaluator, it, ckpt, state, start,
              writer, progress)


def _run_steps(run: _Run) -> tuple[int, str | None]:
  """Trains until ``train.steps`` or a stop request; returns (last step, stopping signal)."""
  config, tc = run.config, run.config.train
  steps, rows = int(tc.steps), int(tc.batch_size)
  schedule = optim.learning_rate_schedule(tc)
  window = metrics.Window(rows * int(tc.seq_len))

  def consume(step_i, m):
    window.add(step_i, jax.device_get(m))
    run.progress.update(1, loss=window.loss_sum / window.loss_n, tok_s=window.tokens_per_s())

  step_i, pending = run.start, None
  with StopRequest(run.ckpt.manager.reached_preemption) as stop:
    while step_i < steps:
      batch = sharding.global_batch(next(run.it), run.setup.batch_sharding, rows,
                                    step.BATCH_DTYPES)
      run.state, m = run.train_step(run.state, batch)
      step_i += 1
      run.ckpt.poll()  # a failed background save stops the run here
      if pending:
        consume(*pending)
      pending = (step_i, m)
      stopping = stop.requested(step_i - run.start)
      log_due = step_i % int(tc.log_every_steps) == 0 or step_i == steps or stopping
      eval_due = run.evaluator.steps and (step_i == steps or (
          config.eval.every_steps and step_i % int(config.eval.every_steps) == 0))
      save_due = stopping or step_i == steps or run.ckpt.due(step_i)
      if not (log_due or eval_due or save_due):
        continue
      consume(*pending)
      pending, record = None, {}
      if log_due:
        record.update(window.pop(float(schedule(step_i - 1))))
      if eval_due:
        record.update(run.evaluator(run.state.params))
      run.writer.write(step_i, record)
      run.last.update(record)
      run.ckpt.save(step_i, run.state, run.it.get_state(), force=stopping or step_i == steps)
      window.restart_timer()
      if stopping:
        why = stop.stopped_by()
        _log_stop(step_i, why)
        return step_i, why
  return step_i, None


def _log_stop(step_i: int, why: str) -> None:
  """With several processes each one says where it stopped (process 0 also prints the
  summary)."""
  if jax.process_count() > 1:
    log.warning('ropex: process %d of %d saved a checkpoint and stops at step %d, stopped by %s',
                jax.process_index(), jax.process_count(), step_i, why)


def _diverged(run: _Run, e: NonFiniteLossError) -> NonFiniteLossError:
  """Logs the bad step (as nulls: reports mark the run diverged); names the last good save."""
  run.writer.write(e.step, e.record)
  run.ckpt.wait()
  good = run.ckpt.latest_step()
  return NonFiniteLossError(
      f'stopping: {e}; nothing was saved for it. The last good checkpoint is '
      + (f'step {good} in {checkpoint.checkpoint_dir(run.workdir)}' if good is not None
         else 'none (no checkpoint was written yet)'))


def _summarize(run: _Run, step_i: int, stop_signal: str | None, seconds: float) -> dict:
  last = dict(run.last)
  if step_i == run.start and run.primary:  # nothing left to train: the run's last metrics
    for record in metrics.read_metrics(run.workdir):
      last.update({k: v for k, v in record.items() if k != 'step'})
  summary = dict(last, step=step_i, workdir=run.workdir, stopped_by=stop_signal,
                 seconds=seconds)
  if run.primary:
    print(format_summary(run.config, summary), flush=True)
  return summary
