"""Loading a trained model for evaluation and analysis: config and parameters, no optimizer."""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from ropex import model as model_lib
from ropex.model.config import ModelConfig
from ropex.training.checkpoint import checkpoint_dir
from ropex.training.workdir import load_config


def load_for_inference(workdir: str, step: int | None = None):
  """``(config, params, step)`` from a training workdir: the ConfigDict the run used, float32
  params as an unboxed dict in the model's (scanned) layout on the default device, and the step
  (default: the latest). The optimizer state is not read."""
  config = load_config(workdir)
  steps = ocp.utils.checkpoint_steps(checkpoint_dir(workdir))
  if not steps:
    raise FileNotFoundError(f'no checkpoints in {checkpoint_dir(workdir)}')
  step = max(steps) if step is None else int(step)
  if step not in steps:
    raise FileNotFoundError(f'no checkpoint for step {step} in {checkpoint_dir(workdir)}; '
                            f'available: {sorted(steps)}')
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      nn.unbox(model_lib.abstract_params(ModelConfig.from_config(config.model))))
  item = {'params': abstract}
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=device), item)
  path = os.path.join(checkpoint_dir(workdir), str(step), 'state')
  with ocp.PyTreeCheckpointer() as ckptr:
    restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  return config, restored['params'], step


def load_sharded(workdir: str, step: int | None = None, devices=None):
  """``(config, params, step, placement)`` like :func:`load_for_inference`, but every
  parameter is restored directly into its shards on the run's mesh (the config's ``mesh``
  block and axis rules over ``devices``, default all): no device ever holds the whole model."""
  from ropex.training.placement import Placement  # pylint: disable=g-import-not-at-top
  config = load_config(workdir)
  steps = ocp.utils.checkpoint_steps(checkpoint_dir(workdir))
  step = (max(steps) if steps and step is None else step)
  if step is None or int(step) not in steps:
    raise FileNotFoundError(f'no checkpoint for step {step} in {checkpoint_dir(workdir)}; '
                            f'available: {sorted(steps)}')
  placement = Placement.from_config(config, devices)
  cfg = ModelConfig.from_config(config.model)
  shardings = placement.param_shardings(cfg)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          nn.unbox(model_lib.abstract_params(cfg)), shardings)
  item = {'params': abstract}
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), item)
  path = os.path.join(checkpoint_dir(workdir), str(int(step)), 'state')
  with ocp.PyTreeCheckpointer() as ckptr:
    restored = ckptr.restore(path, args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  return config, restored['params'], int(step), placement
