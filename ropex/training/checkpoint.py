"""Checkpoints: orbax ``CheckpointManager`` under ``WORKDIR/checkpoints/<step>/``.

Each step directory holds ``state`` (the :class:`ropex.training.step.TrainState`: step, float32
params in the scanned layout, optimizer state), ``data`` (the global data-iterator state, see
:mod:`ropex.training.data_state`), ``config`` (the run's ``config.json``, so that a workdir that
lost it is still checked on resume) and ``ropex_checksums.json`` (:mod:`ropex.training.integrity`).

Restoring never resets a run by accident:

* a step whose files do not match its checksums is *unreadable*: newer unreadable steps are
  moved to ``WORKDIR/checkpoints_corrupt/`` with a warning and the newest good one is used;
* if no step is readable, nothing is moved and the run stops (:class:`ConfigError`);
* a checkpoint whose array tree differs from the state the config builds stops the run
  (:class:`ConfigError`), nothing moved or written;
* transient storage errors are retried; any other error propagates (nothing is set aside).

A save that fails (disk full, read-only) raises :class:`CheckpointSaveError` at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from typing import Any

from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from ropex import paths
from ropex.errors import ConfigError
from ropex.training import data_state, integrity, resume

log = logging.getLogger('ropex')
CONFIG_ITEM = 'config'   # the run's config.json, saved with every step


_UNREADABLE = ('restore its files, or move the step out of checkpoints/ to resume from an older '
               'one, or use a new --workdir (nothing was moved or written)')


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written; the message names it and the last complete one."""


def resolve(workdir) -> str:
  """A workdir as an absolute local path, or unchanged for a URL such as ``gs://b/run`` (one
  epath cannot serve raises ConfigError: it never becomes a local ``gs:`` folder)."""
  return paths.resolve(workdir, '--workdir')


def checkpoint_dir(workdir) -> str:
  return str(epath.Path(resolve(workdir)) / 'checkpoints')


def saved_steps(workdir) -> list[int]:
  """Finished steps under ``WORKDIR/checkpoints`` (orbax's temporary directories excluded)."""
  directory = epath.Path(checkpoint_dir(workdir))
  if not directory.exists():
    return []
  return sorted(ocp.utils.checkpoint_steps(directory))


def saved_config(workdir) -> dict | None:
  """The run config saved in the newest checkpoint step that has one (item ``config``, the
  JSON of ``config.json``), or None."""
  directory = epath.Path(checkpoint_dir(workdir))
  for step in reversed(saved_steps(workdir)):
    path = directory / str(step) / CONFIG_ITEM / 'metadata'
    if path.exists():
      try:
        return json.loads(path.read_text())
      except ValueError as e:
        raise ConfigError(f'{path} is not valid JSON ({e}); restore the run\'s config.json, or '
                          'use a new --workdir') from None
  return None


def has_checkpoints(workdir: str) -> bool:
  """Whether ``workdir`` holds any finished checkpoint step."""
  path = epath.Path(checkpoint_dir(workdir))
  return path.is_dir() and bool(ocp.utils.checkpoint_steps(path))


