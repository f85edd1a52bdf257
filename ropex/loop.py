"""The training loop: ``train(config, workdir)``, plus the pieces other tools build on.

* ``make_train_step(config, mesh) -> (train_step, abstract_state, abstract_batch)``: the jitted
  step and ShapeDtypeStructs (with shardings) to ``.lower(...).compile()`` it on any mesh.
* ``init_state(config, mesh)``: the initial TrainState, created directly sharded.

One loop iteration: next process-local batch -> global ``jax.Array`` -> train step (state
donated). Metrics are fetched one step late so the host never stalls the device, except at
log / eval / checkpoint steps, where the step's loss is checked before anything is saved.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from ropex import checkpoint, data, metrics, optim, sharding, step, validation
from ropex.positional import ConfigError

log = logging.getLogger('ropex')


class NonFiniteLossError(RuntimeError):
  """The loss or gradient norm became NaN or Inf; the run stopped without saving that step.
  ``record`` holds the step's metrics (logged as nulls, so reports mark the run diverged)."""

  def __init__(self, message: str, step: int | None = None, record: dict | None = None):
    super().__init__(message)
    self.step, self.record = step, record or {}


def make_train_step(config, mesh):
  """``(train_step_jitted, abstract_state, abstract_batch)`` for ``config`` on ``mesh``."""
  setup = step.make_setup(config, mesh)
  return (step.make_train_step(setup), setup.abstract_state,
          step.abstract_batch(setup, int(config.train.batch_size)))


def init_state(config, mesh) -> step.TrainState:
  return step.init_state(step.make_setup(config, mesh))


