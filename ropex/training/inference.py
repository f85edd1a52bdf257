"""Loading a trained model for evaluation and analysis: config and parameters, no optimizer."""

from __future__ import annotations

import logging

from etils import epath
import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from ropex import model as model_lib
from ropex.errors import ConfigError
from ropex.model.config import ModelConfig
from ropex.training import integrity
from ropex.training.checkpoint import checkpoint_dir, resolve, saved_steps
from ropex.training.workdir import load_config

log = logging.getLogger('ropex')


def _checked_step(workdir: str, step: int | None):
  """``(workdir, config, step, step_dir)`` of a saved step whose checksums verify (a missing or
  unreadable step: ConfigError naming the flag and what is available)."""
  workdir = resolve(workdir)
  config = load_config(workdir)
  steps = saved_steps(workdir)
  if not steps:
    raise ConfigError(f'--workdir {workdir} has no checkpoints (none in '
                      f'{checkpoint_dir(workdir)}); give the workdir of a run that saved one')
  step = max(steps) if step is None else int(step)
  if step not in steps:
    raise ConfigError(f'--step {step} has no checkpoint in {checkpoint_dir(workdir)}; '
                      f'allowed: {", ".join(map(str, steps))}')
  step_dir = epath.Path(checkpoint_dir(workdir)) / str(step)
  try:
    problem = integrity.retry(lambda: integrity.verify(step_dir), f'verifying checkpoint {step}')
  except integrity.Unverified:
    log.warning('checkpoint %s has no checksums (its run stopped before they were written); '
                'loading it unverified', step_dir)
    problem = None
  if problem:
    raise ConfigError(f'checkpoint {step_dir} is unreadable: {problem}; give another --step '
                      f'(available: {", ".join(map(str, steps))})')
  return workdir, config, step, step_dir


def _restore_params(step_dir, cfg: ModelConfig, shardings):
  """The step's parameters, each restored directly with its sharding (a tree like the params)."""
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.unbox(model_lib.abstract_params(cfg)), shardings)
  item = {'params': abstract}
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), item)
  with ocp.PyTreeCheckpointer() as ckptr:
    restored = integrity.retry(lambda: ckptr.restore(step_dir / 'state', args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True)), f'reading {step_dir}')
  return restored['params']


def load_for_inference(workdir: str, step: int | None = None):
  """``(config, params, step)`` from a training workdir: the ConfigDict the run used, float32
  params as an unboxed dict in the model's (scanned) layout on the default device, and the step
  (default: the latest). The step's checksums are verified first (a mismatch: ConfigError); the
  optimizer state is not read."""
  _, config, step, step_dir = _checked_step(workdir, step)
  cfg = ModelConfig.from_config(config.model)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  shardings = jax.tree.map(lambda _: device, nn.unbox(model_lib.abstract_params(cfg)))
  return config, _restore_params(step_dir, cfg, shardings), step


def load_sharded(workdir: str, step: int | None = None, devices=None):
  """``(config, params, step, placement)`` like :func:`load_for_inference`, but every
  parameter is restored directly into its shards on the run's mesh (the config's ``mesh``
  block and axis rules over ``devices``, default all): no device ever holds the whole model."""
  from ropex.training.placement import Placement  # pylint: disable=g-import-not-at-top
  _, config, step, step_dir = _checked_step(workdir, step)
  placement = Placement.from_config(config, devices)
  cfg = ModelConfig.from_config(config.model)
  return config, _restore_params(step_dir, cfg, placement.param_shardings(cfg)), step, placement
