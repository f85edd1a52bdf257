"""Validates a whole experiment config before anything is compiled or written.

``validate(config, num_devices)`` checks every block: ``model`` (via
:meth:`ModelConfig.from_config`), ``data`` (via :func:`ropex.data.validate`), and ``train``,
``mesh``, ``checkpoint``, ``eval`` here. A bad value raises :class:`ConfigError` with one
sentence naming the field and what is allowed.
"""

from __future__ import annotations

import math

from ropex import data as data_lib
from ropex.training import optim, sharding
from ropex.model import attention
from ropex.model.config import ModelConfig
from ropex.errors import ConfigError
from ropex.fields import boolean as _bool, check, choice as _choice, integer as _int, number as _number

BLOCKS = ('model', 'data', 'train', 'mesh', 'checkpoint', 'eval')


_MAX_STEP = 2**31 - 1     # the int32 step counter of the train state
_MAX_TOKENS = 1 << 20     # rows and row lengths beyond this cannot be allocated sanely
TRAIN_FIELDS = {
    'steps': _int(1, _MAX_STEP), 'batch_size': _int(1, _MAX_TOKENS),
    'seq_len': _int(2, _MAX_TOKENS), 'seed': _int(0, 2**32 - 1),
    'learning_rate': _number(0, low_open=True), 'schedule': _choice(*optim.SCHEDULES),
    'warmup_steps': _int(0, _MAX_STEP), 'end_learning_rate_fraction': _number(0, 1),
    'b1': _number(0, 1, high_open=True), 'b2': _number(0, 1, high_open=True),
    'eps': _number(0, low_open=True), 'weight_decay': _number(0),
    'decay_norms_and_embeddings': _bool, 'grad_clip_norm': _number(0),
    'grad_accum_steps': _int(1), 'loss_chunk': _int(0), 'z_loss': _number(0),
    'log_every_steps': _int(1), 'init_from': lambda v: (isinstance(v, str), 'a string: '
                                                        'WORKDIR[:STEP], a Gemma folder or empty'),
}
MESH_FIELDS = {'data': None, 'fsdp': None, 'tensor': None, 'axis_rules': None}
CHECKPOINT_FIELDS = {'every_steps': _int(1), 'keep': _int(1), 'async_save': _bool}
EVAL_FIELDS = {'every_steps': _int(0), 'steps': _int(0), 'batch_size': _int(0)}


def _check_block(config, block: str, fields: dict) -> None:
  values = config.get(block)
  if values is None:
    raise ConfigError(f'config block {block!r} is missing; required blocks: {", ".join(BLOCKS)}')
  unknown = sorted(set(values.keys()) - set(fields))
  if unknown:
    raise ConfigError(f'{block}.{unknown[0]} is not a {block} field; allowed: '
                      f'{", ".join(fields)}')
  for key, rule in fields.items():
    if key not in values:
      raise ConfigError(f'{block}.{key} is missing; required {block} fields: '
                        f'{", ".join(fields)}')
    if rule is not None:
      check(values[key], f'{block}.{key}', rule)


def _check_axis_rules(rules) -> None:
  for rule in rules:
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
      raise ConfigError(f'mesh.axis_rules entry {rule!r} is not allowed; each rule must be a '
                        f'(logical_axis_name, mesh_axes) pair')
    axes = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
    bad = [a for a in axes if a is not None and a not in sharding.MESH_AXES]
    if bad or (None in axes and len(axes) > 1):
      raise ConfigError(f'mesh.axis_rules maps {rule[0]!r} to {rule[1]!r}; allowed: None, '
                        f'one of {", ".join(sharding.MESH_AXES)}, or a tuple of them')


def _divides(what: str, value: int, by: int, reason: str) -> None:
  if value % by:
    raise ConfigError(f'{what}={value} must be a multiple of {by} ({reason})')


def validate(config, num_devices: int | None = None, process_count: int = 1) -> ModelConfig:
  """Checks every block; with ``num_devices``, also the mesh against the devices. Returns the
  validated model config."""
  for block in BLOCKS:
    if config.get(block) is None:
      raise ConfigError(f'config block {block!r} is missing; required blocks: '
                        f'{", ".join(BLOCKS)}')
  model_cfg = ModelConfig.from_config(config.model)
  attention.check_platform(model_cfg.attention_impl)  # e.g. cudnn on a host without a GPU
  data_lib.validate(config)
  _check_block(config, 'train', TRAIN_FIELDS)
  _check_block(config, 'mesh', MESH_FIELDS)
  _check_block(config, 'checkpoint', CHECKPOINT_FIELDS)
  _check_block(config, 'eval', EVAL_FIELDS)
  _check_axis_rules(config.mesh.axis_rules)
  train = config.train
  _divides('train.batch_size', train.batch_size, train.grad_accum_steps,
           'train.grad_accum_steps microbatches')
  if train.loss_chunk:
    _divides('train.seq_len', train.seq_len, train.loss_chunk, 'train.loss_chunk')
  if num_devices is not None:
    _validate_mesh(config, num_devices, process_count)
  return model_cfg


def _validate_mesh(config, num_devices: int, process_count: int) -> None:
  shape = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh, num_devices)))
  rules = dict(sharding.axis_rules(config))
  axes = rules.get('batch')
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  ways = math.prod(shape[a] for a in axes)
  train = config.train
  reason = f'the batch is split over mesh axes {axes} = {ways} devices'
  _divides('train.batch_size', train.batch_size, ways * train.grad_accum_steps,
           f'{reason}, times train.grad_accum_steps')
  _divides('train.batch_size', train.batch_size, process_count, 'one share per process')
  eval_rows = config.eval.batch_size or train.batch_size
  _divides('eval.batch_size', eval_rows, math.lcm(ways, process_count), reason)
