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


def _checked_step(workdir: str, step: int | None, names=('--workdir', '--step')):
  """``(workdir, config, step, step_dir)`` of the saved step :func:`integrity.choose` picks
  (the newest verified one, or ``step``); a missing or unreadable step: ConfigError naming the
  flag or field (``names``: the workdir's and the step's) and what is available."""
  what, step_flag = names
  workdir = resolve(workdir)
  config = load_config(workdir)
  steps = saved_steps(workdir)
  if not steps:
    raise ConfigError(f'{what} {workdir} has no checkpoints (none in '
                      f'{checkpoint_dir(workdir)}); give the workdir of a run that saved one')
  if step is not None and int(step) not in steps:
    raise ConfigError(f'{step_flag} {step} has no checkpoint in {checkpoint_dir(workdir)}; '
                      f'allowed: {", ".join(map(str, steps))}')
  verdict = lambda s: integrity.retry(
      lambda: integrity.verify(epath.Path(checkpoint_dir(workdir)) / str(s)),
      f'verifying checkpoint {s}')
  choice = integrity.choose(steps, verdict, step, where=checkpoint_dir(workdir))
  if choice.step is None:
    raise ConfigError(f'no checkpoint in {checkpoint_dir(workdir)} is readable (' + '; '.join(
        f'step {s}: {p}' for s, p in choice.passed_over.items()) + f'); give another {what}')
  return workdir, config, choice.step, epath.Path(checkpoint_dir(workdir)) / str(choice.step)


def _restore_params(step_dir, cfg: ModelConfig, shardings, step_flag: str = '--step'):
  """The step's parameters, each restored directly with its sharding (a tree like the params);
  a file orbax / tensorstore cannot read (an unverified step's damage) is a ConfigError."""
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.unbox(model_lib.abstract_params(cfg)), shardings)
  item = {'params': abstract}
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), item)
  with integrity.reading_checkpoint(step_dir, f'another {step_flag} or restore its files'):
    with ocp.PyTreeCheckpointer() as ckptr:
      args = ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
      restored = integrity.retry(lambda: ckptr.restore(step_dir / 'state', args=args),
                                 f'reading {step_dir}')
  return restored['params']


def load_for_inference(workdir: str, step: int | None = None, names=('--workdir', '--step')):
  """``(config, params, step)`` from a training workdir: the ConfigDict the run used, float32
  params as an unboxed dict in the model's (scanned) layout on the default device, and the step
  (default: the latest). The step's checksums are verified first (a mismatch: ConfigError); the
  optimizer state is not read."""
  _, config, step, step_dir = _checked_step(workdir, step, names)
  cfg = ModelConfig.from_config(config.model)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  shardings = jax.tree.map(lambda _: device, nn.unbox(model_lib.abstract_params(cfg)))
  return config, _restore_params(step_dir, cfg, shardings, names[1]), step


def load_sharded(workdir: str, step: int | None = None, devices=None):
  """``(config, params, step, placement)`` like :func:`load_for_inference`, but every
  parameter is restored directly into its shards on the run's mesh (the config's ``mesh``
  block and axis rules over ``devices``, default all): no device ever holds the whole model."""
  from ropex.training.placement import Placement  # pylint: disable=g-import-not-at-top
  _, config, step, step_dir = _checked_step(workdir, step)
  placement = Placement.from_config(config, devices)
  cfg = ModelConfig.from_config(config.model)
  return config, _restore_params(step_dir, cfg, placement.param_shardings(cfg)), step, placement
