"""Checkpoints: orbax ``CheckpointManager`` under ``WORKDIR/checkpoints/<step>/``.

Each step directory holds two items: ``state`` (the :class:`ropex.training.step.TrainState`: step,
float32 params in the scanned layout, optimizer state) and ``data`` (the data iterator's JSON
state and the step). Orbax writes into a temporary directory and renames it when complete, so a
run killed mid-save leaves no half-written step behind; a finished step that is nevertheless
unreadable (truncated or corrupted files) is moved to ``WORKDIR/checkpoints_corrupt/`` with a
warning and the previous step is used.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp


log = logging.getLogger('ropex')


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def has_checkpoints(workdir: str) -> bool:
  """Whether ``workdir`` holds any finished checkpoint step."""
  path = checkpoint_dir(workdir)
  return os.path.isdir(path) and bool(ocp.utils.checkpoint_steps(path))


class Checkpointer:
  """Saves every ``checkpoint.every_steps`` steps (and on demand), keeps ``checkpoint.keep``."""

  def __init__(self, workdir: str, ckpt_cfg):
    self.workdir = os.path.abspath(workdir)
    self.every_steps = int(ckpt_cfg.every_steps)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(ckpt_cfg.keep),
        enable_async_checkpointing=bool(ckpt_cfg.async_save), cleanup_tmp_directories=True,
        create=True)
    self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                         item_names=('state', 'data'))

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    """Saves if ``step`` is due (or ``force``); returns whether a save started."""
    if not (force or self.due(step)) or step in self.manager.all_steps():
      return False
    return self.manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave({'step': int(step), 'iterator': data_state})))

  def due(self, step: int) -> bool:
    return step % self.every_steps == 0

  def restore_latest(self, abstract_state) -> tuple[Any, dict, int] | None:
    """(state, data-iterator state, step) of the newest readable checkpoint, or None."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        data = restored['data']
        if int(data['step']) != step or int(restored['state'].step) != step:
          raise ValueError(f'step mismatch ({data["step"]}, {int(restored["state"].step)})')
        return restored['state'], data['iterator'], step
      except Exception as e:  # pylint: disable=broad-except  (any unreadable checkpoint)
        self._set_aside(step, e)
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    aside = os.path.join(self.workdir, 'checkpoints_corrupt')
    log.warning('checkpoint at step %d is unreadable (%s: %s); moving it to %s and trying '
                'the previous one', step, type(error).__name__, str(error)[:200], aside)
    if jax.process_index() == 0:
      os.makedirs(aside, exist_ok=True)
      target = os.path.join(aside, str(step))
      shutil.rmtree(target, ignore_errors=True)
      shutil.move(os.path.join(checkpoint_dir(self.workdir), str(step)), target)
    _sync(f'ropex_set_aside_{step}')
    self.manager.reload()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