class _StopRequest:
  """SIGTERM / SIGINT set a flag; the loop saves a checkpoint and exits at the next step.
  A second signal gets the default behaviour."""

  def __init__(self):
    self.signum, self._previous = None, {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no handlers
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    signal.signal(signum, signal.SIG_DFL)

  def requested(self) -> bool:
    flag = self.signum is not None
    if jax.process_count() > 1:  # every process must stop at the same step
      flag = bool(np.max(multihost_utils.process_allgather(np.int32(flag))))
    return flag

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


class _Window:
  """Train metrics accumulated between two log steps."""

  def __init__(self, tokens_per_step: int):
    self.tokens_per_step = tokens_per_step
    self.loss_sum, self.loss_n, self.grad_norm = 0.0, 0, float('nan')
    self.timer, self.timed_tokens, self.last_tokens_per_s = None, 0, float('nan')

  def add(self, step_i: int, m: dict) -> None:
    loss, grad_norm = float(m['loss']), float(m['grad_norm'])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      raise NonFiniteLossError(
          f'train/loss={loss} and train/grad_norm={grad_norm} at step {step_i}', step_i,
          {'train/loss': loss, 'train/grad_norm': grad_norm})
    self.loss_sum, self.loss_n, self.grad_norm = self.loss_sum + loss, self.loss_n + 1, grad_norm
    if self.timer is None:  # the first step includes compilation: not timed
      self.timer = time.perf_counter()
    else:
      self.timed_tokens += self.tokens_per_step

  def tokens_per_s(self) -> float:
    if self.timer is not None and self.timed_tokens:
      self.last_tokens_per_s = self.timed_tokens / (time.perf_counter() - self.timer)
    return self.last_tokens_per_s

  def restart_timer(self) -> None:
    self.timer, self.timed_tokens = time.perf_counter(), 0

  def pop(self, lr: float) -> dict:
    out = {'train/loss': self.loss_sum / max(self.loss_n, 1), 'train/learning_rate': lr,
           'train/grad_norm': self.grad_norm, 'train/tokens_per_s': self.tokens_per_s()}
    self.loss_sum, self.loss_n = 0.0, 0
    return out


class _Evaluator:
  """Evaluates on the same ``eval.steps`` held-out batches every time."""

  def __init__(self, config, setup, process_index, process_count):
    self.tasks = data.task_names(config)
    self.steps = int(config.eval.steps)
    self.rows = data.batch_size(config, 'eval')
    self.setup = setup
    self.eval_step = step.make_eval_step(setup, len(self.tasks))
    self.it = data.make_iterator(config, 'eval', process_index, process_count) \
        if self.steps else None
    self.start = self.it.get_state() if self.it else None

  def __call__(self, params) -> dict:
    self.it.set_state(self.start)
    totals = None
    for _ in range(self.steps):
      batch = sharding.global_batch(next(self.it), self.setup.batch_sharding, self.rows,
                                    step.BATCH_DTYPES)
      out = jax.device_get(self.eval_step(params, batch))
      totals = out if totals is None else jax.tree.map(np.add, totals, out)
    loss = float(totals['ce_sum'] / max(float(totals['weight_sum']), 1.0))
    result = {'eval/loss': loss, 'eval/perplexity': math.exp(min(loss, 700.0))}
    for name, correct, total in zip(self.tasks, totals['correct_K'], totals['total_K']):
      if total:
        result[f'eval/accuracy/{name}'] = float(correct) / float(total)
    return result

  def close(self):
    if self.it is not None and hasattr(self.it, 'close'):
      self.it.close()


def _prepare_workdir(config, workdir: str, primary: bool) -> None:
  """Refuses a workdir whose run has another model; writes ``config.json``."""
  path = os.path.join(workdir, 'config.json')
  current = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous.get('model') != current['model']:
      raise ConfigError(f'--workdir {workdir} holds a run with a different model block; '
                        f'allowed: the same model config (to resume) or a new --workdir')
  if primary:
    os.makedirs(workdir, exist_ok=True)
    with open(path + '.tmp', 'w') as f:
      f.write(config.to_json(indent=2))
    os.replace(path + '.tmp', path)


def train(config, workdir: str) -> dict:
  """Trains (or resumes) ``config`` in ``workdir``; returns the final summary dict.

  Raises ConfigError (before anything is compiled or written) for a bad config, and
  NonFiniteLossError if the loss diverges (no checkpoint is written for a bad step)."""
  process_index, process_count = jax.process_index(), jax.process_count()
  primary = process_index == 0
  workdir = os.path.abspath(workdir)
  validation.validate(config, jax.device_count(), process_count)
  mesh = sharding.make_mesh(config)
  setup = step.make_setup(config, mesh)
  train_step = step.make_train_step(setup)
  evaluator = _Evaluator(config, setup, process_index, process_count)
  it = data.make_iterator(config, 'train', process_index, process_count)
  _prepare_workdir(config, workdir, primary)  # the first write into the workdir
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint)
  restored = ckpt.restore_latest(setup.abstract_state)
  if restored:
    state, data_state, start = restored
    it.set_state(data_state)
  else:
    state, start = step.init_state(setup), 0
  tc = config.train
  steps, rows = int(tc.steps), int(tc.batch_size)
  schedule = optim.learning_rate_schedule(tc)
  writer = metrics.MetricsWriter(workdir, primary)
  progress = metrics.Progress(start, steps, primary, desc=config.get('name', 'train'))
  if restored and primary:
    progress.write(f'ropex: resumed from the checkpoint at step {start} in {workdir}')
  window, record, last = _Window(rows * int(tc.seq_len)), {}, {}
  started, stop_signal = time.perf_counter(), None

  def consume(step_i, m):
    window.add(step_i, jax.device_get(m))
    progress.update(1, loss=window.loss_sum / window.loss_n, tok_s=window.tokens_per_s())

  step_i, pending = start, None
  try:
    with _StopRequest() as stop:
      while step_i < steps:
        batch = sharding.global_batch(next(it), setup.batch_sharding, rows, step.BATCH_DTYPES)
        state, m = train_step(state, batch)
        step_i += 1
        if pending:
          consume(*pending)
        pending = (step_i, m)
        stopping = stop.requested()
        log_due = step_i % int(tc.log_every_steps) == 0 or step_i == steps or stopping
        eval_due = evaluator.steps and (step_i == steps or (
            config.eval.every_steps and step_i % int(config.eval.every_steps) == 0))
        save_due = stopping or step_i == steps or ckpt.due(step_i)
        if not (log_due or eval_due or save_due):
          continue
        consume(*pending)
        pending, record = None, {}
        if log_due:
          record.update(window.pop(float(schedule(step_i - 1))))
        if eval_due:
          record.update(evaluator(state.params))
        writer.write(step_i, record)
        last.update(record)
        ckpt.save(step_i, state, it.get_state(), force=stopping or step_i == steps)
        window.restart_timer()
        if stopping:
          stop_signal = signal.Signals(stop.signum).name if stop.signum else 'a peer process'
          break
  except NonFiniteLossError as e:
    writer.write(e.step, e.record)  # logged as nulls: reports mark the run as diverged
    ckpt.wait()
    good = ckpt.latest_step()
    raise NonFiniteLossError(
        f'stopping: {e}; nothing was saved for it. The last good checkpoint is '
        + (f'step {good} in {checkpoint.checkpoint_dir(workdir)}' if good is not None
           else 'none (no checkpoint was written yet)')) from None
  finally:
    ckpt.close()
    progress.close()
    writer.close()
    evaluator.close()
    if hasattr(it, 'close'):
      it.close()

  if step_i == start and primary:  # nothing left to train: report the run's last metrics
    for record in metrics.read_metrics(workdir):
      last.update({k: v for k, v in record.items() if k != 'step'})
  summary = dict(last, step=step_i, workdir=workdir, stopped_by=stop_signal,
                 seconds=time.perf_counter() - started)
  if primary:
    print(format_summary(config, summary), flush=True)
  return summary


def format_summary(config, s: dict) -> str:
  w = s['workdir']
  head = (f'ropex: {config.get("name", "run")} stopped by {s["stopped_by"]} at step {s["step"]}'
          f' (checkpoint saved; rerun the same command to resume)' if s['stopped_by'] else
          f'ropex: {config.get("name", "run")} finished at step {s["step"]}')
  lines = [head + f' in {s["seconds"]:.0f}s']
  fmt = lambda key: f'{s[key]:.4g}' if s.get(key) is not None else 'n/a'
  lines.append(f'  train/loss {fmt("train/loss")}   eval/loss {fmt("eval/loss")}   '
               f'eval/perplexity {fmt("eval/perplexity")}   tokens/s {fmt("train/tokens_per_s")}')
  accs = {k.rsplit('/', 1)[1]: v for k, v in s.items() if k.startswith('eval/accuracy/')}
  if accs:
    lines.append('  eval accuracy: ' + '   '.join(f'{k} {v:.3f}' for k, v in accs.items()))
  lines.append(f'  outputs: {w}/metrics.jsonl, {w}/tb (tensorboard --logdir {w}/tb), '
               f'{w}/checkpoints, {w}/config.json')
  return '\n'.join(lines)