class Checkpointer:
  """Saves every ``checkpoint.every_steps`` steps (and on demand), keeps ``checkpoint.keep``."""

  def __init__(self, workdir: str, ckpt_cfg, config_json: dict | None = None):
    self.workdir = resolve(workdir)
    self.config_json = config_json  # saved with every step as item ``config`` when given
    self.every_steps = int(ckpt_cfg.every_steps)
    self.primary = jax.process_index() == 0
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(ckpt_cfg.keep),
        enable_async_checkpointing=bool(ckpt_cfg.async_save), cleanup_tmp_directories=True,
        create=True)
    self.manager = ocp.CheckpointManager(
        checkpoint_dir(workdir), options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'data': ocp.JsonCheckpointHandler(),
                       CONFIG_ITEM: ocp.JsonCheckpointHandler()})
    self._unsealed: int | None = None  # a step saved whose checksums are not written yet
    self._sealer: threading.Thread | None = None
    self._seal_error: BaseException | None = None
    self.failed = False
    self._log_scope = _SaveLogScope()

  # --- saving --------------------------------------------------------------------------------

  def save(self, step: int, state, local_data_state: dict, force: bool = False) -> bool:
    """Saves if ``step`` is due (or ``force``); returns whether a save started. Every process
    calls it at the same steps (the data state is gathered)."""
    if not (force or self.due(step)) or step in self.manager.all_steps():
      return False
    data = data_state.gather(local_data_state)
    self._seal()  # the previous save must be complete (orbax waits for it anyway)
    self._unsealed = step
    self._log_scope.enter()
    items = {'state': ocp.args.StandardSave(state),
             'data': ocp.args.JsonSave({'step': int(step), 'iterator': data})}
    if self.config_json is not None:
      items[CONFIG_ITEM] = ocp.args.JsonSave(self.config_json)
    self._saving(lambda: self.manager.save(step, force=True,
                                           args=ocp.args.Composite(**items)))
    if not self.manager._options.enable_async_checkpointing:  # pylint: disable=protected-access
      self._seal()
    return True

  def poll(self) -> None:
    """Called every step: raises :class:`CheckpointSaveError` as soon as a background save has
    failed, and starts writing a finished save's checksums without waiting for the next."""
    finished = self._unsealed is not None and not self.manager.is_saving_in_progress()
    self._saving(self.manager.check_for_errors)  # after `finished`: a failure is seen first
    if self._sealer is not None and not self._sealer.is_alive():
      self._sealer.join()
      self._sealer = None
    self._raise_seal_error()
    if finished and self._sealer is None and self._unsealed is not None:
      self._saving(self.manager.wait_until_finished)  # returns at once; raises a failure
      self._start_checksums()

  def _seal(self) -> None:
    """Blocks until the pending save and its checksums are written."""
    if self._unsealed is not None and self._sealer is None:
      self._saving(self.manager.wait_until_finished)
      self._start_checksums()
    if self._sealer is not None:
      self._sealer.join()
      self._sealer = None
    self._raise_seal_error()

  def _start_checksums(self) -> None:
    """Process 0 hashes the finished step in a thread; the others have nothing to do."""
    if not self.primary:
      self._unsealed = None
      self._log_scope.exit()
      return
    step_dir = epath.Path(checkpoint_dir(self.workdir)) / str(self._unsealed)
    self._sealer = threading.Thread(target=self._write_checksums, args=(step_dir,),
                                    daemon=False, name='ropex-checksums')
    self._sealer.start()

  def _write_checksums(self, step_dir) -> None:
    try:
      integrity.write(step_dir)
      self._unsealed = None
      self._log_scope.exit()
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in the main thread)
      self._seal_error = e

  def _raise_seal_error(self) -> None:
    error, self._seal_error = self._seal_error, None
    if error is not None:
      self._saving(lambda: _raise(error))

  def _saving(self, fn) -> None:
    """Runs an orbax save call; any error it raises (orbax re-raises its background thread's
    errors here) is a failed save: the run stops with :class:`CheckpointSaveError`."""
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-except  (re-raised as a failed save)
      self.failed = True
      step = self._unsealed
      complete = [s for s in self.manager.all_steps() if s != step]
      last = f'step {max(complete)}' if complete else 'none'
      raise CheckpointSaveError(f'{_reason(e)} writing checkpoint {step} in '
                                f'{checkpoint_dir(self.workdir)}; the last complete checkpoint '
                                f'is {last}') from None

  def due(self, step: int) -> bool:
    return step % self.every_steps == 0

  # --- restoring -----------------------------------------------------------------------------

  def restore_latest(self, abstract_state) -> tuple[Any, dict, int] | None:
    """(state, this process's global data-iterator state, step) of the newest readable step,
    or None when the workdir has no checkpoint at all."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    if not steps:
      return None
    chosen, problems = self._newest_readable(steps)
    if chosen is None:
      raise ConfigError(
          f'no checkpoint in {checkpoint_dir(self.workdir)} is readable ('
          + '; '.join(f'step {s}: {p}' for s, p in problems.items())
          + '); nothing was moved or started: restore the files, or use a new --workdir')
    self._check_layout(chosen, abstract_state)
    for step in steps:
      if step > chosen:
        self._set_aside(step, problems[step])
    with integrity.reading_checkpoint(self._step_dir(chosen), _UNREADABLE):
      restored = integrity.retry(lambda: self.manager.restore(chosen, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())),
          f'reading checkpoint {chosen}')
    data = restored['data']
    if int(data['step']) != chosen or int(restored['state'].step) != chosen:
      raise ConfigError(f'checkpoint {chosen} in {checkpoint_dir(self.workdir)} stores step '
                        f'{data["step"]} / {int(restored["state"].step)}; it was not written '
                        'by this step of a ropex run: use a new --workdir')
    return restored['state'], data['iterator'], chosen

  def _newest_readable(self, steps: list[int]) -> tuple[int | None, dict[int, str]]:
    """The step :func:`integrity.choose` picks (verified first), and what is wrong with each
    newer one."""

    def verdict(step: int) -> str | None:
      step_dir = epath.Path(checkpoint_dir(self.workdir)) / str(step)
      problem = integrity.retry(lambda: integrity.verify(
          step_dir, jax.process_index(), jax.process_count()), f'verifying checkpoint {step}')
      return _first_problem(problem)

    choice = integrity.choose(steps, verdict, where=checkpoint_dir(self.workdir))
    return choice.step, choice.passed_over

  def _check_layout(self, step: int, abstract_state) -> None:
    with integrity.reading_checkpoint(self._step_dir(step), _UNREADABLE):
      saved = integrity.retry(lambda: self.manager.item_metadata(step)['state'],
                              f'reading checkpoint {step} metadata')
    difference = resume.layout_difference(saved, abstract_state)
    if difference:
      raise ConfigError(
          f'checkpoint {step} in {checkpoint_dir(self.workdir)} holds a train state of another '
          f'layout than this config builds ({difference}); a config field that shapes the model '
          'or optimizer changed: rerun with the config in its config.json, or use a new '
          '--workdir')

  def _step_dir(self, step: int) -> epath.Path:
    return epath.Path(checkpoint_dir(self.workdir)) / str(step)

  def _set_aside(self, step: int, problem: str) -> None:
    aside = epath.Path(self.workdir) / 'checkpoints_corrupt'
    log.warning('checkpoint at step %d is unreadable (%s); moving it to %s and using the '
                'previous one', step, problem, aside)
    if self.primary:
      aside.mkdir(parents=True, exist_ok=True)
      target = aside / str(step)
      if target.exists():
        target.rmtree()
      (epath.Path(checkpoint_dir(self.workdir)) / str(step)).rename(target)
    _sync(f'ropex_set_aside_{step}')
    self.manager.reload()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def wait(self) -> None:
    self._seal()

  def close(self) -> None:
    """Waits for the pending save and its checksums; after a failed save only lets go."""
    if not self.failed:
      self.wait()
      self.manager.close()
      return
    with contextlib.suppress(CheckpointSaveError):  # orbax raises the reported failure again
      self._saving(self.manager.close)


def _raise(error: BaseException):
  raise error


def _reason(error: BaseException) -> str:
  """A failed save's cause in a few words (``no space left on device``), from the error or the
  errors it wraps (tensorstore reports the OS error as ``os_error_code='28'``)."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.errno:
      return os.strerror(seen.errno).lower()
    code = re.search(r"os_error_code='(\d+)'", str(seen))
    if code:
      return os.strerror(int(code[1])).lower()
    seen = seen.__cause__ or seen.__context__
  return f'{type(error).__name__}: {str(error).splitlines()[0][:160]}' if str(error) else \
      type(error).__name__


# orbax's modules that log a failed background save (with tracebacks from several threads).
_SAVE_THREAD_MODULES = ('/orbax/checkpoint/_src/checkpointers/async_checkpointer.py',
                        '/orbax/checkpoint/_src/futures/future.py',
                        '/orbax/checkpoint/checkpoint_manager.py')


class _DropSaveThreadErrors(logging.Filter):
  """Drops ERROR records of orbax's save threads; installed only while a save is in flight."""

  def filter(self, record: logging.LogRecord) -> bool:
    path = (record.pathname or '').replace(os.sep, '/')
    return not (record.levelno >= logging.ERROR and path.endswith(_SAVE_THREAD_MODULES))


class _SaveLogScope:
  """While open, orbax's save-thread ERROR records (the failed save's tracebacks, which reach
  the loop as one :class:`CheckpointSaveError` line) are dropped from the ``absl`` logger; any
  other record, and every record outside the scope, is logged as usual. Opened when a save
  starts, closed when it is complete (a failed save keeps it open: the run stops)."""

  def __init__(self):
    self._filter = _DropSaveThreadErrors()
    self.open = False

  def enter(self) -> None:
    if not self.open:
      logging.getLogger('absl').addFilter(self._filter)
      self.open = True

  def exit(self) -> None:
    if self.open:
      logging.getLogger('absl').removeFilter(self._filter)
      self.open = False


def _first_problem(problem: str | None) -> str | None:
  """Combines every process's verdict on its share of the files (one collective)."""
  if jax.process_count() == 1:
    return problem
  bad = multihost_utils.process_allgather(np.int32(problem is not None))
  if problem is None and np.max(bad):
    return 'another process found a file that does not match its checksum'
  return problem


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
